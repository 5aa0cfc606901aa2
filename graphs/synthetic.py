"""A synthetic agent workflow with known transition probabilities (tests, benchmarks, demos).

Sessions alternate LLM calls and gaps: a response asks for a tool with probability
``P_TOOL_USE`` (bash with ``P_BASH``, else read_file; log-normal gaps around known medians),
otherwise ends the turn, after which the session ends with ``P_END_AFTER_TURN`` or a person
replies. A tool_use response also forks a sub-agent (type ``<agent>/sub``) with ``P_FORK``.
Graph building must recover these numbers: the unit tests check it.
"""

from __future__ import annotations

import math
import random

from saga.graphs.trace import LLMCall, SessionTrace, SubAgent, ToolCall

P_TOOL_USE = 0.8  # a response asks for a tool (else it ends the turn)
P_BASH = 0.6  # the tool is bash (else read_file)
P_END_AFTER_TURN = 0.5  # after end_turn the session ends (else a person replies)
P_FORK = 0.05  # a tool_use response also spawns a sub-agent
BASH_MEDIAN_S = 2.0
READ_MEDIAN_S = 0.1
HUMAN_MEDIAN_S = 60.0
MAX_STEPS = 200


def _lognormal(rng: random.Random, median: float, sigma: float = 0.5) -> float:
    return median * math.exp(rng.gauss(0.0, sigma))


def make_session(rng: random.Random, sid: str, agent_type: str = "wf", depth: int = 0) -> SessionTrace:
    calls: list[LLMCall] = []
    tools: list[ToolCall] = []
    subs: list[SubAgent] = []
    t = 0.0
    prompt = 1000
    for k in range(MAX_STEPS):
        stop = "tool_use" if rng.random() < P_TOOL_USE else "end_turn"
        calls.append(LLMCall(start_s=t, duration_s=1.0, prompt_tokens=prompt, output_tokens=50, stop=stop))
        t += 1.0
        if stop == "end_turn" and rng.random() < P_END_AFTER_TURN:
            break
        if k == MAX_STEPS - 1:
            break
        if stop == "tool_use":
            name, med = ("bash", BASH_MEDIAN_S) if rng.random() < P_BASH else ("read_file", READ_MEDIAN_S)
            if depth == 0 and rng.random() < P_FORK:
                child = make_session(rng, f"{sid}/sub{k}", agent_type=f"{agent_type}/sub", depth=1)
                subs.append(SubAgent(after_call=k, start_s=t, session=child))
        else:
            name, med = "human", HUMAN_MEDIAN_S
        gap = _lognormal(rng, med)
        tools.append(ToolCall(name=name, start_s=t, end_s=t + gap, after_call=k))
        t += gap
        prompt += 50 + 200
    return SessionTrace(
        session_id=sid,
        agent_type=agent_type,
        calls=tuple(calls),
        tools=tuple(tools),
        subagents=tuple(subs),
        parent_id=None if depth == 0 else sid.rsplit("/", 1)[0],
    )


def sessions(n: int, seed: int = 1, agent_type: str = "wf") -> list[SessionTrace]:
    rng = random.Random(seed)
    return [make_session(rng, f"{agent_type}-{i}", agent_type) for i in range(n)]
