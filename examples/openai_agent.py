"""An agent on the official ``openai`` package: only ``base_url`` points at SAGA.

    python examples/openai_agent.py [--base-url http://127.0.0.1:8000/v1]

The ``x-session-id`` header makes the agent's calls one SAGA session (``x-smg-routing-key``
and ``X-Dynamo-Session-ID`` work too). Tool gaps need no extra calls: a response that ends in
tool calls opens the gap and the agent's next request closes it. Without the header each
request is scheduled on its own.
"""

from __future__ import annotations

import argparse
import sys
import uuid

import openai

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "web_fetch",
            "description": "Fetch a web page",
            "parameters": {"type": "object", "properties": {"url": {"type": "string"}}},
        },
    }
]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    ap.add_argument("--api-key", default="sk-local")
    ap.add_argument("--tasks", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    for task in range(args.tasks):
        session = f"browser-{uuid.uuid4().hex[:8]}"
        client = openai.OpenAI(
            base_url=args.base_url,
            api_key=args.api_key,
            default_headers={"x-session-id": session, "x-saga-agent-type": "browser-agent"},
        )
        messages = [
            {"role": "system", "content": "You are a browsing agent. " * 30},
            {"role": "user", "content": f"Task {task}: find the opening hours of the museum."},
        ]
        for step in range(args.steps):
            stream = client.chat.completions.create(
                model="default", messages=messages, max_tokens=32, tools=TOOLS, stream=True
            )
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            messages.append({"role": "assistant", "content": text})
            messages.append({"role": "user", "content": f"[page {step}] Opening hours: 9-17."})
        final = client.chat.completions.create(model="default", messages=messages, max_tokens=16)
        usage = final.usage
        print(
            f"task {task} ({session}): {args.steps + 1} calls, "
            f"{usage.completion_tokens if usage else '?'} tokens in the last answer"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
