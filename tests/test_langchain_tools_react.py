"""The agent's LangChain tools inside LangGraph's prebuilt ReAct agent and ToolNode.

Only the tool-calling chat model that drives the loop is scripted (its tool calls are fixed
here, reading the earlier tool results where a real model would); the tools are the real ones
on real starter models: the offline Wikipedia, the starter LLM and a tiny random diffusers
pipeline.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.prebuilt import ToolNode, create_react_agent
from PIL import Image

from agent.agent import Agent

pytestmark = pytest.mark.filterwarnings("ignore:create_react_agent has been moved")

Step = AIMessage | Callable[[list[BaseMessage]], AIMessage]


def call(name: str, **args: Any) -> dict[str, Any]:
    return {"name": name, "args": args, "id": f"call_{uuid.uuid4().hex[:8]}", "type": "tool_call"}


class ScriptedToolCaller(BaseChatModel):
    """A tool-calling chat model whose replies are a script: each step is an AIMessage, or a
    function of the messages so far (to pass an earlier tool result on, as a model would).
    ``bind_tools`` records the tools' OpenAI schemas (what a real model would be sent)."""

    script: list[Any]
    seen: list[list[BaseMessage]] = []
    bound: list[dict[str, Any]] = []

    @property
    def _llm_type(self) -> str:
        return "scripted-tool-caller"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedToolCaller:
        self.bound = [convert_to_openai_tool(t) for t in tools]
        return self

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        self.seen.append(list(messages))
        if not self.script:
            raise AssertionError("the agent asked the model for more replies than the script has")
        step = self.script.pop(0)
        reply = step(messages) if callable(step) else step
        return ChatResult(generations=[ChatGeneration(message=reply)])


def tool_results(messages: list[BaseMessage]) -> list[ToolMessage]:
    return [m for m in messages if isinstance(m, ToolMessage)]


def first_passage(search_result: str) -> tuple[str, str]:
    """The title and text of passage [1] in search_wikipedia's result."""
    head, text = search_result.split("\n\n")[0].split("\n", 1)
    return head.removeprefix("[1] ").rsplit(" (", 1)[0], text


QUESTION = "Who painted the Mona Lisa?"


@pytest.mark.slow
def test_a_react_agent_searches_answers_and_draws_with_the_real_tools(tmp_path, monkeypatch, tiny_model):
    monkeypatch.setenv("ASKDRAW_HOME", str(tmp_path / "home"))  # the images' cache folder
    agent = Agent(out_dir=tmp_path, image_model=str(tiny_model), image_steps=2, image_size=64)

    def answer_from_the_passage(messages: list[BaseMessage]) -> AIMessage:
        title, text = first_passage(messages[-1].content)
        return AIMessage("", tool_calls=[call("write_answer", question=QUESTION, context=text, title=title)])

    def final(messages: list[BaseMessage]) -> AIMessage:
        answer, image = (m.content for m in tool_results(messages)[1:])
        return AIMessage(f"{answer}\n\n{image}")

    model = ScriptedToolCaller(script=[
        AIMessage("", tool_calls=[call("search_wikipedia", query="Mona Lisa painter")]),
        answer_from_the_passage,
        AIMessage("", tool_calls=[call("generate_image", prompt="portrait of a woman with a faint smile, "
                                                                "oil painting, Renaissance style", seed=7)]),
        final,
    ])
    react = create_react_agent(model, agent.tools.as_langchain_tools())
    out = react.invoke({"messages": [HumanMessage(QUESTION + " Draw her too.")]})

    # the model was offered the five tools with their schemas, and saw each tool result
    assert [t["function"]["name"] for t in model.bound] == [
        "transcribe_audio", "search_wikipedia", "write_answer", "rewrite_image_prompt", "generate_image"]
    assert model.bound[-1]["function"]["parameters"]["properties"]["seed"]["minimum"] == 0
    assert [type(m).__name__ for m in model.seen[-1]] == [
        "HumanMessage", "AIMessage", "ToolMessage", "AIMessage", "ToolMessage", "AIMessage", "ToolMessage"]

    search, answer, image = tool_results(out["messages"])
    assert [(m.name, m.status) for m in (search, answer, image)] == [
        ("search_wikipedia", "success"), ("write_answer", "success"), ("generate_image", "success")]
    assert search.content.startswith("[1] ") and "Mona Lisa" in first_passage(search.content)[0]
    assert "Leonardo" in answer.content.split("\n\n")[0], answer.content  # the answer itself, not the quote
    assert image.content.startswith(f"Generated an image with {tiny_model} (seed 7, 2 steps, 64x64"), image.content
    path = Path(image.content.rsplit(": ", 1)[-1])
    assert image.artifact["path"] == str(path) and image.artifact["generated"] is True
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (64, 64) and im.text["askdraw:generated"] == "true"
    assert out["messages"][-1].content == f"{answer.content}\n\n{image.content}"
    assert model.script == []  # every scripted step ran, none left over


def test_bad_tool_calls_come_back_as_errors_and_the_agent_goes_on(tmp_path):
    """Bad arguments and a failing tool become error ToolMessages the model reads; it then
    corrects itself and the loop ends normally."""
    model = ScriptedToolCaller(script=[
        AIMessage("", tool_calls=[call("generate_image", prompt="a green owl", seed=-1),
                                  call("write_answer", context="The sky is blue."),
                                  call("transcribe_audio", path=str(tmp_path / "missing.wav"))]),
        AIMessage("", tool_calls=[call("search_wikipedia", query="Mona Lisa")]),
        lambda messages: AIMessage("Found: " + messages[-1].content.split("\n", 1)[0]),
    ])
    react = create_react_agent(model, Agent(out_dir=tmp_path).tools.as_langchain_tools())
    out = react.invoke({"messages": [HumanMessage("Tell me about the Mona Lisa.")]})

    seed, question, audio, search = tool_results(out["messages"])
    assert [m.status for m in (seed, question, audio, search)] == ["error", "error", "error", "success"]
    assert seed.content == ("Invalid arguments for generate_image: seed: Input should be greater than or equal "
                            "to 0. Call generate_image again with corrected arguments.")
    assert question.content.startswith("Invalid arguments for write_answer: question: Field required.")
    assert audio.content == f"transcribe_audio failed: audio file not found: {tmp_path / 'missing.wav'}"
    # the model's next turn saw all three errors, and the loop went on to a final answer
    assert [m.content for m in tool_results(model.seen[1])] == [seed.content, question.content, audio.content]
    assert out["messages"][-1].content.startswith("Found: [1] ") and "Mona Lisa" in out["messages"][-1].content


def test_the_tools_handle_their_own_errors_even_in_a_tool_node_that_raises(tmp_path):
    """ToolNode(handle_tool_errors=False) re-raises any exception a tool raises: these tools
    turn bad input into a result themselves, so any tool-calling loop can use them."""
    node = ToolNode(Agent(out_dir=tmp_path).tools.as_langchain_tools(), handle_tool_errors=False)
    model = ScriptedToolCaller(script=[
        AIMessage("", tool_calls=[call("search_wikipedia", query="   "), call("generate_image", prompt="owl",
                                                                             seed=2**40),
                                  call("rewrite_image_prompt")]),
        AIMessage("I could not use the tools."),
    ])
    out = create_react_agent(model, node).invoke({"messages": [HumanMessage("Draw an owl.")]})
    errors = tool_results(out["messages"])
    assert [(m.name, m.status) for m in errors] == [
        ("search_wikipedia", "error"), ("generate_image", "error"), ("rewrite_image_prompt", "error")]
    assert "query: String should have at least 1 character" in errors[0].content
    assert "seed: Input should be less than or equal to 4294967295" in errors[1].content
    assert "request: Field required" in errors[2].content
    assert out["messages"][-1].content == "I could not use the tools."
