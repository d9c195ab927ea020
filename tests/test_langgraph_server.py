"""``langgraph.json`` served by LangGraph's local server (``langgraph dev``, langgraph-cli[inmem]),
driven through ``langgraph_sdk`` with the real starter models.

One server for the whole module, started offline and headless:

    cd <tmp>/cwd && langgraph dev --no-browser --no-reload --host 127.0.0.1 --port PORT \
        --config <repo>/langgraph.json

with ``LANGGRAPH_CLI_NO_ANALYTICS=1`` (no CLI analytics), ``LANGGRAPH_NO_VERSION_CHECK=true`` (no
PyPI version check), ``LANGSMITH_TRACING=false`` / ``LANGCHAIN_TRACING_V2=false`` (no LangSmith),
``HF_HUB_OFFLINE=1`` and ``ASKDRAW_OUT_DIR=<tmp>/runs``. The working directory is a temporary
folder because the in-memory runtime writes ``.langgraph_api/`` into it; graph paths in
``langgraph.json`` ("./agent/graph.py") are resolved from the working directory, so that folder
gets a symlink to the repository's ``agent/`` package.

Runs started by the server get no askdraw Context: the graph uses ``default_toolbox()``, built from
the ``ASKDRAW_*`` environment of the server process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from agent.messages import turns_of

pytest.importorskip("langgraph_api", reason="needs langgraph-cli[inmem]")
pytest.importorskip("langgraph_sdk")

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "langgraph.json"
LANGGRAPH = Path(sys.executable).parent / "langgraph"
GRAPH_ID = "askdraw"
START_TIMEOUT = 120  # seconds; the graph module imports in well under a second, the server in a few
MAX_ANSWER_TOKENS = "64"  # bounds the direct-answer time of the follow-up on a busy 2-core box

# The steps a turn streams, by route (images on: no image model gives a labelled card).
STEPS = {
    "search": ["decide", "search_wikipedia", "answer", "rewrite_image_prompt", "generate_image", "finish"],
    "answer": ["decide", "answer", "rewrite_image_prompt", "generate_image", "finish"],
    "draw": ["decide", "draw", "generate_image", "finish"],
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_env(out_dir: Path) -> dict[str, str]:
    env = dict(os.environ)  # ASKDRAW_HOME as the test session has it: converted weights are reused
    for key in [k for k in env if k.startswith("ASKDRAW_") and k != "ASKDRAW_HOME"]:
        del env[key]  # the starter defaults, whatever the caller's shell sets
    env.update({
        "ASKDRAW_OUT_DIR": str(out_dir),
        "ASKDRAW_MAX_ANSWER_TOKENS": MAX_ANSWER_TOKENS,
        "HF_HUB_OFFLINE": "1",
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
        "LANGGRAPH_NO_VERSION_CHECK": "true",
        "LANGSMITH_TRACING": "false",
        "LANGCHAIN_TRACING_V2": "false",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def _link_graph_sources(workdir: Path) -> None:
    """``langgraph dev`` resolves "./pkg/file.py:var" graph paths from its working directory:
    link each such top-level folder of the repository into ``workdir``."""
    graphs = json.loads(CONFIG.read_text())["graphs"]
    for target in graphs.values():
        path = (target["path"] if isinstance(target, dict) else target).rsplit(":", 1)[0]
        if "/" not in path:
            continue  # module syntax ("agent.graph:graph") needs no link
        top = Path(path).parts[0] if Path(path).parts[0] != "." else Path(path).parts[1]
        if not (workdir / top).exists():
            (workdir / top).symlink_to(REPO / top)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not LANGGRAPH.exists():
        pytest.skip(f"{LANGGRAPH} not found (install langgraph-cli[inmem])")
    base = tmp_path_factory.mktemp("langgraph_dev")
    workdir, out_dir, log = base / "cwd", base / "runs", base / "server.log"
    workdir.mkdir()
    _link_graph_sources(workdir)
    repo_state_existed = (REPO / ".langgraph_api").exists()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [str(LANGGRAPH), "dev", "--no-browser", "--no-reload", "--host", "127.0.0.1", "--port", str(port),
           "--config", str(CONFIG)]
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, cwd=workdir, env=_server_env(out_dir), stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"langgraph dev exited ({proc.returncode}):\n{log.read_text(errors='replace')}")
            try:
                with urllib.request.urlopen(f"{url}/ok", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"langgraph dev did not answer within {START_TIMEOUT} s:\n"
                            f"{log.read_text(errors='replace')}")
            time.sleep(0.3)
        yield {"url": url, "out_dir": out_dir, "workdir": workdir, "log": log,
               "repo_state_existed": repo_state_existed}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


@pytest.fixture(scope="module")
def client(server):
    from langgraph_sdk import get_sync_client

    return get_sync_client(url=server["url"], api_key=None)  # api_key=None: send no LangSmith key


@pytest.fixture(scope="module")
def thread_id(client) -> str:
    return client.threads.create()["thread_id"]


@pytest.fixture(scope="module")
def first_turn(client, thread_id):
    """``runs.wait``: the plain way to ask, with nothing but the question."""
    output = client.runs.wait(thread_id, GRAPH_ID, input={"question": "Who painted the Mona Lisa?"})
    return output, client.threads.get_state(thread_id)["values"]


@pytest.fixture(scope="module")
def second_turn(client, thread_id, first_turn):
    """A follow-up on the same thread, streamed: the node of every update, in order."""
    nodes, output = [], None
    for part in client.runs.stream(thread_id, GRAPH_ID, input={"question": "When was he born?"},
                                   stream_mode=["updates", "values"]):
        if part.event == "updates":
            nodes += list(part.data)
        elif part.event == "values":
            output = part.data
        elif part.event == "error":
            pytest.fail(f"the follow-up run failed: {part.data}")
    return nodes, output, client.threads.get_state(thread_id)["values"]


@pytest.fixture(scope="module")
def third_turn(client, thread_id, second_turn):
    """A third turn sent as a chat client (Studio's chat view, Agent Chat UI) sends it: only
    ``messages`` ending with the user's message, no ``question``, no run ids."""
    message = {"type": "human", "content": "Where is it kept?", "id": "client-message-3"}
    output = client.runs.wait(thread_id, GRAPH_ID, input={"messages": [message]})
    return output, client.threads.get_state(thread_id)["values"]


# ------------------------------------------------------------------------------------------------


def test_the_askdraw_graph_is_listed(client):
    assistants = client.assistants.search(graph_id=GRAPH_ID)
    assert [a["graph_id"] for a in assistants] == [GRAPH_ID], assistants
    assistant_id = assistants[0]["assistant_id"]
    drawn = client.assistants.get_graph(assistant_id)
    nodes = {n["id"] for n in drawn["nodes"]}
    assert {"transcribe", "decide", "search_wikipedia", "answer", "draw", "rewrite_image_prompt",
            "generate_image", "finish"} <= nodes
    edges = {(e["source"], e["target"]) for e in drawn["edges"]}
    assert {("decide", "search_wikipedia"), ("decide", "answer"), ("decide", "draw")} <= edges
    schemas = client.assistants.get_schemas(assistant_id)
    assert {"question", "messages"} <= set(schemas["input_schema"]["properties"])  # messages: chat clients
    assert {"answer", "route", "image_path"} <= set(schemas["output_schema"]["properties"])


def test_a_run_searches_answers_and_returns_a_labelled_card(server, first_turn):
    output, _ = first_turn
    assert output["route"] == "search", output
    assert "leonardo" in output["answer"].lower(), output["answer"]
    assert any(s["title"] == "Mona Lisa" for s in output["sources"]), output["sources"]
    image = Path(output["image_path"])
    assert image.is_file() and image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert server["out_dir"] in image.parents  # ASKDRAW_OUT_DIR reached the server's runs
    assert output["image_generated"] is False
    assert any(n.lower().startswith("no image was generated") for n in output["notices"]), output["notices"]


def test_the_run_writes_its_trace(first_turn):
    output, state = first_turn
    run_dir = Path(state["run_dir"])
    assert run_dir == Path(output["image_path"]).parent
    events = [json.loads(line) for line in (run_dir / "trace.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events] == STEPS["search"]
    assert {e["run_id"] for e in events} == {state["run_id"]} and run_dir.name == state["run_id"]
    assert events[0]["decision"] == "search" and events[0]["reason"]


def test_a_follow_up_streams_its_steps_in_order(second_turn):
    nodes, output, _ = second_turn
    assert output and output["route"] in STEPS, output
    assert nodes == ["start_turn", *STEPS[output["route"]]], nodes  # start_turn opens the turn (no trace event)
    assert output["answer"].strip()


def test_the_thread_keeps_both_turns_in_the_servers_checkpointer(first_turn, second_turn):
    _, first_state = first_turn
    _, output, state = second_turn
    first, history = turns_of(first_state["messages"]), turns_of(state["messages"])
    assert len(first) == 1 and len(history) == 2, history
    assert history[0] == first[0]  # the first turn is kept as it was
    assert history[0]["question"] == "Who painted the Mona Lisa?" and history[0]["route"] == "search"
    assert "leonardo" in history[0]["answer"].lower() and history[0]["topic"] == "Mona Lisa"
    assert state["question"] == "When was he born?"
    # the follow-up was understood through the earlier turn (the LLM's rewrite, or the pronoun
    # replaced by the earlier topic): either way it names the Mona Lisa or Leonardo
    standalone = (output["standalone_question"] or "").lower()
    assert any(w in standalone for w in ("mona", "lisa", "leonardo")), standalone
    assert history[1]["question"] == output["standalone_question"]


def test_a_plain_follow_up_gets_its_own_run(first_turn, second_turn):
    _, first_state = first_turn
    _, output, state = second_turn
    assert state["run_id"] != first_state["run_id"]
    assert state["run_dir"] != first_state["run_dir"]
    assert output["run_dir"] == state["run_dir"]  # the output names the run folder (trace, image)
    assert history_ids(state) == [first_state["run_id"], state["run_id"]]
    if output["route"] != "search":
        assert output["sources"] == []  # not the first turn's sources
    events = [json.loads(line) for line in (Path(state["run_dir"]) / "trace.jsonl").read_text().splitlines()]
    assert {e["run_id"] for e in events} == {state["run_id"]}


def history_ids(state) -> list[str]:
    return [turn["run_id"] for turn in turns_of(state["messages"])]


def test_a_third_plain_turn_gets_its_own_run_folder(second_turn, third_turn):
    _, _, before = second_turn
    output, state = third_turn
    assert state["run_id"] != before["run_id"] and state["run_dir"] != before["run_dir"]
    run_dir = Path(state["run_dir"])
    assert Path(output["image_path"]).parent == run_dir
    events = [json.loads(line) for line in (run_dir / "trace.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events] == STEPS[output["route"]]
    assert {e["run_id"] for e in events} == {state["run_id"]}
    turns = turns_of(state["messages"])
    assert len(turns) == 3 and turns[:2] == turns_of(before["messages"])
    assert output["question"] == "Where is it kept?"  # the chat client's message was the question
    assert len(output["notices"]) == len(set(output["notices"]))  # no notice carried over from before


def test_the_threads_state_is_the_conversation_as_messages(second_turn, third_turn):
    """What Studio's chat view and Agent Chat UI show: the question and the answer of each turn, the
    answer's metadata saying what the turn knows; the chat client's own message is not added twice."""
    _, _, before = second_turn
    output, state = third_turn
    messages = state["messages"]
    assert [m["type"] for m in messages] == ["human", "ai"] * 3, messages
    assert [m["content"] for m in messages[::2]] == ["Who painted the Mona Lisa?", "When was he born?",
                                                       "Where is it kept?"]
    assert messages[4]["id"] == "client-message-3" and messages[:4] == before["messages"]
    answer = messages[5]
    assert answer["content"] == output["answer"] and answer["id"] == f"{state['run_id']}-answer"
    meta = answer["response_metadata"]
    assert meta["run_id"] == state["run_id"] and meta["route"] == output["route"]
    assert meta["image_path"] == output["image_path"] and meta["sources"] == output["sources"]
    assert meta["standalone_question"] == (output["standalone_question"] or "Where is it kept?")
    assert output["messages"] == messages  # a run's output shows the conversation too


def test_the_server_keeps_its_files_out_of_the_repository(server, third_turn):
    assert (server["workdir"] / ".langgraph_api").is_dir()  # the in-memory runtime's own files
    if not server["repo_state_existed"]:
        assert not (REPO / ".langgraph_api").exists()
    assert not any((REPO / "runs").glob(f"{third_turn[1]['run_id']}*"))


def test_answer_tokens_reach_a_langgraph_sdk_client_as_they_are_generated(client):
    """stream_mode "messages-tuple": the answer's LLM tokens (and only the answer's: the route labels
    are tagged nostream); "custom": the nodes' progress, the same tokens among it."""
    thread = client.threads.create()["thread_id"]
    tokens, custom, final, arrived = [], [], None, []
    start = time.monotonic()
    for part in client.runs.stream(thread, GRAPH_ID, input={
            "question": "Give me one tip for sleeping better.", "force_route": "answer", "want_image": False},
            stream_mode=["messages-tuple", "custom", "values"]):
        if part.event == "messages":
            chunk, metadata = part.data
            tokens.append((metadata.get("langgraph_node"), chunk.get("content") or ""))
            if metadata.get("langgraph_node") == "answer":
                arrived.append(time.monotonic() - start)
        elif part.event == "custom":
            custom.append(part.data)
        elif part.event == "values":
            final = part.data
        elif part.event == "error":
            pytest.fail(f"the run failed: {part.data}")
    texts = [text for node, text in tokens if text and node == "answer"]
    # the answer node's LLM tokens, then the turn's messages as the finish node adds them
    assert {node for node, _ in tokens} == {"answer", "finish"} and len(texts) >= 5
    assert [text for node, text in tokens if node == "finish"][-1] == final["answer"]
    streamed = "".join(texts)
    assert final["answer"].strip() and final["answer"].startswith(streamed.strip()[:20])
    assert "".join(c["text"] for c in custom if c.get("type") == "token") == streamed
    assert any(c.get("type") == "status" and c.get("text") == "writing the answer" for c in custom)
    assert arrived[-1] - arrived[0] > 0.1  # token by token, not one block at the end


def test_the_example_client_streams_the_answer(server):
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "langgraph_client.py"), "--url", server["url"],
                           "--stream", "Write one short sentence about the sea."],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "streamed:" in proc.stdout, proc.stdout + proc.stderr
    streamed = next(line for line in proc.stdout.splitlines() if line.startswith("streamed:"))
    answer = next(line for line in proc.stdout.splitlines() if line.startswith("answer:"))
    assert streamed.split(":", 1)[1].strip()[:15] in answer
    assert "[deciding the route]" in proc.stderr and "[writing the answer]" in proc.stderr
