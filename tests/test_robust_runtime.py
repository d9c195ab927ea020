"""Robustness at run time: failing models, output that cannot be saved, and concurrent runs.

What is asserted is what the user sees: a one-line message (``askdraw: error: ...``) and a
non-zero exit when the question could not be answered; otherwise the answer, plus a notice
(``askdraw: note: ...``) saying what was degraded and why -- never a silent degradation and never
a traceback. The run's ``trace.jsonl`` and ``result.json`` are written whenever the output folder
is writable.

Fast tests use scripted models (tests/fakes.py) in-process, or the real ``askdraw`` entry point in
a subprocess with the same fakes installed (see :func:`install_fakes` and ``DRIVER``). The tests
marked ``slow`` run the real starter models (one module-scoped Agent).
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from agent.agent import Agent, load_result
from agent.context import Toolbox
from agent.settings import Settings
from agent.trace import read_trace
from tools.diffusion import ImageGenerator
from tools.wikipedia import Passage

try:
    from tests.fakes import ScriptedLLM
except ImportError:  # tests/ is on sys.path itself (pytest rootdir-less import mode)
    from fakes import ScriptedLLM

REPO = Path(__file__).resolve().parents[1]
MONA_LISA = {
    "title": "Mona Lisa",
    "url": "https://en.wikipedia.org/wiki/Mona_Lisa",
    "text": "The Mona Lisa is a half-length portrait painting by the Italian artist Leonardo da Vinci. "
    "It hangs in the Louvre in Paris.",
    "score": 0.9,
}
# Route scores a model could return that are not a usable decision (missing labels; not numbers).
UNPARSEABLE = [{"search": 0.9}, {"search": "yes", "answer": "no", "draw": "?"}]


# -- test doubles --------------------------------------------------------------------------------
class ListWiki:
    name = "fake-wiki"

    def __init__(self, passages=()):
        self.passages = [Passage(**p) for p in passages]
        self.queries: list[str] = []

    def search(self, query: str, k: int = 3):
        self.queries.append(query)
        return list(self.passages)[:k]


class EchoLLM:
    """A thread-safe stand-in LLM whose answer names the tag (``Q<n>``) of the question it was
    asked, so a mixed-up run shows. It always prefers the 'answer' route. No lock: concurrent
    calls really overlap (``delay``)."""

    name = "echo-llm"

    def __init__(self, delay: float = 0.02) -> None:
        self.delay = delay
        self.loaded = False
        self.loads = 0
        self._count_lock = threading.Lock()

    def load(self) -> None:
        with self._count_lock:
            if not self.loaded:
                self.loads += 1
                time.sleep(self.delay)
                self.loaded = True

    def chat(self, messages, *, max_new_tokens=None, on_token=None, prefix="", stop=None) -> str:
        self.load()
        asked = messages[-1]["content"]
        tags = re.findall(r"\bQ\d+\b", asked)
        time.sleep(self.delay)
        reply = f"This is the answer to {tags[-1] if tags else 'nothing'}."
        if on_token:
            for word in reply.split(" "):
                time.sleep(self.delay / 10)
                on_token(word + " ")
        return reply

    def score_labels(self, messages, labels, *, prefix="") -> dict[str, float]:
        self.load()
        time.sleep(self.delay)
        return {label: (0.8 if label == "answer" else 0.1) for label in labels}


def _raise_enospc(path: Any) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def simulate_full_disk(patch, root: Path) -> None:
    """Every write or folder creation under ``root`` fails with ENOSPC (as on a full disk).
    ``patch(obj, name, value)`` is monkeypatch.setattr or plain setattr."""
    root = str(Path(root).resolve())
    under = lambda p: isinstance(p, (str, os.PathLike)) and str(Path(os.fspath(p)).resolve()).startswith(root)  # noqa: E731
    real_open, real_mkdir = builtins.open, os.mkdir

    def full_open(file, mode="r", *args, **kwargs):
        if under(file) and any(c in mode for c in "wax+"):
            _raise_enospc(file)
        return real_open(file, mode, *args, **kwargs)

    def full_mkdir(path, *args, **kwargs):
        if under(path):
            _raise_enospc(path)
        return real_mkdir(path, *args, **kwargs)

    patch(builtins, "open", full_open)
    patch(io, "open", full_open)
    patch(os, "mkdir", full_mkdir)


def install_fakes(cfg: dict[str, Any], patch=setattr) -> dict[str, Any]:
    """Replace the models the default Toolbox builds with fakes, per ``cfg``:
    ``llm``: {"replies": [...], "labels": [...]} for a ScriptedLLM, or "echo" for EchoLLM;
    ``wiki``: passages the fake Wikipedia returns; ``full_disk``: a folder where writes fail;
    ``unet_fails``: the diffusers UNet raises from its second call on."""
    import tools.llm
    import tools.wikipedia

    made: dict[str, Any] = {}
    if cfg.get("llm") == "echo":
        made["llm"] = EchoLLM()
    elif "llm" in cfg:
        made["llm"] = ScriptedLLM(replies=cfg["llm"].get("replies", ()), labels=cfg["llm"].get("labels", ()))
    if "llm" in made:
        patch(tools.llm, "local_llm", lambda *a, **k: made["llm"])
    made["wiki"] = ListWiki(cfg.get("wiki", ()))
    patch(tools.wikipedia, "make_backend", lambda *a, **k: made["wiki"])
    if cfg.get("full_disk"):
        simulate_full_disk(patch, Path(cfg["full_disk"]))
    if cfg.get("unet_fails"):
        from diffusers import UNet2DConditionModel

        real_forward = UNet2DConditionModel.forward
        calls = {"n": 0}

        def forward(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] >= 2:
                raise RuntimeError("unet exploded at step 2")
            return real_forward(self, *args, **kwargs)

        patch(UNet2DConditionModel, "forward", forward)
    return made


DRIVER = """
import json, os, sys
sys.path.insert(0, {repo!r})
from tests.test_robust_runtime import install_fakes
install_fakes(json.loads(os.environ["ROBUST_FAKES"]))
from agent.cli import main
sys.argv = ["askdraw", *sys.argv[1:]]
main()
"""


def askdraw(cfg: dict[str, Any], *args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real CLI entry point in a subprocess, with the fakes of ``cfg`` installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env["HF_HUB_OFFLINE"] = "1"
    env["ASKDRAW_HOME"] = str(cwd / "home")
    env["ROBUST_FAKES"] = json.dumps(cfg)
    for key in [k for k in env if k.startswith("ASKDRAW_") and k != "ASKDRAW_HOME"]:
        env.pop(key)
    return subprocess.run([sys.executable, "-c", DRIVER.format(repo=str(REPO)), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def assert_no_traceback(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-3000:]


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("askdraw: error:")]


def notes(proc: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("askdraw: note:")]


def only_run_dir(out: Path) -> Path:
    runs = [d for d in out.iterdir() if d.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def make_agent(tmp_path: Path, llm, *, wiki=None, asr=None, image=None, **settings) -> Agent:
    s = Settings(out_dir=tmp_path / "runs", **settings)
    tools = Toolbox(s, llm=llm, asr=asr, wiki=wiki if wiki is not None else ListWiki(),
                    image=image or ImageGenerator(None, width=64, height=64))
    return Agent(s, tools=tools)


def write_tone(path: Path, seconds: float = 1.0) -> Path:
    import soundfile as sf

    t = np.arange(int(16000 * seconds), dtype=np.float32) / 16000
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    return path


def is_card(path: str | Path) -> bool:
    with Image.open(path) as im:
        generated = im.text.get("askdraw:generated")
        px = np.asarray(im.convert("RGB")).reshape(-1, 3)
    _, counts = np.unique(px, axis=0, return_counts=True)
    return generated == "false" and counts.max() / len(px) > 0.6


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py; so is tiny_model


# == 4. models ======================================================================================
def test_unparseable_route_decision_is_retried_then_falls_back_to_search_with_a_notice(tmp_path):
    llm = ScriptedLLM(replies=["Leonardo da Vinci painted it."], labels=UNPARSEABLE)
    r = make_agent(tmp_path, llm, wiki=ListWiki([MONA_LISA])).ask(text="Who painted the Mona Lisa?", image=False)

    assert r.ok and r.error is None and r.route == "search"
    assert "fell back to the safe route 'search'" in r.route_reason
    assert [n for n in r.notices if n.startswith("route decision fell back to 'search': attempt 2:")]
    decide = read_trace(Path(r.trace_path).parent)[0]
    assert decide.step == "decide" and decide.decision == "search"
    assert decide.data["attempts"] == 2 and decide.data["fallback"] is True and len(decide.data["errors"]) == 2
    assert load_result(Path(r.trace_path).parent) == r


def test_cli_unparseable_route_decision_answers_and_says_it_fell_back(tmp_path):
    cfg = {"llm": {"replies": ["Leonardo da Vinci painted it."], "labels": UNPARSEABLE}, "wiki": [MONA_LISA]}
    proc = askdraw(cfg, "ask", "Who painted the Mona Lisa?", "--no-image", "--out", "runs", cwd=tmp_path)

    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_no_traceback(proc)
    assert re.search(r"^Route:\s+search - the route decision failed twice .*fell back to the safe route 'search'",
                     proc.stdout, flags=re.MULTILINE), proc.stdout
    assert "Leonardo da Vinci" in proc.stdout
    assert [n for n in notes(proc) if "route decision fell back to 'search'" in n], proc.stderr
    run = only_run_dir(tmp_path / "runs")
    assert (run / "trace.jsonl").is_file() and (run / "result.json").is_file()


def test_cli_empty_answer_is_one_error_line_exit_1_and_the_run_is_traced(tmp_path):
    cfg = {"llm": {"replies": ["   "], "labels": ["answer"]}}
    proc = askdraw(cfg, "ask", "Write a short poem about autumn.", "--route", "answer", "--out", "runs", cwd=tmp_path)

    assert proc.returncode == 1
    assert_no_traceback(proc)
    assert error_lines(proc) == ["askdraw: error: the language model returned an empty answer"], proc.stderr
    assert "Answer:" not in proc.stdout
    run = only_run_dir(tmp_path / "runs")
    events = read_trace(run)
    assert [e.step for e in events] == ["decide", "answer"]
    assert events[-1].error == "the language model returned an empty answer"
    result = json.loads((run / "result.json").read_text())
    assert result["error"] == "the language model returned an empty answer" and result["answer"] is None


def test_llm_that_fails_while_answering_is_an_error_result_not_a_crash(tmp_path):
    llm = ScriptedLLM(replies=[RuntimeError("CUDA out of memory")], labels=["answer"])
    r = make_agent(tmp_path, llm).ask(text="Write a short poem about autumn.", route="answer")
    assert not r.ok and r.error == "RuntimeError: CUDA out of memory"
    assert read_trace(Path(r.trace_path).parent)[-1].error == r.error


def test_missing_asr_model_is_a_clear_error_and_the_run_is_traced(tmp_path):
    from tools.asr import WhisperASR

    agent = make_agent(tmp_path, ScriptedLLM(), asr=WhisperASR("/no/such/folder"))
    r = agent.ask(audio=write_tone(tmp_path / "q.wav"))

    assert not r.ok and r.error == "ASR model folder does not exist: /no/such/folder"
    run = Path(r.trace_path).parent
    events = read_trace(run)
    assert [e.step for e in events] == ["transcribe"] and events[0].error == r.error
    assert load_result(run) == r


def test_cli_missing_asr_model_is_one_error_line_exit_1(tmp_path):
    wav = write_tone(tmp_path / "q.wav")
    proc = askdraw({"llm": {}}, "ask", "--audio", str(wav), "--asr", "/no/such/folder", "--out", "runs", cwd=tmp_path)

    assert proc.returncode == 1
    assert_no_traceback(proc)
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == [
        "askdraw: error: ASR model folder does not exist: /no/such/folder"], proc.stderr
    run = only_run_dir(tmp_path / "runs")
    assert read_trace(run)[0].error == "ASR model folder does not exist: /no/such/folder"
    assert json.loads((run / "result.json").read_text())["error"].startswith("ASR model folder does not exist")


def test_image_pipeline_failing_midway_keeps_the_answer_and_gives_an_honest_card(tmp_path, tiny_model, monkeypatch):
    install_fakes({"unet_fails": True}, monkeypatch.setattr)
    llm = ScriptedLLM(replies=["Leonardo da Vinci painted it.", "A portrait of a smiling woman, oil painting"],
                      labels=["answer"])
    image = ImageGenerator(str(tiny_model), steps=3, width=64, height=64)
    r = make_agent(tmp_path, llm, image=image).ask(text="Who painted the Mona Lisa?", route="answer")

    assert r.ok and r.error is None and r.answer == "Leonardo da Vinci painted it."
    assert r.image_generated is False and r.image_path and is_card(r.image_path)
    notice = next(n for n in r.notices if n.startswith("No image was generated:"))
    assert "failed while generating" in notice and "unet exploded at step 2" in notice
    gen = next(e for e in read_trace(Path(r.trace_path).parent) if e.step == "generate_image")
    assert gen.data["generated"] is False and "unet exploded" in gen.reason


def test_cli_image_pipeline_failing_midway(tmp_path, tiny_model):
    cfg = {"llm": {"replies": ["Leonardo da Vinci painted it.", "A portrait of a smiling woman, oil painting"],
                   "labels": ["answer"]}, "unet_fails": True}
    proc = askdraw(cfg, "ask", "Who painted the Mona Lisa?", "--route", "answer", "--image-model", str(tiny_model),
                   "--image-steps", "3", "--image-size", "64", "--out", "runs", cwd=tmp_path)

    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_no_traceback(proc)
    assert "Leonardo da Vinci painted it." in proc.stdout
    image = re.search(r"^Image:\s+(\S+\.png) \(NOT generated: a labelled card, see note\)", proc.stdout, re.MULTILINE)
    assert image and is_card(tmp_path / image.group(1)), proc.stdout
    assert [n for n in notes(proc) if "No image was generated" in n and "unet exploded at step 2" in n], proc.stderr


def test_cli_missing_image_model_folder_still_answers_and_says_why_there_is_no_image(tmp_path):
    cfg = {"llm": {"replies": ["Leonardo da Vinci painted it.", "Mona Lisa portrait, oil painting"],
                   "labels": ["answer"]}}
    proc = askdraw(cfg, "ask", "Who painted the Mona Lisa?", "--route", "answer", "--image-model", "/no/such/dir",
                   "--json", "--out", "runs", cwd=tmp_path)

    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_no_traceback(proc)
    result = json.loads(proc.stdout)
    assert result["answer"] == "Leonardo da Vinci painted it." and result["error"] is None
    assert result["image_generated"] is False and is_card(tmp_path / result["image_path"])
    why = "image model folder '/no/such/dir' does not exist"
    assert [n for n in result["notices"] if n.startswith("No image was generated") and why in n]
    assert [n for n in notes(proc) if why in n], proc.stderr


# == 5. output ======================================================================================
def test_out_is_a_file_the_answer_is_given_and_says_the_run_could_not_be_saved(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the runs folder should be")
    llm = ScriptedLLM(replies=["Leonardo da Vinci painted it."], labels=["answer"])
    s = Settings(out_dir=blocker)
    agent = Agent(s, tools=Toolbox(s, llm=llm, wiki=ListWiki(), image=ImageGenerator(None, width=64, height=64)))
    r = agent.ask(text="Who painted the Mona Lisa?", route="answer")

    assert r.ok and r.answer == "Leonardo da Vinci painted it."
    assert r.trace_path is None and r.image_path is None and not r.image_generated
    assert [n for n in r.notices if n.startswith(f"the run could not be saved to {blocker}/")], r.notices
    assert [n for n in r.notices if n.startswith("No image was saved")], r.notices
    assert blocker.read_text() == "a file where the runs folder should be"


def test_cli_out_is_a_file(tmp_path):
    (tmp_path / "runs").write_text("a file where the runs folder should be")
    cfg = {"llm": {"replies": ["Leonardo da Vinci painted it."], "labels": ["answer"]}}
    proc = askdraw(cfg, "ask", "Who painted the Mona Lisa?", "--route", "answer", "--out", "runs", cwd=tmp_path)

    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_no_traceback(proc)
    assert "Leonardo da Vinci painted it." in proc.stdout
    assert "Trace:" not in proc.stdout
    # --out is made absolute (runs are found from any folder), so the note names the whole path
    saved_to = f"the run could not be saved to {tmp_path / 'runs'}/"
    assert [n for n in notes(proc) if saved_to in n and "Not a directory" in n], proc.stderr
    assert not [ln for ln in proc.stderr.splitlines() if "warning" in ln or "error" in ln.split(":", 2)[1]], proc.stderr


@pytest.mark.parametrize("route", ["answer", "draw"])
def test_full_disk_the_answer_is_given_and_says_the_run_could_not_be_saved(tmp_path, monkeypatch, route):
    llm = ScriptedLLM(replies=["Leonardo da Vinci painted it."] * 2, labels=[route])
    agent = make_agent(tmp_path, llm)
    simulate_full_disk(monkeypatch.setattr, tmp_path / "runs")
    r = agent.ask(text="Who painted the Mona Lisa?" if route == "answer" else "Draw a red bicycle", route=route)

    assert r.ok and r.error is None
    assert (r.answer == "Leonardo da Vinci painted it.") if route == "answer" else ("could not draw" in r.answer)
    assert r.trace_path is None and r.image_path is None
    saved = [n for n in r.notices if n.startswith("the run could not be saved to ")]
    assert saved and "No space left on device" in saved[0], r.notices
    assert [n for n in r.notices if n.startswith("No image was saved") and "No space left on device" in n]
    assert not (tmp_path / "runs").exists()
    monkeypatch.undo()  # space is freed: the same agent carries on and saves its runs again
    again = agent.ask(text="Who painted the Mona Lisa?", route="answer", image=False)
    assert again.ok and again.answer == "Leonardo da Vinci painted it." and not again.notices
    assert load_result(Path(again.trace_path).parent) == again


def test_cli_full_disk(tmp_path):
    cfg = {"llm": {"replies": ["Leonardo da Vinci painted it."], "labels": ["answer"]},
           "full_disk": str(tmp_path / "runs")}
    proc = askdraw(cfg, "ask", "Who painted the Mona Lisa?", "--route", "answer", "--out", "runs", cwd=tmp_path)

    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_no_traceback(proc)
    assert "Leonardo da Vinci painted it." in proc.stdout
    assert [n for n in notes(proc) if "the run could not be saved" in n and "No space left on device" in n], proc.stderr


def test_cli_full_disk_and_a_failed_question_exit_1_with_both_messages(tmp_path):
    cfg = {"llm": {"replies": ["  "], "labels": ["answer"]}, "full_disk": str(tmp_path / "runs")}
    proc = askdraw(cfg, "ask", "Write a poem.", "--route", "answer", "--out", "runs", cwd=tmp_path)

    assert proc.returncode == 1
    assert_no_traceback(proc)
    assert error_lines(proc) == ["askdraw: error: the language model returned an empty answer"], proc.stderr
    assert [n for n in notes(proc) if "the run could not be saved" in n], proc.stderr


def test_trace_that_cannot_be_written_is_a_notice_not_silent(tmp_path, monkeypatch):
    import agent.step

    def broken(run_dir, event):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(agent.step, "append_event", broken)
    llm = ScriptedLLM(replies=["Leonardo da Vinci painted it."], labels=["answer"])
    r = make_agent(tmp_path, llm).ask(text="Who painted the Mona Lisa?", route="answer", image=False)

    assert r.ok and r.answer == "Leonardo da Vinci painted it."
    assert [n for n in r.notices if n.startswith("the trace could not be written") and "Input/output error" in n]
    assert len([n for n in r.notices if n.startswith("the trace could not be written")]) == 1
    assert r.trace_path is None  # no path to a trace that is not there
    assert load_result(tmp_path / "runs" / r.run_id).notices == r.notices  # result.json still written


# == 6. concurrency =================================================================================
def _check_independent(results, questions) -> None:
    for r, q in zip(results, questions):
        tag = re.search(r"Q\d+", q).group(0)
        assert r.ok and r.error is None, r
        assert r.question == q
        assert r.answer == f"This is the answer to {tag}.", (q, r.answer)
        run = Path(r.trace_path).parent
        assert run.name == r.run_id
        events = read_trace(run)
        assert events and {e.run_id for e in events} == {r.run_id}
        lines = (run / "trace.jsonl").read_text()
        others = set(re.findall(r"Q\d+", lines)) - {tag}
        assert not others, f"trace of {tag} mentions {others}"
        assert load_result(run) == r
    assert len({r.run_id for r in results}) == len(results)


def ask_at_once(agent, questions: list[str], *, timeout: float) -> list:
    """Each question from its own thread, released together; the results in question order."""
    results: list = [None] * len(questions)
    start = threading.Barrier(len(questions))

    def ask(i: int) -> None:
        start.wait()
        results[i] = agent.ask(text=questions[i])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(questions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    return results


def test_two_threads_and_ten_calls_in_a_row_with_fakes(tmp_path, monkeypatch):
    made = install_fakes({"llm": "echo"}, monkeypatch.setattr)
    agent = Agent(Settings(out_dir=tmp_path / "runs", image=False))
    questions = ["Tell me about Q1 please", "Tell me about Q2 please"]
    results = ask_at_once(agent, questions, timeout=30)
    _check_independent(results, questions)

    in_a_row = [f"What about Q{i}?" for i in range(10, 20)]
    _check_independent([agent.ask(text=q) for q in in_a_row], in_a_row)
    assert made["llm"].loads == 1 and agent.tools.llm is made["llm"]


@pytest.fixture(scope="module")
def real_agent(tmp_path_factory):
    """The real starter models (LLM, offline Wikipedia), text only, short answers; loads counted."""
    import transformers

    from tools.wikipedia import OfflineWikipedia

    counts = {"llm": 0, "wiki": 0}
    real_llm = transformers.AutoModelForCausalLM.from_pretrained.__func__
    real_open = OfflineWikipedia._open

    def counting_llm(cls, *args, **kwargs):
        counts["llm"] += 1
        return real_llm(cls, *args, **kwargs)

    def counting_open(self, *args, **kwargs):
        counts["wiki"] += 1
        return real_open(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(transformers.AutoModelForCausalLM, "from_pretrained", classmethod(counting_llm))
        mp.setattr(OfflineWikipedia, "_open", counting_open)
        try:  # the starter runs on llama.cpp where it is installed: count its loads too
            import llama_cpp

            real_init = llama_cpp.Llama.__init__

            def counting_init(self, *args, **kwargs):
                counts["llm"] += 1
                real_init(self, *args, **kwargs)

            mp.setattr(llama_cpp.Llama, "__init__", counting_init)
        except ImportError:
            pass
        out = tmp_path_factory.mktemp("robust-real") / "runs"
        yield Agent(Settings(out_dir=out, image=False, max_answer_tokens=24, search_k=1)), counts


def _check_real(r, question: str) -> None:
    assert r.ok and r.error is None, r.error
    assert r.question == question and r.answer.strip()
    run = Path(r.trace_path).parent
    events = read_trace(run)
    assert {e.run_id for e in events} == {r.run_id}
    decide = next(e for e in events if e.step == "decide")
    assert decide.input == question
    if r.route == "search":
        assert r.search_query and r.search_query.split()[0].lower() in question.lower()
    assert load_result(run) == r


@pytest.mark.slow
def test_real_models_two_threads_at_once_and_ten_in_a_row(real_agent):
    agent, counts = real_agent
    questions = ["Who painted the Mona Lisa?", "What is the capital of France?"]
    results = ask_at_once(agent, questions, timeout=300)
    for r, q in zip(results, questions):
        _check_real(r, q)
    assert results[0].run_id != results[1].run_id

    in_a_row = ["Who painted the Mona Lisa?", "What is the capital of France?", "Write a haiku about rain",
                "Who wrote Hamlet?", "What is photosynthesis?", "Tell me a joke about cats",
                "Where is Mount Everest?", "Who was Albert Einstein?", "What is 2 plus 2?", "Describe the Moon"]
    rows = [agent.ask(text=q) for q in in_a_row]
    for r, q in zip(rows, in_a_row):
        _check_real(r, q)
    # one load of each model for all twelve questions (the two concurrent first runs may both
    # record waiting for it in their trace; no later run loads anything)
    assert counts["llm"] == 1 and counts["wiki"] <= 1, counts
    for r in rows:
        loaded = [k for e in read_trace(Path(r.trace_path).parent) for k in e.data if k.startswith("load_")]
        assert not loaded, (r.question, loaded)
    # the same question asked twice gets the same answer (greedy decoding, nothing leaked between runs)
    assert rows[0].answer == results[0].answer and rows[1].answer == results[1].answer
