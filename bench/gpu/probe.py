"""Check one running SGLang server with SAGA's own client-side pieces (a GPU machine's first run).

    python bench/gpu/probe.py http://127.0.0.1:31000 [--kv-events tcp://127.0.0.1:5557]
                              [--session-field session_id] [--turns 3] [--prompt-tokens 3000]

What it checks, each with the code SAGA runs in production, and prints as it goes:

1. ``/server_info`` parses with :func:`saga.service.backend.client.parse_server_info` (the pool
   admits no replica whose info does not), and :func:`saga.service.backend.api.retention_problems`
   finds nothing that stops the replica keeping a session's KV across tool gaps.
2. One agent session of ``--turns`` calls under a top-level ``session_id`` (the field SAGA's
   engine sessions use): every turn after the first must report ``cached_tokens`` close to the
   previous turn's prompt plus output, i.e. the replica kept the session's prefix.
3. ``/v1/loads`` parses with :func:`saga.service.backend.client.parse_loads`.
4. ``/metrics`` carries the ``sglang:*`` names SAGA's bench and dashboards read.
5. With ``--kv-events``: the replica's KV events (``--kv-events-config``) decode with
   :func:`saga.kv_events.decode_batch` while the session runs.
6. A chat call forcing a tool, shaped like the benchmark's, comes back as that tool call
   (else SAGA sees no tool boundaries there: a warning, since the benchmark still runs).

Prompts are the word-level tokens of ``bench/gpu/make_model.py`` (``w<id>``), so a prompt of N
words is N tokens. Exit status 1 when a check fails, so a script can stop there.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import urllib.request
from typing import Any

from saga.bench.conversation import tool_definitions
from saga.kv_events import KvEventDecodeError, decode_batch, parse_seq
from saga.service.backend.api import BackendError, retention_problems
from saga.service.backend.client import parse_loads, parse_server_info

# sglang:* names SAGA reads (bench/e2e replica totals, Grafana dashboards); see
# tests/contract/sglang/test_metric_names.py for the full list checked against SGLang's source.
METRICS_READ = ("sglang:prompt_tokens_total", "sglang:cached_tokens_total", "sglang:num_running_reqs")


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as r:
        return str(r.read().decode())


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        out = json.loads(r.read())
    assert isinstance(out, dict), out
    return out


def _subscribe(endpoint: str, done: threading.Event, grace_s: float, out: list[tuple[int, int, str]]) -> None:
    """Collect KV event batches until ``grace_s`` after ``done`` is set."""
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.connect(endpoint)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.setsockopt(zmq.RCVTIMEO, 500)
    end = float("inf")
    while time.monotonic() < end:
        if done.is_set() and end == float("inf"):
            end = time.monotonic() + grace_s
        try:
            frames = sock.recv_multipart()
        except zmq.Again:
            continue
        try:
            batch = decode_batch(frames[-1])
            kinds = sorted({type(e).__name__ for e in batch.events})
            out.append((parse_seq(frames[1]), len(batch.events), ",".join(kinds)))
        except KvEventDecodeError as exc:
            out.append((-1, 0, f"UNDECODABLE: {exc}"))
    sock.close(0)
    ctx.term()


def forced_tool_call(base: str) -> list[str]:
    """One chat call forcing a tool, as the benchmark's replay sends it: the answer must be
    that tool call (``finish_reason: tool_calls``), or SAGA sees no tool boundary on this
    replica. A warning, not a failure: the benchmark still runs, without tool gaps."""
    model = json.loads(_get(base + "/v1/models"))["data"][0]["id"]
    body = {
        "model": model,
        "messages": [{"role": "user", "content": " ".join(f"w{10_000 + i}" for i in range(64))}],
        "tools": tool_definitions(["code_execution"]),
        "tool_choice": {"type": "function", "function": {"name": "code_execution"}},
        "parallel_tool_calls": False,
        "max_tokens": 96,
    }
    try:
        r = _post(base + "/v1/chat/completions", body)
    except OSError as exc:  # urllib's HTTPError / URLError
        return [f"forced tool call refused: {exc}"]
    choice = r["choices"][0]
    calls = choice["message"].get("tool_calls") or []
    names = [c["function"]["name"] for c in calls]
    print(f"forced tool call: finish_reason {choice['finish_reason']!r}, calls {names}")
    if choice["finish_reason"] != "tool_calls" or names != ["code_execution"]:
        return [
            "a forced tool_choice was not answered with that tool call (start SGLang with "
            "--tool-call-parser pythonic and make_model.py's tokenizer; docs/bench.md)"
        ]
    return []


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def main() -> int:
    """Exit 0: every check passed; 1: a check failed; 2: the replica could not be checked (it
    is unreachable or answers something SGLang would not), with the reason on one line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("url")
    p.add_argument("--kv-events", default="", help="the replica's KV event endpoint (zmq)")
    p.add_argument("--session-field", default="session_id")
    p.add_argument("--turns", type=_positive, default=3)
    p.add_argument("--prompt-tokens", type=_positive, default=3000)
    a = p.parse_args()
    try:
        return _probe(a)
    except (OSError, ValueError, LookupError, TypeError, BackendError) as exc:
        print(f"probe: cannot check {a.url}: {type(exc).__name__}: {exc}")
        return 2


def _probe(a: argparse.Namespace) -> int:
    base = a.url.rstrip("/")
    failures: list[str] = []

    raw = json.loads(_get(base + "/server_info"))
    info = parse_server_info(raw, "probe")
    print(f"server_info: {info}")
    problems = retention_problems(info)
    print(f"retention_problems: {problems or 'none'}")
    if problems:
        failures.append("replica cannot keep sessions' KV: " + "; ".join(problems))

    events: list[tuple[int, int, str]] = []
    sub = None
    done = threading.Event()
    if a.kv_events:
        sub = threading.Thread(target=_subscribe, args=(a.kv_events, done, 3.0, events), daemon=True)
        sub.start()
        time.sleep(1.0)

    prompt = " ".join(f"w{100 + i}" for i in range(a.prompt_tokens))
    expected = 0
    for turn in range(a.turns):
        t0 = time.monotonic()
        sampling = {"max_new_tokens": 64, "temperature": 0, "ignore_eos": True}
        body = {"text": prompt, a.session_field: "saga-probe", "sampling_params": sampling}
        r = _post(base + "/generate", body)
        mi = r["meta_info"]
        cached, n_prompt, n_out = (mi.get(k) for k in ("cached_tokens", "prompt_tokens", "completion_tokens"))
        took = time.monotonic() - t0
        print(f"turn {turn}: {took:.3f} s, prompt {n_prompt}, cached {cached}, output {n_out}")
        if turn and (not isinstance(cached, int) or cached < 0.9 * expected):
            failures.append(f"turn {turn} reused {cached} cached tokens, expected about {expected}")
        expected = int(n_prompt or 0) + int(n_out or 0)
        new_words = " ".join(f"w{5000 + 200 * turn + i}" for i in range(200))
        prompt = f"{prompt} {str(r['text']).strip()} {new_words}"

    done.set()
    loads = parse_loads(json.loads(_get(base + "/v1/loads")), "probe")
    print(f"v1/loads: {loads}")
    names = {line.split("{")[0].split(" ")[0] for line in _get(base + "/metrics").splitlines()}
    sglang_names = sorted(n for n in names if n.startswith("sglang:"))
    print(f"metrics: {len(sglang_names)} sglang:* names")
    missing = [n for n in METRICS_READ if n not in names]
    if missing:
        failures.append(f"metrics missing: {missing}")
    if sub is not None:
        sub.join()
        print(f"kv events: {len(events)} batches, first {events[:4]}")
        if not events or any(seq < 0 for seq, _, _ in events):
            failures.append("no KV events, or undecodable ones")
    warnings = forced_tool_call(base)
    for w in warnings:
        print(f"WARN: {w}")
    for f in failures:
        print(f"FAIL: {f}")
    print("probe: " + ("FAILED" if failures else "all checks passed"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
