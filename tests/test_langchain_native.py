"""askdraw inside the LangChain/LangGraph ecosystem (issue 19): the local model is a BaseChatModel,
any BaseChatModel can be the agent's LLM, the route decision can be one native tool call, every LLM
call reaches LangChain callbacks, and the answer's tokens stream through LangGraph
(``stream_mode="messages"`` and ``"custom"``).

The local-model tests run the real starter LLM; the tool-calling decision is driven by a scripted
BaseChatModel here (and by the real llama.cpp server in tests/test_endpoints_server.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from agent.agent import Agent
from agent.context import Context, Toolbox
from agent.graph import build_graph
from agent.settings import Settings
from tools.chat import LangChainLLM, as_llm
from tools.llm import LocalLLM
from tests.fakes import FakeImage

MESSAGES = [{"role": "system", "content": "You are a helpful assistant. Answer briefly."},
            {"role": "user", "content": "Give me one tip for sleeping better."}]


class Recorder(BaseCallbackHandler):
    """Every LLM start, end and error, as a LangChain callback handler sees them."""

    def __init__(self) -> None:
        self.starts: list[dict[str, Any]] = []
        self.ends = 0
        self.errors: list[str] = []
        self.tokens: list[str] = []

    def on_chat_model_start(self, serialized, messages, **kw):
        self.starts.append({"name": kw.get("name") or (serialized or {}).get("name"),
                            "model": (kw.get("invocation_params") or {}).get("model"),
                            "tags": list(kw.get("tags") or []), "run_id": kw.get("run_id")})

    def on_llm_new_token(self, token, **kw):
        self.tokens.append(token)

    def on_llm_end(self, response, **kw):
        self.ends += 1

    def on_llm_error(self, error, **kw):
        self.errors.append(repr(error))


class ScriptedChat(BaseChatModel):
    """A scripted LangChain chat model that calls tools (unit tests only): each call returns the
    next scripted reply; a dict reply ``{"tool": name, "args": {...}}`` is a tool call. It records the
    tools it was bound with and the messages it saw."""

    script: list[Any] = []
    seen: list[list[str]] = []
    bound_tools: list[Any] = []

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any) -> Any:
        from langchain_core.utils.function_calling import convert_to_openai_tool

        tools = [convert_to_openai_tool(t) for t in tools]
        self.bound_tools.append({"tools": [t["function"]["name"] for t in tools], "tool_choice": tool_choice})
        return self.bind(tools=tools, tool_choice=tool_choice, **kwargs)

    def _generate(self, messages: list[BaseMessage], stop=None, run_manager=None, **kwargs) -> ChatResult:
        self.seen.append([m.text for m in messages])
        reply = self.script.pop(0) if self.script else "I do not know."
        if isinstance(reply, dict):
            message = AIMessage(content="", tool_calls=[{"name": reply["tool"], "args": reply["args"], "id": "c1"}])
        else:
            message = AIMessage(content=reply)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(self, messages, stop=None, run_manager=None, **kwargs):
        result = self._generate(messages, stop, run_manager, **kwargs)
        for word in result.generations[0].message.text.split(" "):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=word + " "))
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk


@pytest.fixture(scope="module")
def local() -> LocalLLM:
    llm = LocalLLM()
    llm.load()
    return llm


# -- the local model is a BaseChatModel ----------------------------------------------------------
def test_the_local_model_is_a_langchain_chat_model(local):
    assert isinstance(local, BaseChatModel)
    handler = Recorder()
    reply = local.invoke(MESSAGES, {"callbacks": [handler]}, max_new_tokens=24)
    assert isinstance(reply, AIMessage) and reply.text
    assert len(handler.starts) == 1 and handler.ends == 1 and not handler.errors
    assert handler.starts[0]["model"] == local.model_spec


def test_stream_yields_the_same_reply_as_chat_token_by_token(local):
    chunks = [c.text for c in local.stream(MESSAGES, max_new_tokens=30)]
    assert len([c for c in chunks if c]) > 3
    assert "".join(chunks).strip() == local.chat(MESSAGES, max_new_tokens=30)


def test_bind_and_the_early_stop_end_the_reply_cleanly(local):
    handler = Recorder()
    short = local.bind(max_new_tokens=40, stop_when=lambda text: "." in text)
    reply = short.invoke(MESSAGES, {"callbacks": [handler]}).text
    full = local.chat(MESSAGES, max_new_tokens=40)
    assert reply.count(".") == 1 and full.startswith(reply.rstrip("."))  # stopped at the first sentence
    assert handler.ends == 1 and not handler.errors  # a stop is an ordinary end, not an error


def test_label_scores_are_an_invoke_with_probabilities_in_the_metadata(local):
    handler = Recorder()
    reply = local.invoke(MESSAGES, {"callbacks": [handler]}, labels=["search", "answer", "draw"])
    probs = reply.response_metadata["label_probs"]
    assert set(probs) == {"search", "answer", "draw"} and abs(sum(probs.values()) - 1) < 1e-6
    assert reply.text == max(probs, key=probs.get)
    assert probs == pytest.approx(local.score_labels(MESSAGES, ["search", "answer", "draw"]))
    assert handler.ends == 1


def test_langchain_stop_sequences_end_the_reply(local):
    full = local.invoke(MESSAGES, max_new_tokens=40).text
    word = full.split()[3]  # a word from the middle of the full reply
    reply = local.invoke(MESSAGES, stop=[word], max_new_tokens=40).text
    assert reply.endswith(word) and full.startswith(reply) and len(reply) < len(full)


# -- any BaseChatModel as the agent's LLM --------------------------------------------------------
def test_a_foreign_chat_model_is_wrapped_and_a_fake_protocol_object_is_not():
    chat = ScriptedChat(script=["hello there"])
    wrapped = as_llm(chat)
    assert isinstance(wrapped, LangChainLLM) and wrapped.model is chat
    assert as_llm(LocalLLM()) .__class__ is LocalLLM
    assert wrapped.chat(MESSAGES) == "hello there"


def test_a_foreign_model_without_logprobs_chooses_a_label_by_structured_output_or_one_word():
    llm = LangChainLLM(ScriptedChat(script=[{"tool": "route", "args": {"label": "draw"}}]))
    assert llm.score_labels(MESSAGES, ["search", "answer", "draw"]) == {"search": 0.0, "answer": 0.0, "draw": 1.0}
    assert llm.label_method == "structured"
    parse = LangChainLLM(ScriptedChat(script=["answer."]), label_method="parse")
    assert parse.score_labels(MESSAGES, ["search", "answer", "draw"])["answer"] == 1.0


@pytest.fixture()
def agent_with(tmp_path):
    def make(script: list[Any], **settings: Any) -> tuple[Agent, ScriptedChat, Recorder]:
        chat = ScriptedChat(script=list(script), seen=[], bound_tools=[])
        handler = Recorder()
        agent = Agent(Settings(out_dir=tmp_path / "runs", **settings), callbacks=[handler],
                      tools=Toolbox(Settings(out_dir=tmp_path / "runs", **settings), llm=chat, image=FakeImage()))
        agent.tools.router._classifier = None  # the LLM's tool call decides alone here
        return agent, chat, handler
    return make


def _decide_event(result) -> dict:
    events = [json.loads(line) for line in Path(result.trace_path).read_text().splitlines()]
    return next(e for e in events if e["step"] == "decide")


def test_decide_tools_the_draw_call_gives_the_image_prompt_without_a_rewrite(agent_with):
    agent, chat, handler = agent_with([{"tool": "draw", "args": {"scene": "a red fox asleep in the snow, watercolour"}}],
                                      decide="tools")
    result = agent.ask(text="could you show me a fox sleeping in the snow")
    assert result.route == "draw" and result.error is None
    assert result.image_prompt.startswith("a red fox asleep in the snow, watercolour")
    assert chat.bound_tools[0]["tools"] == ["search_wikipedia", "answer_directly", "draw"]
    assert chat.bound_tools[0]["tool_choice"] == "any"
    decide = _decide_event(result)
    assert decide["data"]["evidence"]["llm"]["method"] == "tools"
    assert decide["data"]["tool_args"] == {"scene": "a red fox asleep in the snow, watercolour"}
    assert "tool call" in result.route_reason
    assert len(chat.seen) == 1  # one LLM call in all: the decision; the draw step did not rewrite
    assert len(handler.starts) == handler.ends == 1


def test_decide_tools_the_search_call_gives_the_search_query(agent_with):
    agent, chat, _ = agent_with([{"tool": "search_wikipedia", "args": {"query": "Mona Lisa"}}, "unused"],
                                decide="tools", image=False)
    result = agent.ask(text="who was it that painted the mona lisa")
    assert result.route == "search" and result.search_query == "Mona Lisa"
    assert "Leonardo" in result.answer


def test_decide_tools_falls_back_to_labels_for_a_model_that_cannot_call_tools(tmp_path, local):
    settings = Settings(out_dir=tmp_path, decide="tools", image=False)
    agent = Agent(settings, tools=Toolbox(settings, llm=local))
    result = agent.ask(text="What is 7 times 8?")
    evidence = _decide_event(result)["data"]["evidence"]["llm"]
    assert evidence["method"] == "logits" and "cannot call tools" in evidence["notes"][0]
    assert "56" in result.answer


def test_a_tool_call_naming_no_route_is_retried_then_falls_back(agent_with):
    agent, _, _ = agent_with([{"tool": "weather", "args": {}}, "not a tool call"], decide="tools", image=False)
    result = agent.ask(text="hello")
    decide = _decide_event(result)
    assert result.route == "search" and decide["data"]["fallback"] is True
    assert "weather" in decide["data"]["errors"][0] and "no tool call" in decide["data"]["errors"][1]


# -- callbacks and LangGraph streaming -----------------------------------------------------------
def test_callbacks_see_every_llm_call_of_a_turn(tmp_path, local):
    handler = Recorder()
    settings = Settings(out_dir=tmp_path, image=False)
    agent = Agent(settings, tools=Toolbox(settings, llm=local, image=FakeImage()), callbacks=[handler])
    result = agent.ask(text="Give me one tip for sleeping better.")
    assert result.route == "answer" and result.answer
    names = [s["name"] for s in handler.starts]
    # the route calibration and decision (label scores), then the answer
    assert names.count("score_labels") >= 1 and names[-1] != "score_labels"
    assert handler.ends == len(handler.starts) and not handler.errors
    answer_call = handler.starts[-1]
    assert "askdraw:answer" in answer_call["tags"]
    assert "".join(handler.tokens).strip().startswith(result.answer.split()[0])


def test_graph_streams_answer_tokens_in_messages_and_custom_modes(tmp_path, local):
    settings = Settings(out_dir=tmp_path, image=False)
    ctx = Context(tools=Toolbox(settings, llm=local, image=FakeImage()))
    run = {"question": "Give me one tip for sleeping better.", "run_id": "r1", "run_dir": str(tmp_path / "r1"),
           "force_route": "answer"}
    messages, custom, final = [], [], {}
    for mode, chunk in build_graph().stream(run, context=ctx, stream_mode=["messages", "custom", "values"]):
        if mode == "messages":
            message, metadata = chunk
            messages.append((metadata["langgraph_node"], message.text))
        elif mode == "custom":
            custom.append(chunk)
        else:
            final = chunk
    nodes = {node for node, _ in messages}
    assert final["route"] == "answer", final
    # the answer's tokens (the route labels and any rewrite are tagged "nostream"), then the
    # conversation's messages as the finish node adds them
    assert nodes == {"answer", "finish"}
    assert [text for node, text in messages if node == "finish"][-1] == final["answer"]
    streamed = "".join(text for node, text in messages if node == "answer")
    assert streamed.strip() and final["answer"].startswith(streamed.strip()[:20])
    tokens = [c["text"] for c in custom if c.get("type") == "token"]
    assert "".join(tokens) == streamed
    assert [c["event"]["step"] for c in custom if c.get("type") == "step"][-1] == "finish"


def test_langsmith_environment_variables_trace_every_llm_call_to_their_endpoint(tmp_path):
    """The standard LANGSMITH_* variables send the runs to LangSmith (here a loopback stand-in for
    its ingestion API): the graph's run and, under it, the LLM's, with no askdraw code involved."""
    import http.server
    import os
    import subprocess
    import sys
    import threading

    posted: list[dict] = []

    class Ingest(http.server.BaseHTTPRequestHandler):
        def _reply(self, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # /info: batch ingestion as JSON, not multipart
            self._reply({"version": "0.10", "batch_ingest_config": {
                "use_multipart_endpoint": False, "size_limit": 100, "size_limit_bytes": 20_971_520,
                "scale_up_nthreads_limit": 1, "scale_up_qsize_trigger": 1000, "scale_down_nempty_trigger": 4}})

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            if self.path.endswith("/runs/batch"):
                batch = json.loads(body)
                posted.extend(batch.get("post") or [])
            self._reply({})

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ingest)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {**os.environ, "LANGSMITH_TRACING": "true", "LANGSMITH_API_KEY": "test-key",
               "LANGSMITH_ENDPOINT": f"http://127.0.0.1:{server.server_port}", "LANGSMITH_PROJECT": "askdraw-test",
               "OMP_NUM_THREADS": "1"}
        code = ("from agent import Agent; r = Agent(out_dir=%r, image=False).ask("
                "text='Give me one tip for sleeping better.', route='answer'); print(r.answer)" % str(tmp_path))
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600,
                              cwd=Path(__file__).resolve().parents[1])
    finally:
        server.shutdown()
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr[-2000:]
    runs = {r["id"]: r for r in posted}
    graph = [r for r in runs.values() if r["name"] == "askdraw" and not r.get("parent_run_id")]
    llm = [r for r in runs.values() if r["run_type"] == "llm"]
    assert len(graph) == 1 and graph[0]["session_name"] == "askdraw-test"
    assert llm and all(r["trace_id"] == graph[0]["id"] for r in llm)
    assert any("askdraw:answer" in (r.get("tags") or []) for r in llm)


def test_label_scores_work_while_the_graph_streams_messages(tmp_path, local):
    """LangGraph's messages mode attaches a streaming handler, which makes invoke() stream: label
    scoring must still be one whole answer (a decision, not text), and the route is decided."""
    settings = Settings(out_dir=tmp_path, image=False)
    ctx = Context(tools=Toolbox(settings, llm=local, image=FakeImage()))
    run = {"question": "Write one short sentence about the sea.", "run_id": "r2", "run_dir": str(tmp_path / "r2")}
    final = {}
    for mode, chunk in build_graph().stream(run, context=ctx, stream_mode=["messages", "values"]):
        if mode == "values":
            final = chunk
    assert final["route_fallback"] is False and "(LLM " in final["route_reason"], final["route_reason"]


def test_decide_auto_keeps_the_label_choice_when_the_tool_call_fails(agent_with):
    """auto: a model without label probabilities that can call tools is asked for a tool call;
    when it makes none, its structured label choice decides, and it is not asked again."""
    route_draw = {"tool": "route", "args": {"label": "draw"}}
    agent, chat, _ = agent_with([route_draw, "I would draw it.", "a fox asleep in the snow",
                                 route_draw, "a wolf howling at the moon"], decide="auto", image=False)
    first = agent.ask(text="could you show me a fox sleeping in the snow")
    llm = _decide_event(first)["data"]["evidence"]["llm"]
    assert first.route == "draw" and llm["method"] == "structured"
    assert "so the labels decide" in llm["notes"][0]
    second = agent.ask(text="show me a wolf howling at the moon")
    assert second.route == "draw" and "notes" not in _decide_event(second)["data"]["evidence"]["llm"]
    route_tool_calls = [b for b in chat.bound_tools if "draw" in b["tools"]]
    assert len(route_tool_calls) == 1 and len(chat.seen) == 5  # no second tool call
