"""The ``askdraw`` command line, run through its real entry point in a subprocess.

Input errors must end the command with a non-zero exit code and one readable line on stderr
(``askdraw: error: ...``), never a traceback. One slow test runs a real question with the
starter models.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
RESULT_FIELDS = {
    "run_id", "question", "transcript", "route", "route_reason", "search_query", "sources", "answer",
    "image_prompt", "image_path", "image_model", "image_generated", "timings_ms", "trace_path", "error",
}


def _command() -> list[str]:
    exe = Path(sys.executable).with_name("askdraw")
    if exe.is_file() and os.access(exe, os.X_OK):
        return [str(exe)]
    return [sys.executable, "-m", "agent.cli"]


def askdraw(*args: str, cwd: Path, timeout: float = 120, env_set: dict[str, str] | None = None,
            env_unset: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """The command in ``cwd``; runs go to ``cwd/runs`` unless ``env_set`` / ``env_unset`` say otherwise."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env["HF_HUB_OFFLINE"] = "1"
    env["ASKDRAW_OUT_DIR"] = str(cwd / "runs")  # never the user's $ASKDRAW_HOME/runs
    for name in ("COLUMNS", "TERMINAL_WIDTH", *env_unset):
        env.pop(name, None)
    env.update(env_set or {})
    return subprocess.run([*_command(), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def assert_one_line_error(proc: subprocess.CompletedProcess, fragment: str, code: int | None = None) -> str:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    if code is not None:
        assert proc.returncode == code
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("askdraw: error:"), proc.stderr
    assert fragment in lines[0], lines[0]
    return lines[0]


def only_run_dir(out: Path) -> Path:
    runs = [d for d in out.iterdir() if d.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


# -- help and input errors (no model is loaded) -------------------------------------------------
def test_help_lists_the_commands(tmp_path):
    proc = askdraw("--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Usage" in proc.stdout and "ask" in proc.stdout and "trace" in proc.stdout

    proc = askdraw("ask", "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for option in ("--audio", "--json", "--trace", "--wiki", "--out", "--image-model"):
        assert option in proc.stdout


@pytest.mark.parametrize(
    "args, fragment",
    [(["ask", ""], "empty question"), (["ask", "   "], "empty question"), (["ask"], "give a question")],
    ids=["empty", "blank", "none"],
)
def test_missing_question_is_a_usage_error(tmp_path, args, fragment):
    proc = askdraw(*args, cwd=tmp_path)
    assert_one_line_error(proc, fragment, code=2)
    assert proc.stdout == ""


@pytest.fixture
def bad_audio(tmp_path):
    def make(kind: str) -> Path:
        path = tmp_path / f"{kind}.wav"
        if kind == "directory":
            path = tmp_path / "a_directory"
            path.mkdir()
        elif kind == "corrupt":
            path.write_bytes(os.urandom(4096))
        elif kind == "silent":
            sf.write(path, np.zeros(2 * 16000, dtype=np.float32), 16000)
        elif kind == "empty":
            path.write_bytes(b"")
        return path

    return make


@pytest.mark.parametrize(
    "kind, fragment",
    [("missing", "not found"), ("directory", "directory"), ("corrupt", "cannot decode"),
     ("silent", "silent"), ("empty", "empty")],
)
def test_unusable_audio_is_one_error_line_and_the_run_is_traced(tmp_path, bad_audio, kind, fragment):
    path = bad_audio(kind)
    out = tmp_path / "runs"
    proc = askdraw("ask", "--audio", str(path), "--out", str(out), cwd=tmp_path)
    assert_one_line_error(proc, fragment, code=1)
    run = only_run_dir(out)
    assert (run / "trace.jsonl").is_file() and (run / "result.json").is_file()
    assert fragment in json.loads((run / "result.json").read_text())["error"]


def test_unusable_audio_with_json_still_prints_the_result(tmp_path):
    proc = askdraw("ask", "--audio", "missing.wav", "--json", "--out", "runs", cwd=tmp_path)
    assert proc.returncode == 1
    result = json.loads(proc.stdout)
    assert RESULT_FIELDS <= set(result)
    assert "not found" in result["error"] and result["answer"] is None
    assert (tmp_path / result["trace_path"]).is_file()
    assert "Traceback" not in proc.stderr


def test_nonexistent_wiki_corpus_is_a_usage_error(tmp_path):
    proc = askdraw("ask", "Who painted the Mona Lisa?", "--wiki", "/nonexistent", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "--wiki" in proc.stderr and "/nonexistent" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_invalid_setting_is_one_error_line(tmp_path):
    proc = askdraw("ask", "Who painted the Mona Lisa?", "--image-size", "100", cwd=tmp_path)
    assert_one_line_error(proc, "image_size", code=2)
    assert not (tmp_path / "runs").exists()


def test_unknown_route_is_one_error_line(tmp_path):
    proc = askdraw("ask", "Who painted the Mona Lisa?", "--route", "paint", cwd=tmp_path)
    assert_one_line_error(proc, "route", code=2)
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_real_forced_route_text_only(tmp_path):
    out = tmp_path / "runs"
    proc = askdraw("ask", "Write a haiku about rain", "--route", "search", "--no-image", "--json", "--out", str(out),
                   cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["route"] == "search" and "forced" in result["route_reason"]
    assert result["image_path"] is None and result["image_prompt"] is None
    assert list(result["timings_ms"]) in (["decide", "search_wikipedia", "answer", "finish"],
                                          ["load", "decide", "search_wikipedia", "answer", "finish"])


def test_trace_of_a_missing_run_is_an_error(tmp_path):
    proc = askdraw("trace", "20990101-000000-abcdef", "--out", str(tmp_path / "runs"), cwd=tmp_path)
    assert_one_line_error(proc, "20990101-000000-abcdef", code=1)

    proc = askdraw("trace", "--out", str(tmp_path / "runs"), cwd=tmp_path)
    assert_one_line_error(proc, "no runs", code=1)


def test_trace_prints_the_timeline_of_a_failed_run(tmp_path):
    out = tmp_path / "runs"
    failed = askdraw("ask", "--audio", "missing.wav", "--json", "--out", str(out), cwd=tmp_path)
    run_id = json.loads(failed.stdout)["run_id"]

    for args in (["trace", run_id, "--out", str(out)], ["trace", "--out", str(out)], ["trace", str(out / run_id)]):
        proc = askdraw(*args, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert f"run {run_id}" in proc.stdout
        assert "transcribe" in proc.stdout and "ERROR: audio file not found" in proc.stdout

    proc = askdraw("trace", run_id, "--out", str(out), "--json", cwd=tmp_path)
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [e["step"] for e in events] == ["transcribe"]
    assert "not found" in events[0]["error"]


@pytest.mark.parametrize("name", ["clip[red].wav", "clip[/x].wav"])
def test_error_messages_show_file_names_verbatim(tmp_path, name):
    proc = askdraw("ask", "--audio", name, "--out", "runs", cwd=tmp_path)
    assert_one_line_error(proc, name, code=1)


# -- one home for runs, terminal habits (issue 17) -----------------------------------------------
def test_runs_live_in_askdraw_home_whatever_the_folder(tmp_path):
    """`cd /tmp && askdraw trace` used to fail with `no runs in runs/`: runs default to
    $ASKDRAW_HOME/runs, so a run made in one folder is found from any other."""
    home, here, there = tmp_path / "home", tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    env = {"ASKDRAW_HOME": str(home)}
    unset = ("ASKDRAW_OUT_DIR", "ASKDRAW_MEMORY_PATH")
    proc = askdraw("ask", "--audio", "missing.wav", "--json", cwd=here, env_set=env, env_unset=unset)
    assert proc.returncode == 1, proc.stderr  # a run that fails without loading a model: still traced
    result = json.loads(proc.stdout)
    assert Path(result["trace_path"]).parent == home / "runs" / result["run_id"]

    for args in (["trace"], ["trace", result["run_id"]]):
        shown = askdraw(*args, cwd=there, env_set=env, env_unset=unset)
        assert shown.returncode == 0, shown.stderr
        assert f"run {result['run_id']}" in shown.stdout and "ERROR: audio file not found" in shown.stdout
    history = askdraw("history", cwd=there, env_set=env, env_unset=unset)
    assert history.returncode == 0 and history.stdout.strip() == "no conversations yet", history.stderr
    assert (home / "conversations.sqlite").is_file()
    assert not (here / "runs").exists() and not (there / "runs").exists()

    elsewhere = askdraw("trace", cwd=there, env_set={**env, "ASKDRAW_OUT_DIR": str(tmp_path / "other")})
    assert_one_line_error(elsewhere, "no runs in", code=1)  # ASKDRAW_OUT_DIR (and --out) still win


def test_relative_out_is_written_as_an_absolute_path(tmp_path):
    proc = askdraw("ask", "--audio", "missing.wav", "--json", "--out", "myruns", cwd=tmp_path)
    result = json.loads(proc.stdout)
    assert Path(result["trace_path"]).is_absolute()
    assert Path(result["trace_path"]).parent == tmp_path / "myruns" / result["run_id"]


def test_help_is_complete_when_piped(tmp_path):
    """`askdraw ask --help | cat` cut option help at 80 columns with an ellipsis."""
    proc = askdraw("ask", "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "…" not in proc.stdout
    assert "HuggingFaceTB/SmolLM2-1.7B-Instruct" in proc.stdout and "openai/whisper-small.en" in proc.stdout


@pytest.mark.parametrize("args, fragment", [
    (["ask", "x", "--seed", "abc"], "--seed"),
    (["ask", "x", "--bogus"], "--bogus"),
    (["ask", "x", "--wiki"], "--wiki"),
    (["trace", "--wiki", "bogus"], "--wiki"),
    (["chat", "--wiki", "bogus"], "bogus"),
    (["ask", "x", "--wiki", "bogus"], "bogus"),
], ids=["bad-int", "unknown-option", "missing-value", "option-of-another-command", "chat-wiki", "ask-wiki"])
def test_every_usage_error_is_one_line(tmp_path, args, fragment):
    """Errors found by the option parser used to be a boxed panel; now every usage error is one line."""
    proc = askdraw(*args, cwd=tmp_path)
    assert_one_line_error(proc, fragment, code=2)
    assert "╭" not in proc.stderr and proc.stdout == ""


def test_no_image_note_is_one_short_line(monkeypatch):
    """The missing picture's note: one line, short (not the three-line why of the image step)."""
    import io

    from rich.console import Console

    import agent.cli as cli
    from agent.agent import Result
    from agent.state import no_image_notice

    why = ("No image model is configured, so no picture was drawn. To draw pictures, pass --image-model "
           "PATH_OR_HUB_ID (or set ASKDRAW_IMAGE_MODEL): a local diffusers folder, or a hub id already downloaded.")
    result = Result(run_id="r1", question="q", answer="An answer.", image_path="/x/image.png", no_image_kind="no_model",
                    no_image_reason=why, notices=[no_image_notice(why), "the question was long"])
    buffer = io.StringIO()
    monkeypatch.setattr(cli, "err", Console(file=buffer, width=80, highlight=False, soft_wrap=True))
    cli._print_notices(result)
    lines = buffer.getvalue().splitlines()
    assert lines == ["askdraw: note: No image was generated: no --image-model is set, so a labelled card stands in",
                     "askdraw: note: the question was long"]


def test_ask_renders_the_answers_markdown_on_a_terminal(monkeypatch):
    import io

    from rich.console import Console

    import agent.cli as cli
    from agent.agent import Result

    result = Result(run_id="r1", question="q", route="answer",
                    route_reason="the request needs no outside facts, so answer directly (LLM answer 0.50)",
                    answer="Two kinds:\n- **green** turtles\n- leatherbacks\nLast line.")
    buffer = io.StringIO()
    monkeypatch.setattr(cli, "out", Console(file=buffer, width=80, force_terminal=True, highlight=False))
    cli._print_result(result)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", buffer.getvalue())
    assert "**" not in plain and "• green turtles" in plain and "• leatherbacks" in plain
    lines = [ln.strip() for ln in plain.splitlines()]
    assert "Two kinds:" in lines and "Last line." in lines  # line breaks kept
    route = plain.splitlines()[:2]  # the long Route line wraps at a word, under its value
    assert all(len(ln) <= 80 for ln in route) and route[1].startswith(" " * 12 + "answer 0.50)"), route
    assert " ".join(" ".join(route).split()) == f"Route: answer - {result.route_reason}"  # no word cut

    buffer = io.StringIO()  # piped: the answer's text as it was written
    monkeypatch.setattr(cli, "out", Console(file=buffer, width=80, highlight=False, soft_wrap=True))
    cli._print_result(result)
    assert "  - **green** turtles" in buffer.getvalue().splitlines()


# -- a real question with the starter models ------------------------------------------------------
@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli-real")
    out = tmp / "runs"
    proc = askdraw("ask", "Who painted the Mona Lisa?", "--json", "--trace", "--out", str(out),
                   cwd=tmp, timeout=600)
    return proc, out, tmp


@pytest.mark.slow
def test_real_question_prints_the_result_as_json(real_run):
    proc, out, _ = real_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)  # --trace writes to stderr only: stdout is pure JSON
    assert RESULT_FIELDS <= set(result)
    assert result["question"] == "Who painted the Mona Lisa?"
    assert result["error"] is None
    assert result["route"] in ("search", "answer", "draw") and result["route_reason"]
    assert result["answer"].strip()
    assert Path(result["image_path"]).is_file()
    assert Path(result["trace_path"]).is_file()
    assert Path(result["trace_path"]).parent == out / result["run_id"]
    assert "decide" in result["timings_ms"] and "generate_image" in result["timings_ms"]
    if result["route"] == "search":
        assert result["sources"] and {"title", "url", "snippet"} <= set(result["sources"][0])


@pytest.mark.slow
def test_real_question_with_trace_prints_each_step_on_stderr(real_run):
    proc, _, _ = real_run
    assert proc.returncode == 0
    result = json.loads(proc.stdout)
    assert "Traceback" not in proc.stderr
    steps = re.findall(r"^\s*\d+\.\d\ds  (\w+)", proc.stderr, flags=re.MULTILINE)
    assert steps == [k for k in result["timings_ms"] if k != "load"], proc.stderr  # loading is no step
    assert "decision: " + result["route"] in proc.stderr
    # the missing picture is said once (the image step's line does not repeat the note's why)
    assert proc.stderr.count("No image was generated") == 1 and "No image model is configured" not in proc.stderr


@pytest.mark.slow
def test_trace_command_prints_the_real_run_timeline(real_run):
    proc, out, tmp = real_run
    run_id = json.loads(proc.stdout)["run_id"]
    shown = askdraw("trace", run_id, "--out", str(out), cwd=tmp)
    assert shown.returncode == 0, shown.stderr
    assert f"run {run_id}" in shown.stdout
    assert "decide" in shown.stdout and "decision:" in shown.stdout
    for step in json.loads(proc.stdout)["timings_ms"]:
        assert step in shown.stdout


@pytest.mark.slow
def test_spoken_demo_question_prints_every_part_of_the_result(tmp_path):
    """What `make demo` runs: a spoken question, human-readable output."""
    proc = askdraw("ask", "--audio", str(REPO / "examples" / "who_painted_the_mona_lisa.wav"),
                   "--out", str(tmp_path / "runs"), cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    out = proc.stdout
    assert re.search(r"^Transcript: .*mona lisa", out, flags=re.IGNORECASE | re.MULTILINE), out
    route = re.search(r"^Route:\s+(search|answer|draw) - \S", out, flags=re.MULTILINE)
    assert route, out
    assert "Answer:" in out
    image = re.search(r"^Image:\s+(\S+\.png)", out, flags=re.MULTILINE)
    trace = re.search(r"^Trace:\s+(\S+trace\.jsonl)", out, flags=re.MULTILINE)
    assert image and (tmp_path / image.group(1)).is_file(), out
    assert trace and (tmp_path / trace.group(1)).is_file(), out
    assert "NOT generated" in out  # never passed off as a picture
    notes = [ln for ln in proc.stderr.splitlines() if "No image was generated" in ln]
    assert len(notes) == 1 and len(notes[0]) <= 100, proc.stderr  # said once, in one short line
    assert re.search(r"^Time:\s+[\d.]+s \((?:load [\d.]+s, )?transcribe", out, flags=re.MULTILINE), out
