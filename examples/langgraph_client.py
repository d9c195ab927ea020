"""Ask askdraw through LangGraph's local server.

Start the server from any folder (it writes its state into ``.langgraph_api/`` there), with the
repository's ``langgraph.json``::

    langgraph dev --no-browser --no-reload --config /path/to/askdraw/langgraph.json

(the server resolves "./agent/graph.py" from its working directory, so run it in the repository,
or in a folder holding a link to the repository's ``agent/``), then::

    python examples/langgraph_client.py "Who painted the Mona Lisa?"
    python examples/langgraph_client.py --thread THREAD_ID "When was he born?"   # a follow-up
    python examples/langgraph_client.py --stream "Give me one tip for sleeping better."   # tokens as they come

It prints the route and why, the answer, its sources, the image path (or why no image was
generated), the run folder (``trace.jsonl`` is there) and the thread id for follow-ups. The models
are the server's: set ``ASKDRAW_*`` variables (``ASKDRAW_LLM``, ``ASKDRAW_IMAGE_MODEL``,
``ASKDRAW_OUT_DIR``, ...) in the server's environment.
"""

from __future__ import annotations

import argparse
import sys

import httpx
from langgraph_sdk import get_sync_client


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("question", help="what to ask")
    parser.add_argument("--url", default="http://127.0.0.1:2024", help="the server (default: %(default)s)")
    parser.add_argument("--thread", help="continue this thread (a conversation); default: a new one")
    parser.add_argument("--stream", action="store_true",
                        help="print the answer token by token as the server generates it, and the status lines")
    args = parser.parse_args(argv)

    client = get_sync_client(url=args.url, api_key=None)  # a local server needs no key
    try:
        thread_id = args.thread or client.threads.create()["thread_id"]
        if args.stream:
            out = stream(client, thread_id, args.question)
        else:
            out = client.runs.wait(thread_id, "askdraw", input={"question": args.question})
    except httpx.HTTPError as exc:  # server not running, wrong URL, unknown thread
        print(f"error: LangGraph server at {args.url}: {exc} (start it with `langgraph dev`)", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the run failed on the server (its trace is in the run folder)
        print(f"error: the run failed on the server: {exc}", file=sys.stderr)
        return 1
    run_dir = out.get("run_dir")

    if out.get("standalone_question"):
        print(f"understood: {out['standalone_question']}")
    print(f"route:      {out.get('route')} - {out.get('route_reason')}")
    print(f"answer:     {out.get('answer')}")
    for i, source in enumerate(out.get("sources") or [], 1):
        print(f"source {i}:   {source['title']} - {source['url']}")
    drawn = "generated" if out.get("image_generated") else "NOT generated (a labelled card)"
    print(f"image:      {out.get('image_path')} [{drawn}]")
    for notice in out.get("notices") or []:
        print(f"notice:     {notice}")
    print(f"run folder: {run_dir}")
    print(f"thread:     {thread_id}")
    return 0


def stream(client, thread_id: str, question: str) -> dict:
    """Run the question with LangGraph's streaming: status lines from the nodes (stream mode
    "custom", to stderr) and the answer's LLM tokens ("messages-tuple", from the answer node) as they
    are generated. Returns the final state."""
    out: dict = {}
    started = False
    for part in client.runs.stream(thread_id, "askdraw", input={"question": question},
                                   stream_mode=["messages-tuple", "custom", "values"]):
        if part.event == "messages":
            chunk, metadata = part.data
            if metadata.get("langgraph_node") == "answer" and chunk.get("content"):
                if not started:
                    print("streamed:   ", end="")
                    started = True
                print(chunk["content"], end="", flush=True)
        elif part.event == "custom" and part.data.get("type") == "status":
            print(f"[{part.data.get('text')}]", file=sys.stderr, flush=True)
        elif part.event == "values":
            out = part.data
        elif part.event == "error":
            raise RuntimeError(part.data)
    if started:
        print()
    return out


if __name__ == "__main__":
    raise SystemExit(main())
