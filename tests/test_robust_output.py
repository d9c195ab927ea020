"""Robustness of what askdraw leaves on disk and prints: damaged traces, a disk that fills up
mid-write, runs killed before they finished, and terminal escapes hidden in data.

Each test drives the real ``askdraw`` entry point in a subprocess (scripted models where a model
is needed, installed by :func:`install` through ``DRIVER``), as the user meets it: the exit
status, what is on stdout and stderr (read as bytes: raw control characters must not reach the
terminal), and what stays in the run folder. No traceback, ever.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import builtins

from PIL import Image

try:
    from tests.fakes import ScriptedLLM
    from tests.test_robust_runtime import MONA_LISA, install_fakes
except ImportError:  # tests/ is on sys.path itself (pytest rootdir-less import mode)
    from fakes import ScriptedLLM
    from test_robust_runtime import MONA_LISA, install_fakes

REPO = Path(__file__).resolve().parents[1]
UNFINISHED = "run did not finish: no result was saved (killed, crashed or still running)"
# What must never reach a terminal raw: C0 controls but newline and tab (ESC, BEL, CR...), DEL,
# C1 (0x9b is a one-byte CSI), and the bidi embedding/override/isolate characters.
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
EVIL = "\x1b]0;pwned\x07\x1b[2J\x1b[31mred\x1b]8;;http://evil.example/\x1b\\link\x1b]8;;\x1b\\\u202etxt.exe\u2069\x9b1m\r\x08\x7f"
FRIENDLY = "café 東京 🎨 مرحبا"  # accents, CJK, emoji and right-to-left letters stay as they are


# -- the askdraw entry point with fakes, in a subprocess -------------------------------------------
class SlowLLM(ScriptedLLM):
    """Decides at once, then takes minutes to answer: a run to kill mid-way."""

    def chat(self, *args: Any, **kwargs: Any) -> str:
        time.sleep(300)
        return "too late"


def simulate_disk_filling(root: Path, free_bytes: int) -> None:
    """Files under ``root`` can be created, but only ``free_bytes`` more bytes fit in all: the
    write that goes past it writes what fits and fails with ENOSPC, as on a disk that fills up.
    (tests/test_robust_runtime.py's full disk refuses to open a file at all, which leaves nothing
    behind; this one leaves what a real full disk leaves.)"""
    root_s = str(Path(root).resolve())
    left = {"bytes": free_bytes}
    real_open = builtins.open

    class Filling:
        def __init__(self, fh: Any) -> None:
            self._fh = fh

        def write(self, data: Any) -> int:
            size = len(data.encode("utf-8") if isinstance(data, str) else data)
            if size <= left["bytes"]:
                left["bytes"] -= size
                return self._fh.write(data)
            if left["bytes"]:
                self._fh.write(data[: left["bytes"]])
                left["bytes"] = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name: str) -> Any:
            return getattr(self._fh, name)

        def __enter__(self) -> "Filling":
            return self

        def __exit__(self, *exc: Any) -> None:
            self._fh.close()

    def filling_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        fh = real_open(file, mode, *args, **kwargs)
        under = isinstance(file, (str, os.PathLike)) and str(Path(os.fspath(file)).resolve()).startswith(root_s)
        return Filling(fh) if under and any(c in mode for c in "wax+") else fh

    builtins.open = io.open = filling_open


def install(cfg: dict[str, Any]) -> None:
    """The fakes of tests/test_robust_runtime.py (``llm``, ``wiki``), plus ``slow_llm`` and
    ``disk_free``: {"root": folder, "bytes": n} (see :func:`simulate_disk_filling`)."""
    install_fakes(cfg)
    if cfg.get("slow_llm"):
        import tools.llm

        tools.llm.local_llm = lambda *a, **k: SlowLLM(labels=["answer"])
    if cfg.get("disk_free"):
        simulate_disk_filling(Path(cfg["disk_free"]["root"]), cfg["disk_free"]["bytes"])


DRIVER = """
import json, os, sys
sys.path.insert(0, {repo!r})
from tests.test_robust_output import install
install(json.loads(os.environ["ROBUST_OUTPUT"]))
from agent.cli import main
sys.argv = ["askdraw", *sys.argv[1:]]
main()
"""


def _env(cwd: Path, cfg: dict[str, Any]) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env["HF_HUB_OFFLINE"] = "1"
    env["ROBUST_OUTPUT"] = json.dumps(cfg)
    for key in [k for k in env if k.startswith("ASKDRAW_")] + ["FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"]:
        env.pop(key, None)
    env["ASKDRAW_HOME"] = str(cwd / "home")  # conversations of this test only; no weights are loaded
    return env


class Run:
    """A finished askdraw process: exit status, stdout and stderr decoded from the raw bytes."""

    def __init__(self, proc: subprocess.CompletedProcess) -> None:
        self.returncode = proc.returncode
        self.stdout = proc.stdout.decode("utf-8")
        self.stderr = proc.stderr.decode("utf-8")

    def lines(self, stream: str = "stderr") -> list[str]:
        return [ln for ln in getattr(self, stream).splitlines() if ln.strip()]


def askdraw(cwd: Path, *args: str, cfg: dict[str, Any] | None = None, stdin: str | None = None) -> Run:
    """``askdraw ARGS`` in ``cwd``: with the fakes of ``cfg`` installed, or (no ``cfg``) as it is."""
    command = ["-c", DRIVER.format(repo=str(REPO))] if cfg is not None else ["-m", "agent.cli"]
    proc = subprocess.run([sys.executable, *command, *args], cwd=cwd,
                          env=_env(cwd, cfg or {}), capture_output=True, timeout=120,
                          input=stdin.encode() if stdin is not None else None,
                          stdin=None if stdin is not None else subprocess.DEVNULL)
    run = Run(proc)
    assert "Traceback" not in run.stdout + run.stderr, run.stderr[-3000:]
    return run


def event(run_id: str, step: str, **fields: Any) -> str:
    return json.dumps({"run_id": run_id, "step": step, "at": "2026-01-01T10:00:00.000+00:00", "ms": 1500.0, **fields},
                      ensure_ascii=False)


# == 4. a damaged trace ===========================================================================
def test_corrupt_trace_shows_the_valid_events_and_marks_each_bad_line(tmp_path):
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "trace.jsonl").write_bytes(b"\n".join([
        event("r1", "decide", tool="router", decision="search", reason="a fact").encode(),
        b"\xff\xfe\x00 not text at all",                                    # line 2: not UTF-8
        json.dumps({"step": "answer", "ms": "fast"}).encode(),               # line 3: JSON, wrong shape
        event("r1", "search_wikipedia", output="Mona Lisa").encode(),
        event("r1", "answer", output="Leonardo")[:25].encode(),              # line 5: cut off by a crash
    ]))
    (run / "result.json").write_text(json.dumps({"run_id": "r1"}))

    shown = askdraw(tmp_path, "trace", "--out", "runs")  # the latest run
    assert shown.returncode == 0, shown.stderr
    assert shown.lines("stdout")[0].startswith("run r1") and "2 steps" in shown.stdout
    assert "3 bad lines skipped" in shown.lines("stdout")[0]
    assert "decision: search - a fact" in shown.stdout and "out: Mona Lisa" in shown.stdout
    assert "line 2: unreadable (cut off or corrupt), skipped" in shown.stdout
    assert "line 3: not a trace event (wrong fields), skipped" in shown.stdout
    assert "line 5: unreadable (cut off or corrupt), skipped" in shown.stdout
    assert UNFINISHED not in shown.stdout  # it has a result: it finished

    as_json = askdraw(tmp_path, "trace", "r1", "--out", "runs", "--json")
    assert as_json.returncode == 0, as_json.stderr
    events = [json.loads(line) for line in as_json.lines("stdout")]  # valid JSON lines, nothing else
    assert [e["step"] for e in events] == ["decide", "search_wikipedia"]
    notes = as_json.lines("stderr")
    assert len(notes) == 3 and all(n.startswith("askdraw: note: ") and "skipped" in n for n in notes), notes

    (tmp_path / "empty").mkdir()
    for args, message in ((["--out", "empty"], "askdraw: error: no runs in empty/"),
                          (["nope", "--out", "runs"], "askdraw: error: no trace for run 'nope'")):
        failed = askdraw(tmp_path, "trace", *args)
        assert failed.returncode == 1 and len(failed.lines()) == 1 and failed.stderr.startswith(message), failed.stderr


# == 5a. a disk that fills up mid-write ===========================================================
def test_full_disk_mid_write_leaves_no_empty_or_partial_result_or_image(tmp_path):
    for free in (0, 1200):  # nothing fits; a few trace lines fit, then a line is cut
        out = tmp_path / f"runs{free}"
        out.mkdir()
        cfg = {"llm": {"replies": ["A red bicycle."] * 3, "labels": ["draw"]},
               "disk_free": {"root": str(out), "bytes": free}}
        asked = askdraw(tmp_path, "ask", "Draw a red bicycle", "--route", "draw", "--out", out.name, cfg=cfg)
        assert asked.returncode == 0, asked.stderr
        assert [n for n in asked.lines() if n.startswith("askdraw: note: the run could not be saved")
                and "No space left on device" in n], asked.stderr
        (run,) = [d for d in out.iterdir() if d.is_dir()]
        files = sorted(p.name for p in run.iterdir())
        assert not [n for n in files if n.endswith(".part")], files  # no temporary file left behind
        if (run / "result.json").exists():  # whole or absent: never 0 bytes or cut off
            assert json.loads((run / "result.json").read_text())["answer"], files
        if (run / "image.png").exists():
            with Image.open(run / "image.png") as image:
                image.load()  # a cut-off PNG raises here

        if free:  # what the disk kept of the trace is still readable (a cut last line is marked)
            shown = askdraw(tmp_path, "trace", run.name, "--out", out.name)
            assert shown.returncode == 0 and shown.lines("stdout")[0].startswith("run "), shown.stderr


# == 5b. a run killed before it finished ==========================================================
def test_run_killed_mid_way_is_shown_as_not_finished(tmp_path):
    # A request the (slow, scripted) LLM and the route classifier both send to the answer step, which
    # is still writing when the run is killed.
    proc = subprocess.Popen([sys.executable, "-c", DRIVER.format(repo=str(REPO)), "ask", "Write a short poem about rain.",
                             "--out", "runs", "--no-image"], cwd=tmp_path, env=_env(tmp_path, {"slow_llm": True}),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not [t for t in (tmp_path / "runs").glob("*/trace.jsonl") if t.stat().st_size]:
            assert proc.poll() is None and time.monotonic() < deadline, "the run never wrote its first step"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    (run,) = (tmp_path / "runs").iterdir()
    assert not (run / "result.json").exists()

    for args in (["trace", "--out", "runs"], ["trace", run.name, "--out", "runs"]):
        shown = askdraw(tmp_path, *args)
        assert shown.returncode == 0, shown.stderr
        assert shown.lines("stdout")[1] == UNFINISHED, shown.stdout  # right under the header
        assert "decide" in shown.stdout  # what it did before it was killed
    as_json = askdraw(tmp_path, "trace", run.name, "--out", "runs", "--json")
    assert [json.loads(line)["step"] for line in as_json.lines("stdout")] == ["decide"]
    assert as_json.lines() == [f"askdraw: note: {UNFINISHED} (runs/{run.name})"]

    # The chat's /trace says so too.
    from types import SimpleNamespace

    from rich.console import Console

    from agent.ui.chat import ChatSession

    screen = io.StringIO()
    chat = ChatSession(SimpleNamespace(new_thread_id=lambda: "t1"), console=Console(file=screen, width=120),
                       preload=False, echo=False)
    chat.last = SimpleNamespace(trace_path=str(run / "trace.jsonl"), run_id=run.name)
    chat.show_trace()
    assert UNFINISHED in screen.getvalue()


# == 7. terminal escapes in data ==================================================================
def test_terminal_escapes_in_file_names_traces_and_answers_are_shown_not_obeyed(tmp_path):
    # An audio file whose name sets the window title and clears the screen, and is not audio.
    name = "q\x1b]0;pwned\x07\x1b[2J.wav"
    (tmp_path / name).write_bytes(b"not audio at all")
    asked = askdraw(tmp_path, "ask", "--audio", name, "--out", "runs", cfg={})
    assert asked.returncode == 1
    assert not RAW.search(asked.stdout + asked.stderr), ascii(asked.stderr)
    (error,) = [ln for ln in asked.lines() if ln.startswith("askdraw: error:")]
    assert "cannot decode audio file q\\x1b]0;pwned\\x07\\x1b[2J.wav" in error, error

    # A trace whose fields carry escapes, OSC-8 links and bidi overrides.
    run = tmp_path / "runs" / "evil"
    run.mkdir()
    (run / "trace.jsonl").write_text("\n".join([
        event("evil", f"decide{EVIL}", tool=EVIL, model=EVIL, decision=EVIL, reason=EVIL),
        event("evil", "answer", input=EVIL, output=f"{FRIENDLY} {EVIL}", error=EVIL),
    ]) + "\n", encoding="utf-8")
    (run / "result.json").write_text("{}")
    shown = askdraw(tmp_path, "trace", "evil", "--out", "runs")
    assert shown.returncode == 0 and "2 steps" in shown.stdout, shown.stderr
    assert not RAW.search(shown.stdout + shown.stderr), ascii(shown.stdout)
    assert "\\x1b]0;pwned\\x07" in shown.stdout and "\\u202etxt.exe\\u2069" in shown.stdout
    assert FRIENDLY in shown.stdout
    as_json = askdraw(tmp_path, "trace", "evil", "--out", "runs", "--json")
    assert not RAW.search(as_json.stdout), ascii(as_json.stdout)
    assert [json.loads(line)["input"] for line in as_json.lines("stdout")] == [None, EVIL]  # same values

    # A chat turn whose answer, sources and streamed tokens carry them.
    # (the search route's answer and quote are read from the passage, so the passage carries them)
    evil_text = f"The Mona Lisa is a portrait painted by Leonardo {EVIL} da Vinci, signed {FRIENDLY} on the back."
    cfg = {"llm": {"replies": [f"Leonardo {EVIL} painted it. {FRIENDLY}"] * 4, "labels": ["search"]},
           "wiki": [{**MONA_LISA, "title": f"Mona {EVIL} Lisa", "url": f"https://x.example/{EVIL}", "text": evil_text}]}
    chatted = askdraw(tmp_path, "chat", "--route", "search", "--no-image", "--out", "runs", cfg=cfg,
                      stdin="Who painted the Mona Lisa?\n/trace\nexit\n")
    assert chatted.returncode == 0, chatted.stderr
    assert "Leonardo \\x1b]0;pwned\\x07" in chatted.stdout and "Mona \\x1b]0;pwned" in chatted.stdout
    # (the panel may wrap the quote between FRIENDLY's words: each word is checked)
    assert all(w in chatted.stdout for w in FRIENDLY.split()) and chatted.stdout.rstrip().endswith("bye")
    assert not RAW.search(chatted.stdout + chatted.stderr), ascii(chatted.stdout)

    # The one function behind all of it.
    from agent.ui.terminal import printable

    assert printable(f"a\tb\n{FRIENDLY}") == f"a\tb\n{FRIENDLY}"
    assert printable("\x1b]0;x\x07\u202e\x9b\udcff") == "\\x1b]0;x\\x07\\u202e\\x9b\\udcff"
    assert printable("two\nlines", oneline=True) == "two\\nlines"


def test_an_audio_file_name_that_is_not_utf8_is_answered_and_traced(tmp_path):
    """A name with bytes that are not UTF-8 (a file from an old archive or another locale) cannot
    be written to a UTF-8 trace, result or checkpoint: the run reads it through a link of its own
    and says so. (It failed with 'surrogates not allowed' and no answer.)"""
    name = b"\xffquestion.wav"
    (tmp_path / os.fsdecode(name)).write_bytes((REPO / "examples" / "who_painted_the_mona_lisa.wav").read_bytes())
    cfg = {"llm": {"replies": ["Leonardo da Vinci painted it."], "labels": ["search"]}, "wiki": [MONA_LISA]}
    run = askdraw(tmp_path, "ask", "--audio", os.fsdecode(name), "--no-image", "--out", "runs", cfg=cfg)
    assert run.returncode == 0, run.stderr
    assert "Leonardo da Vinci" in run.stdout
    assert "askdraw: note: the audio file's name is not valid UTF-8; it is read as input.wav in the run folder" \
        in run.stderr
    (folder,) = (tmp_path / "runs").iterdir()
    transcribe = next(json.loads(line) for line in (folder / "trace.jsonl").read_text("utf-8").splitlines()
                      if json.loads(line)["step"] == "transcribe")
    assert transcribe["input"].endswith("input.wav") and "mona lisa" in transcribe["output"].lower()
    assert json.loads((folder / "result.json").read_text("utf-8"))["answer"]
