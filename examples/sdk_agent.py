"""A coding agent on the SAGA SDK: LLM calls with tool calls between them.

    saga emulate --replicas 2 --port 30000 --time-scale 50 --enable-session-radix-cache &
    saga serve --replica http://127.0.0.1:30000 --replica http://127.0.0.1:30001 &
    python examples/sdk_agent.py [--target 127.0.0.1:50051] [--eventlog events.jsonl]

Each task is one session: the agent thinks (a streamed call), runs a tool, reads the result,
and repeats; SAGA keeps the session on one replica and its KV cached across the tool gaps.
With --eventlog the SDK writes the sessions in SAGA's event-log format, which
``saga graphs build`` turns into Agent Execution Graphs.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys

from saga.client import RejectedError, SagaClient

SYSTEM = "You are a coding agent. Tools: pytest, read_file, edit_file.\n" * 20


def run_tool(name: str, rng: random.Random) -> str:
    # A real agent would run the tool; this one runs a tiny real command of its own.
    out = subprocess.run(
        [sys.executable, "-c", f"print('{name} ok', {rng.randint(1, 99)})"], capture_output=True, text=True
    )
    return out.stdout.strip()


def run_task(client: SagaClient, task: int, steps: int, rng: random.Random) -> None:
    with client.session(agent="swe-agent", expected_calls=steps) as s:
        context = SYSTEM + f"Task {task}: fix the failing test.\n"
        for _step in range(steps):
            text = "".join(c.text for c in s.stream(context, max_new_tokens=32))
            context += text
            tool = rng.choice(["pytest", "read_file", "edit_file"])
            with s.tool(tool):
                context += f"\n[{tool}] {run_tool(tool, rng)}\n"
        final = s.generate(context + "\nSummarise the fix.", max_new_tokens=16)
        print(
            f"task {task}: {steps + 1} calls, last on {final.replica_id}, "
            f"{final.usage.cached_tokens}/{final.usage.prompt_tokens} prompt tokens cached"
        )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="127.0.0.1:50051")
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--tasks", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--eventlog", default=None)
    args = ap.parse_args()
    rng = random.Random(7)
    with SagaClient(args.target, api_key=args.api_key, eventlog=args.eventlog) as client:
        for task in range(args.tasks):
            try:
                run_task(client, task, args.steps, rng)
            except RejectedError as exc:
                print(f"task {task}: rejected, retry after {exc.retry_after_s} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
