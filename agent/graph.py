"""Build and compile the askdraw graph.

    START -> start_turn -> transcribe (only with audio) -> decide --search--> search_wikipedia (<= N tries) -> answer
                                                                   (a ZIM or live Wikipedia: -> source_image -> answer)
                                                    --answer--> answer
                                                    --draw----> draw (image prompt from the request)
    answer -> rewrite_image_prompt -> generate_image -> finish -> END
    (no picture helps: rewrite_image_prompt -> finish; tools/picture_helps.py decides)
    draw   ----------------------------> generate_image
    (text only, ``want_image=False``: answer -> finish, draw -> finish)

``graph`` (below) is what ``langgraph.json`` exports for LangGraph tooling.
"""

from __future__ import annotations

from typing import Literal

from langgraph.graph import END, START, StateGraph

from agent import nodes
from agent.context import Context
from agent.state import InputState, OutputState, State


def _entry(state: State) -> Literal["transcribe", "decide"]:
    return "transcribe" if state.get("audio_path") else "decide"


def _after_answer(state: State) -> Literal["rewrite_image_prompt", "finish"]:
    return "finish" if state.get("want_image") is False else "rewrite_image_prompt"


def _after_prompt(state: State) -> Literal["generate_image", "finish"]:
    return "finish" if state.get("image_skipped_reason") else "generate_image"


def _after_draw(state: State) -> Literal["generate_image", "finish"]:
    return "finish" if state.get("want_image") is False else "generate_image"


def build_graph(checkpointer=None):
    builder = StateGraph(State, input_schema=InputState, output_schema=OutputState, context_schema=Context)
    builder.add_node("start_turn", nodes.start_turn)
    builder.add_node("transcribe", nodes.transcribe)
    # destinations: the step wrapper (agent.step) hides the nodes' Command[Literal[...]] return types, so the
    # drawn graph (Studio, draw_mermaid) learns the routes from here.
    builder.add_node("decide", nodes.decide, destinations=("search_wikipedia", "answer", "draw"))
    builder.add_node("search_wikipedia", nodes.search_wikipedia,
                     destinations=("search_wikipedia", "source_image", "answer"))
    builder.add_node("source_image", nodes.source_image)
    builder.add_node("answer", nodes.answer)
    builder.add_node("draw", nodes.draw)
    builder.add_node("rewrite_image_prompt", nodes.rewrite_image_prompt)
    builder.add_node("generate_image", nodes.generate_image)
    builder.add_node("finish", nodes.finish)

    builder.add_edge(START, "start_turn")
    builder.add_conditional_edges("start_turn", _entry)
    builder.add_edge("transcribe", "decide")
    builder.add_edge("source_image", "answer")
    builder.add_conditional_edges("answer", _after_answer)
    builder.add_conditional_edges("rewrite_image_prompt", _after_prompt)
    builder.add_conditional_edges("draw", _after_draw)
    builder.add_edge("generate_image", "finish")
    builder.add_edge("finish", END)
    return builder.compile(checkpointer=checkpointer, name="askdraw")


graph = build_graph()
