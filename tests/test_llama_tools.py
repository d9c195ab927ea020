"""Native tool calls, logprobs and streaming through ``ChatOpenAI`` against the real llama.cpp server
(issue 19, point 2).

One ``python -m llama_cpp.server --chat_format chatml-function-calling`` per module, on the starter
GGUF. That chat format constrains a reply with a grammar: ``tool_choice="auto"`` first chooses
``message:`` or ``functions.<name>:`` among the bound tools, a named ``tool_choice`` goes straight to
the tool, and the arguments follow the tool's JSON schema. So the tests assert what the grammar
guarantees (a known name, arguments that parse into the tool's fields), never the 135M model's
judgment. The GGUF's own chat template ignores ``tools`` (no tool call unless one is named);
``bench/eval_llama_tool_calls.py`` measures both formats on 30 requests.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

try:
    from tests import openai_servers as srv
except ImportError:  # tests/ itself on sys.path
    import openai_servers as srv  # type: ignore[no-redef]



def on_server(test):
    """A test that needs the real server (skipped without llama-cpp-python[server]; slow)."""
    return srv.requires_llama_server(pytest.mark.slow(test))


BENCH = Path(__file__).resolve().parents[1] / "bench" / "eval_llama_tool_calls.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_eval_llama_tool_calls", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _bench()


@pytest.fixture(scope="module")
def llama_url():
    srv.skip_unless_llama_server()
    with srv.llama_server(n_threads=1, chat_format="chatml-function-calling",
                          extra_args=("--cache", "True")) as url:
        yield url


@pytest.fixture(scope="module")
def llm(llama_url):
    # max_tokens bounds text replies only; a tool call's length is bounded by the schema's maxLength
    # (a named call cut off by max_tokens would be broken JSON), so it is generous here
    return bench.chat_model(llama_url, 512)


@pytest.fixture(scope="module")
def text_llm(llama_url):
    return bench.chat_model(llama_url, 24)


@on_server
def test_the_chat_format_reaches_the_server_command_line(llama_url):
    command = llama_url.log_path.read_text().splitlines()[0]
    assert "--chat_format chatml-function-calling" in command


@on_server
@pytest.mark.parametrize("tool, request_text", [
    ("search_wikipedia", "Who painted the Mona Lisa?"),
    ("answer_directly", "Good morning!"),
    ("draw", "Draw a cat sleeping on a windowsill."),
])
def test_a_named_tool_choice_returns_one_well_formed_call(llm, tool, request_text):
    reply = llm.bind_tools(bench.bounded_tools(), tool_choice=tool).invoke(bench.messages(request_text))
    row = bench.check_call(reply)
    assert row["well_formed"], row
    assert row["tool"] == tool and reply.response_metadata["finish_reason"] == "tool_calls"
    args = reply.tool_calls[0]["args"]
    getattr(bench, tool).model_validate(args)  # the tool's own schema accepts the arguments
    if tool == "answer_directly":
        assert args == {}
    else:
        assert len(args[bench.ARG[tool]]) <= {"query": 60, "scene": 120}[bench.ARG[tool]]  # the grammar kept maxLength


@on_server
@pytest.mark.parametrize("request_text", [
    "When was the Eiffel Tower built?",
    "Good morning!",
    "Draw a cat sleeping on a windowsill.",
])
def test_auto_tool_choice_is_a_call_among_the_three_or_an_empty_message(llm, request_text):
    reply = llm.bind_tools(bench.bounded_tools(), tool_choice="auto").invoke(bench.messages(request_text))
    assert reply.invalid_tool_calls == []
    if reply.tool_calls:
        row = bench.check_call(reply)
        assert row["well_formed"], row
        assert reply.response_metadata["finish_reason"] == "tool_calls"
    else:
        # the grammar's other branch, "message:": llama-cpp-python 0.3.36 then constrains the text
        # with its follow-up grammar (a function name or end of turn), so no usable text comes back
        assert reply.content in {""} | {f"functions.{name}:" for name in bench.TOOL_NAMES}


@on_server
def test_required_tool_choice_is_refused_by_this_chat_format(llm):
    # chatml-function-calling handles "none", "auto" and a named tool; "required" (bind_tools' "any")
    # fails an assertion in llama-cpp-python (HTTP 500): the decision must ask with "auto" instead
    import openai

    with pytest.raises(openai.InternalServerError):
        llm.bind_tools(bench.TOOLS, tool_choice="any").invoke(bench.messages("Good morning!"))


@on_server
def test_logprobs_come_back_without_tools_and_not_with_them(llm, text_llm):
    reply = text_llm.bind(logprobs=True, top_logprobs=20).invoke(bench.messages("Who painted the Mona Lisa?"))
    content = reply.response_metadata["logprobs"]["content"]
    assert content and len(content[0]["top_logprobs"]) >= 10
    logprobs = [alt["logprob"] for alt in content[0]["top_logprobs"]]
    assert all(lp <= 0 for lp in logprobs) and logprobs == sorted(logprobs, reverse=True)
    assert content[0]["token"] == reply.content[: len(content[0]["token"])]

    # with tools bound, this chat format does not pass logprobs on: the label decision cannot use them
    with_tools = llm.bind_tools(bench.bounded_tools(), tool_choice="search_wikipedia").bind(
        logprobs=True, top_logprobs=20).invoke(bench.messages("Who painted the Mona Lisa?"))
    assert with_tools.tool_calls and not with_tools.response_metadata.get("logprobs")


@on_server
def test_stream_yields_the_reply_token_by_token(text_llm):
    pieces = [chunk.content for chunk in text_llm.stream(bench.messages("Tell me a short joke."))]
    text_pieces = [p for p in pieces if p]
    assert len(text_pieces) > 1
    assert "".join(text_pieces).strip()


def test_the_bench_scores_tool_calls_by_their_form_and_arguments():
    # the scoring the bench and the tests above rely on, on scripted replies
    from langchain_core.messages import AIMessage

    def reply(*calls, invalid=(), content=""):
        return AIMessage(content=content, tool_calls=[{"name": n, "args": a, "id": f"c{i}"} for i, (n, a) in
                                                      enumerate(calls)],
                         invalid_tool_calls=[{"name": n, "args": a, "id": "x", "error": None} for n, a in invalid])

    good = bench.check_call(reply(("draw", {"scene": "a cat asleep on a windowsill"})), "draw", "cat")
    assert good["well_formed"] and good["right_tool"] and good["usable"]
    assert not bench.check_call(reply(("draw", {"scene": "]["})), "draw", "cat")["usable"]
    assert not bench.check_call(reply(("search_wikipedia", {"query": "x " * 50 + "tokyo"})), "fact", "tokyo")["usable"]
    wrong = bench.check_call(reply(("draw", {"scene": "Tokyo"})), "fact", "tokyo")
    assert wrong["well_formed"] and not wrong["right_tool"] and not wrong["usable"]
    assert bench.check_call(reply(("answer_directly", {})), "direct")["usable"]
    for broken in (reply(("shout", {})), reply(("draw", {})), reply(("draw", {"scene": 3})),
                   reply(("draw", {"scene": "a"}), ("answer_directly", {})),
                   reply(invalid=[("draw", '{"scene": "a ca')]), reply(content="draw")):
        assert not bench.check_call(broken, "draw", "a")["well_formed"]


@on_server
@pytest.mark.parametrize("kind", ["chatopenai", "endpoint"])
def test_decide_tools_makes_the_route_one_tool_call_on_the_real_server(llama_url, tmp_path, kind):
    """askdraw's decide=tools over this server, through ChatOpenAI and through its own endpoint
    model: the server refuses a required call (HTTP 500), so the decision asks again with "auto"
    (once per model), and the call it gets back is the LLM's vote, recorded in the trace."""
    import json

    from langchain_openai import ChatOpenAI

    from agent import Agent

    if kind == "chatopenai":
        model = ChatOpenAI(base_url=llama_url, api_key="none", model=srv.LLAMA_MODEL_ALIAS, temperature=0)
        agent = Agent(llm=model, out_dir=tmp_path, decide="tools", image=False)
    else:
        agent = Agent(llm_endpoint=llama_url, out_dir=tmp_path, decide="tools", image=False)
    for question in ("Show me a red fox sleeping in the snow", "What is 12 times 7?"):
        result = agent.ask(text=question)
        assert result.error is None, result.error
        events = [json.loads(line) for line in Path(result.trace_path).read_text().splitlines()]
        decide = next(e for e in events if e["step"] == "decide")
        llm = decide["data"]["evidence"]["llm"]
        assert decide["data"]["fallback"] is False and llm["method"] == "tools"
        assert llm["tool_call"]["name"] in {"search_wikipedia", "answer_directly", "draw"}
        assert llm["tool_choice"] == "auto"
        assert "tool call" in result.route_reason
    assert result.answer.startswith("12 × 7 = 84")
