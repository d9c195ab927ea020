"""Conversations under concurrency, damage and long use (issue 14, points 3, 4 and 9):

* two processes on one conversation: a second ``askdraw chat --resume`` of it is refused with one
  clear line; turns asked at once from two processes (Python API) all land in the thread;
* a damaged conversation database gives one line naming the file and what to do (history, chat);
* a long thread keeps a bounded history and a database that stops growing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from agent.agent import Agent
from agent.context import Toolbox
from agent.memory import Memory, ThreadBusy
from agent.settings import Settings
from agent.state import HISTORY_TURNS
from tests.fakes import ScriptedLLM
from tests.test_chat import _command, _env
from tools.diffusion import ImageGenerator

REPO = Path(__file__).resolve().parents[1]

# A process asking ``n`` questions on one thread with a scripted LLM that takes 0.15 s per reply,
# so that two such processes overlap turn by turn.
ASKER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from agent.agent import Agent
    from agent.context import Toolbox
    from agent.settings import Settings
    from tests.fakes import ScriptedLLM
    from tools.diffusion import ImageGenerator

    class SlowLLM(ScriptedLLM):
        def chat(self, *a, **kw):
            time.sleep(0.15)
            return super().chat(*a, **kw)

    name, thread, n, memory, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
    settings = Settings(out_dir=out, memory_path=memory, route="answer", image=False)
    llm = SlowLLM(replies=[f"Answer {{name}}-{{i}}." for i in range(n)])
    agent = Agent(settings, tools=Toolbox(settings, llm=llm, image=ImageGenerator(None)))
    for i in range(n):
        result = agent.ask(text=f"Write a line of poem {{name}}-{{i}}", thread_id=thread)
        assert result.answer == f"Answer {{name}}-{{i}}.", result
    print("done", name)
""")


def fake_agent(tmp_path: Path, replies: list[str]) -> Agent:
    settings = Settings(out_dir=tmp_path / "runs", memory_path=tmp_path / "memory.sqlite", route="answer",
                        image=False)
    return Agent(settings, tools=Toolbox(settings, llm=ScriptedLLM(replies=replies), image=ImageGenerator(None)))


def askdraw(tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*_command(), *args], cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    assert lines[0].startswith("askdraw: error:"), proc.stderr
    return lines[0]


# -- two processes ---------------------------------------------------------------------------------
def test_turns_from_two_processes_at_once_are_all_kept(tmp_path):
    agent = fake_agent(tmp_path, ["Hello."])
    thread = agent.new_thread_id()
    agent.ask(text="Say hello", thread_id=thread)
    agent.memory.close()
    script = tmp_path / "asker.py"
    script.write_text(ASKER.format(repo=str(REPO)))
    memory, out = str(tmp_path / "memory.sqlite"), str(tmp_path / "runs")
    procs = [subprocess.Popen([sys.executable, str(script), name, thread, "4", memory, out], cwd=REPO,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
    again = Memory(memory)
    questions = [h["question"] for h in again.history(thread)]
    assert len(questions) == 9, questions  # the first turn and 4 from each process: none lost
    assert sorted(questions[1:]) == sorted(f"Write a line of poem {n}-{i}" for n in "ab" for i in range(4))
    for name in "ab":  # each process's turns in its own order
        mine = [q for q in questions if q.endswith(tuple(f"{name}-{i}" for i in range(4)))]
        assert mine == [f"Write a line of poem {name}-{i}" for i in range(4)]
    assert again.threads()[0]["turns"] == 9


def test_two_turns_at_once_in_one_process_are_both_kept(tmp_path):
    agent = fake_agent(tmp_path, ["One.", "Two."])
    thread = agent.new_thread_id()
    done = []
    workers = [threading.Thread(target=lambda q=q: done.append(agent.ask(text=q, thread_id=thread)))
               for q in ("Write one line", "Write another line")]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert all(r.answer for r in done) and len(done) == 2
    assert sorted(h["question"] for h in agent.memory.history(thread)) == ["Write another line", "Write one line"]


def test_a_second_chat_on_an_open_conversation_is_refused_with_one_line(tmp_path):
    pexpect = pytest.importorskip("pexpect")
    agent = fake_agent(tmp_path, ["Hello."])
    thread = agent.new_thread_id()
    agent.ask(text="Say hello", thread_id=thread)
    agent.memory.close()
    command = _command()
    first = pexpect.spawn(command[0], [*command[1:], "chat", "--resume", thread, "--out", str(tmp_path / "runs")],
                          env=_env(tmp_path), cwd=str(tmp_path), encoding="utf-8", timeout=60,
                          dimensions=(40, 200))
    try:
        first.expect("resumed conversation")
        second = askdraw(tmp_path, "chat", "--resume", thread)
        assert second.returncode == 1
        line = one_error_line(second)
        assert f"conversation {thread} is in use by another askdraw process (pid {first.pid}, chat session)" in line
        assert "askdraw chat` without --resume starts a new one" in line
        # The other process's turns cannot reach it through the Python API either.
        with pytest.raises(ThreadBusy):
            Memory(tmp_path / "memory.sqlite").claim(thread)
        blocked = fake_agent(tmp_path, ["never"]).ask(text="Write a line", thread_id=thread)
        assert blocked.error and "in use by another askdraw process" in blocked.error and not blocked.answer
        first.sendline("exit")
        first.expect(pexpect.EOF)
    finally:
        first.close(force=True)
    # Once the first session has closed, the conversation can be resumed.
    third = fake_agent(tmp_path, ["Hello again."])
    third.claim_thread(thread)
    assert third.ask(text="Say hello again", thread_id=thread).answer == "Hello again."
    third.release_thread(thread)


# -- a damaged database ----------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_conversation_database_is_one_clear_line(tmp_path, damage):
    db = tmp_path / "memory.sqlite"
    if damage == "garbage":
        db.write_bytes(b"this is not a database\n" * 200)
    else:  # a real database cut short (a crash or a full disk while copying it)
        agent = fake_agent(tmp_path, ["Hello."])
        agent.ask(text="Say hello", thread_id=agent.new_thread_id())
        agent.memory.close()
        for extra in ("-wal", "-shm"):
            Path(str(db) + extra).unlink(missing_ok=True)
        data = db.read_bytes()
        db.write_bytes(data[:100] + b"\x00" * 50 + data[150: len(data) // 2])
    for args in (["history"], ["chat", "--resume"], ["chat"]):
        proc = askdraw(tmp_path, *args)
        assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
        line = one_error_line(proc)
        assert f"the conversation database {db} is unreadable" in line, line
        assert "move it aside" in line and "ASKDRAW_MEMORY_PATH" in line


# -- long threads ----------------------------------------------------------------------------------
def test_a_long_thread_keeps_a_bounded_history_and_database(tmp_path):
    turns = 3 * HISTORY_TURNS
    agent = fake_agent(tmp_path, [f"Line {i}." for i in range(turns)])
    thread = agent.new_thread_id()
    db = tmp_path / "memory.sqlite"
    sizes = {}
    for i in range(turns):
        assert agent.ask(text=f"Write line {i}", thread_id=thread).answer == f"Line {i}."
        if i + 1 in (HISTORY_TURNS, turns):
            agent.memory._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            sizes[i + 1] = db.stat().st_size
    history = agent.memory.history(thread)
    assert [h["question"] for h in history] == [f"Write line {i}" for i in range(turns - HISTORY_TURNS, turns)]
    assert agent.memory.threads()[0]["turns"] == turns  # `askdraw history` still counts every turn
    assert sizes[turns] <= sizes[HISTORY_TURNS] * 1.2, sizes  # it stopped growing
    rows = agent.memory._conn.execute("SELECT count(*) FROM checkpoints WHERE thread_id = ?", (thread,)).fetchone()
    assert rows[0] == 1
