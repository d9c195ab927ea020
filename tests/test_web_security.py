"""``askdraw serve`` serves no file but the session's own images, and leaves no temp files (issue 14).

Two real ``askdraw serve --out .`` subprocesses with the starter models, started together for the
module: each runs in a folder holding a secret ``.env`` and a secret in ``./.gradio/cached_examples``
(a folder Gradio serves by default), with ``TMPDIR`` set to a folder of the test that also holds
another Gradio app's "upload" in the shared ``$TMPDIR/gradio`` folder. Everything is fetched over
HTTP as any client could. The first server is stopped with SIGINT by the last test that uses it, the
second with SIGTERM; both must remove their private temp folder (with an uploaded audio file in it).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WAV = REPO / "examples" / "who_painted_the_mona_lisa.wav"
QUESTION = "Who painted the Mona Lisa?"
SECRET = "askdraw-test-secret-" + secrets.token_hex(8)

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One ``askdraw serve --out .`` in ``base/work`` with ``TMPDIR=base/tmp``."""

    def __init__(self, base: Path) -> None:
        self.work = base / "work"  # the cwd and the --out folder
        self.tmp = base / "tmp"  # TMPDIR
        self.secrets = {
            "out/cwd .env": self.work / ".env",
            "./.gradio/cached_examples": self.work / ".gradio" / "cached_examples" / "secret.txt",
            "another app's upload in $TMPDIR/gradio": self.tmp / "gradio" / "other-app" / "secret.txt",
        }
        for path in self.secrets.values():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"API_KEY={SECRET}\n")
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = base / "serve.log"
        env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "ASKDRAW_MAX_ANSWER_TOKENS": "24",
               "GRADIO_ANALYTICS_ENABLED": "False", "TMPDIR": str(self.tmp)}
        for key in ("ASKDRAW_OUT_DIR", "GRADIO_TEMP_DIR", "GRADIO_EXAMPLES_CACHE"):
            env.pop(key, None)
        with self.log.open("w") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent.cli", "serve", "--port", str(self.port), "--out", "."],
                cwd=self.work, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)

    def wait_ready(self, deadline: float) -> None:
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"askdraw serve exited ({self.proc.returncode}):\n{self.log.read_text()}")
            if self.url in self.log.read_text():  # printed once the server answers
                status, _ = fetch(self.url)
                if status == 200:
                    return
            if time.monotonic() > deadline:
                pytest.fail(f"askdraw serve did not start in time:\n{self.log.read_text()}")
            time.sleep(0.5)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def fetch(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """(status, body) of a request; HTTP errors are answers too."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers or {}),
                                    timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def upload(server: Server, path: Path) -> Path:
    """Upload a file as the page's audio recorder does; the path Gradio stored it at."""
    boundary = secrets.token_hex(12)
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{path.name}"\r\n'
            "Content-Type: audio/wav\r\n\r\n").encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    status, answer = fetch(server.url + "gradio_api/upload", body,
                           {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200, answer
    (stored,) = json.loads(answer)
    return Path(stored)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    started = {"main": Server(tmp_path_factory.mktemp("web_sec_main")),
               "term": Server(tmp_path_factory.mktemp("web_sec_term"))}
    try:
        deadline = time.monotonic() + 240  # both load the starter models at once
        for server in started.values():
            server.wait_ready(deadline)
        yield started
    finally:
        for server in started.values():
            server.kill()


@pytest.fixture(scope="module")
def server(servers):
    return servers["main"]


@pytest.fixture(scope="module")
def two_asks(server):
    """The same question asked twice through ``/ask``: the image file data (not downloaded) of each."""
    from gradio_client import Client

    client = Client(server.url, verbose=False, download_files=False)
    images = []
    for _ in range(2):
        answer, route, _reason, image, _sources = client.predict(QUESTION, None, api_name="/ask")
        assert "Leonardo" in answer and route == "search"
        images.append(image)
    return images


def refused(server: Server, route: str) -> tuple[int, bytes]:
    status, body = fetch(server.url + route)
    assert status in (400, 403, 404), f"{route} answered {status}: {body[:200]!r}"
    assert SECRET.encode() not in body
    return status, body


def file_routes(server: Server, path: Path) -> list[str]:
    """Every way to name ``path`` to Gradio's file routes (the current one, the deprecated one, without
    the /gradio_api prefix, relative to the server's cwd, through ``..``, through the proxy)."""
    import gradio

    static = Path(gradio.__file__).parent / "templates" / "frontend" / "static"
    rel = os.path.relpath(path, server.work)
    dotted = f"{server.tmp}/gradio/../../{path.relative_to(server.tmp.parent)}"
    return [f"gradio_api/file={path}", f"gradio_api/file/{path}", f"file={path}", f"gradio_api/file={rel}",
            f"gradio_api/file={dotted}", f"gradio_api/file={dotted.replace('..', '%2e%2e')}",
            f"gradio_api/file={urllib.parse.quote(str(path), safe='')}",
            f"gradio_api/proxy={server.url}gradio_api/file={path}",
            *(f"{route}/{os.path.relpath(path, static)}" for route in ("static", "assets", "svelte"))]


def test_files_in_the_out_folder_the_cwd_and_the_shared_temp_folder_are_not_served(server):
    for name, path in server.secrets.items():
        for route in file_routes(server, path):
            refused(server, route)


def test_a_runs_trace_and_result_are_not_served_even_when_its_run_id_is_known(server, two_asks):
    runs = sorted(p.parent for p in server.work.glob("*/result.json"))
    assert len(runs) >= 2, "the asks wrote their runs in the --out folder"
    for run in runs:
        assert QUESTION in (run / "result.json").read_text()
        for name in ("trace.jsonl", "result.json", "image.png"):
            path = run / name
            assert path.is_file()
            for route in (f"gradio_api/file={path}", f"gradio_api/file/{path}", f"gradio_api/file={run.name}/{name}"):
                _, body = refused(server, route)
                assert QUESTION.encode() not in body and not body.startswith(b"\x89PNG")


def test_the_image_from_ask_is_served_at_a_url_naming_neither_the_out_folder_nor_the_run(server, two_asks):
    run_ids = [p.parent.name for p in server.work.glob("*/image.png")]
    on_disk = [p.read_bytes() for p in server.work.glob("*/image.png")]
    urls = [image["url"] for image in two_asks]
    assert urls[0] != urls[1], "two asks of the same question get different image URLs"
    for url in urls:
        plain = urllib.parse.unquote(url)
        assert str(server.work) not in plain and "/image.png" not in plain
        assert not any(run_id in plain for run_id in run_ids)
        status, body = fetch(url)
        assert status == 200 and body[:8] == b"\x89PNG\r\n\x1a\n"
        assert body in on_disk, "the served image is the run's image"
        # next to it, through '..', nothing else is served
        folder = plain.split("file=", 1)[1].rsplit("/", 1)[0]
        for path in server.secrets.values():
            refused(server, f"gradio_api/file={folder}/../{os.path.relpath(path, Path(folder).parent)}")


def _stop_and_check_temp_removed(server: Server, signum: int) -> None:
    stored = upload(server, WAV)
    assert stored.is_file() and stored.read_bytes() == WAV.read_bytes()
    assert stored.is_relative_to(server.tmp), "uploads go to the temp folder"
    status, body = fetch(f"{server.url}gradio_api/file={stored}")
    assert status == 200 and body == WAV.read_bytes(), "the uploader can fetch its upload"
    private = server.tmp / stored.relative_to(server.tmp).parts[0]
    assert private.is_dir() and private != server.tmp / "gradio", "a private folder, not the shared one"
    assert private.stat().st_mode & 0o077 == 0, "only this user can read it"
    os.kill(server.proc.pid, signum)
    assert server.proc.wait(60) == 0, server.log.read_text()
    assert not stored.exists() and not private.exists(), f"left behind: {sorted(map(str, private.rglob('*')))}"
    assert (server.tmp / "gradio" / "other-app" / "secret.txt").is_file(), "nothing else was removed"


def test_sigint_stops_the_server_and_removes_its_temp_folder(server):
    _stop_and_check_temp_removed(server, signal.SIGINT)


def test_sigterm_stops_the_server_and_removes_its_temp_folder(servers):
    _stop_and_check_temp_removed(servers["term"], signal.SIGTERM)
