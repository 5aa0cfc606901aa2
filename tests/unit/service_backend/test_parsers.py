"""Pure parsing: SSE framing, /v1/loads, /server_info, Prometheus text, settings validation."""

from __future__ import annotations

import pytest

from saga.service.backend.api import (
    ClientTimeouts,
    PoolSettings,
    ReplicaProtocolError,
    release_of,
    retention_problems,
)
from saga.service.backend.client import SGLangClient, parse_loads, parse_server_info, parse_sglang_metrics
from saga.service.backend.sse import SSEDecoder, SSEFormatError, parse_json_object

pytestmark = pytest.mark.unit


def test_sse_decoder_handles_split_chunks_comments_and_crlf() -> None:
    d = SSEDecoder()
    assert list(d.feed(b'data: {"a"')) == []
    assert list(d.feed(b': 1}\r\n\r\n: keep-alive\nevent: x\nid: 3\ndata:{"b":2}\n')) == [
        '{"a": 1}',
        '{"b":2}',
    ]
    assert list(d.feed(b"data: [DONE]")) == []
    assert list(d.finish()) == ["[DONE]"]


def test_sse_decoder_yields_good_payloads_before_raising() -> None:
    it = SSEDecoder().feed(b'data: {"a":1}\n\ngarbage line\n')
    assert next(it) == '{"a":1}'
    with pytest.raises(SSEFormatError, match="not an SSE line"):
        next(it)
    with pytest.raises(SSEFormatError, match="unexpected SSE field"):
        list(SSEDecoder().feed(b"foo: bar\n"))
    with pytest.raises(SSEFormatError, match="longer than"):
        list(SSEDecoder(max_line=8).feed(b"data: 0123456789"))
    with pytest.raises(SSEFormatError, match="UTF-8"):
        list(SSEDecoder().feed(b"data: \xff\xfe\n"))


def test_parse_json_object() -> None:
    assert parse_json_object('{"x": 1}') == {"x": 1}
    with pytest.raises(SSEFormatError, match="not JSON"):
        parse_json_object("{")
    with pytest.raises(SSEFormatError, match="JSON object"):
        parse_json_object("[1]")


def test_parse_loads_fills_missing_used_tokens_and_bare_list() -> None:
    r = parse_loads(
        [{"num_running_reqs": 1, "num_waiting_reqs": 2, "max_total_num_tokens": 100, "token_usage": 0.5}]
    )
    assert (r.running, r.waiting, r.used_tokens, r.total_tokens, r.cache_hit_rate) == (1, 2, 50, 100, None)
    with pytest.raises(ReplicaProtocolError, match="num_waiting_reqs"):
        parse_loads({"loads": [{"num_running_reqs": 1, "max_total_num_tokens": 1}]})
    with pytest.raises(ReplicaProtocolError, match="finite"):
        parse_loads(
            {"loads": [{"num_running_reqs": float("nan"), "num_waiting_reqs": 0, "max_total_num_tokens": 1}]}
        )
    with pytest.raises(ReplicaProtocolError):
        parse_loads({"loads": [{"num_running_reqs": True, "num_waiting_reqs": 0, "max_total_num_tokens": 1}]})


def test_parse_server_info_defaults_and_errors() -> None:
    info = parse_server_info({"max_total_num_tokens": 500})
    assert (info.kv_total_tokens, info.max_running_requests, info.page_size) == (500, 1024, 1)
    with pytest.raises(ReplicaProtocolError, match="max_total_num_tokens"):
        parse_server_info({"page_size": 16})


def test_parse_server_info_null_server_args_count_as_unset() -> None:
    """Real SGLang 0.5.17 (seen on an H100, docs/bench.md): unset server args are JSON null at
    the top level, e.g. ``max_running_requests``; the replica must still be admitted."""
    real = {
        "max_running_requests": None,
        "page_size": 1,
        "dp_size": 1,
        "enable_dp_attention": False,
        "version": "0.5.17",
        "max_total_num_tokens": 273843,
        "internal_states": [{"max_running_requests": None, "last_gen_throughput": 0.0}],
    }
    info = parse_server_info(real)
    assert (info.kv_total_tokens, info.max_running_requests, info.version) == (273843, 1024, "0.5.17")
    nested = {
        **real,
        "internal_states": [{"max_running_requests": None, "effective_max_running_requests_per_dp": 2048}],
    }
    assert parse_server_info(nested).max_running_requests == 2048
    dp = {**nested, "dp_size": 2, "enable_dp_attention": True}
    assert parse_server_info(dp).max_running_requests == 4096
    with pytest.raises(ReplicaProtocolError, match="max_total_num_tokens"):
        parse_server_info({**real, "max_total_num_tokens": None})


def test_parse_server_info_attention_dp_ranks() -> None:
    """KV events come per attention DP rank: ``dp_size`` counts only with
    ``enable_dp_attention`` (SGLang's ``compute_dp_attention_world_info``)."""
    base = {"max_total_num_tokens": 500}
    assert parse_server_info(base).attn_dp_size == 1
    assert parse_server_info({**base, "dp_size": 4, "enable_dp_attention": True}).attn_dp_size == 4
    assert parse_server_info({**base, "dp_size": 4, "enable_dp_attention": False}).attn_dp_size == 1
    assert parse_server_info({**base, "dp_size": 4}).attn_dp_size == 1
    # Server args at the top level, scheduler state in internal_states[0] (SGLang 0.5).
    nested = {"dp_size": 2, "enable_dp_attention": True, "internal_states": [base]}
    assert parse_server_info(nested).attn_dp_size == 2
    for bad in (0, 2.5, 5000, "2"):
        with pytest.raises(ReplicaProtocolError, match="dp_size"):
            parse_server_info({**base, "dp_size": bad, "enable_dp_attention": True})


def test_parse_server_info_longest_prompt() -> None:
    """``max_input_tokens``: one below SGLang's ``max_req_input_len`` (its scheduler refuses
    ``len(input_ids) >= max_req_input_len``), reported at the top level or in internal_states[0],
    else derived as SGLang derives it: ``min(context_len - 1, max_total_num_tokens - 1) - 5``."""
    base = {"max_total_num_tokens": 500_000}
    assert parse_server_info({**base, "max_req_input_len": 131_066}).max_input_tokens == 131_065
    assert parse_server_info({**base, "internal_states": [{"max_req_input_len": 8}]}).max_input_tokens == 7
    top = {**base, "max_req_input_len": 100, "internal_states": [{"max_req_input_len": 50}]}
    assert parse_server_info(top).max_input_tokens == 99  # the top level wins, as for every field
    # preferred over a derivation, which may not match (e.g. a pool sized per attention rank)
    assert parse_server_info({**base, "context_length": 4096, "max_req_input_len": 9}).max_input_tokens == 8
    # derived: the context length (a server argument, when a number) or the KV pool, whichever binds
    assert parse_server_info({**base, "context_length": 131_072}).max_input_tokens == 131_065
    assert parse_server_info({**base, "context_length": 10**7}).max_input_tokens == 499_993
    assert parse_server_info(base).max_input_tokens == 499_993  # max_total_num_tokens - 7
    for unset in (None, "auto", True, 0):
        info = parse_server_info({**base, "context_length": unset, "max_req_input_len": None})
        assert info.max_input_tokens == 499_993, unset  # null = absent
    assert parse_server_info({"max_total_num_tokens": 3}).max_input_tokens == 0
    for bad in ("131066", 0, -5, True, float("inf"), [1]):
        with pytest.raises(ReplicaProtocolError, match="max_req_input_len") as ei:
            parse_server_info({**base, "max_req_input_len": bad}, "r7")
        assert ei.value.replica_id == "r7"


def test_parse_metrics_sums_labels() -> None:
    text = 'sglang:num_queue_reqs{dp="0"} 2\nsglang:num_queue_reqs{dp="1"} 3\nfoo 1\n'
    assert parse_sglang_metrics(text) == {"sglang:num_queue_reqs": 5.0}


def test_settings_validation() -> None:
    with pytest.raises(ValueError, match="idle_s"):
        ClientTimeouts(idle_s=0)
    with pytest.raises(ValueError, match="load_interval_s"):
        PoolSettings(load_interval_s=-1)
    with pytest.raises(ValueError, match="unhealthy_after"):
        PoolSettings(unhealthy_after=0)


def test_priority_is_left_out_for_a_replica_without_priority_scheduling() -> None:
    base = {"max_total_num_tokens": 500}
    assert parse_server_info(base).priority_scheduling is None  # not said: keep sending
    assert parse_server_info({**base, "enable_priority_scheduling": True}).priority_scheduling is True
    assert parse_server_info({**base, "enable_priority_scheduling": False}).priority_scheduling is False
    client = SGLangClient("r0", "http://127.0.0.1:1")
    assert client.engine_fields({}, priority=7)["priority"] == 7
    client.accepts_priority = False  # what server_info() sets for enable_priority_scheduling: false
    assert "priority" not in client.engine_fields({}, priority=7)


def test_replicas_that_cannot_keep_kv_across_tool_gaps_are_named() -> None:
    base = {"max_total_num_tokens": 500}
    ok = parse_server_info({**base, "version": "0.5.20", "enable_session_radix_cache": True})
    assert (ok.version, ok.session_radix_cache) == ("0.5.20", True)
    assert retention_problems(ok) == []
    assert retention_problems(parse_server_info(base)) == []  # nothing said: nothing claimed
    off = parse_server_info({**base, "enable_session_radix_cache": False})
    assert "--enable-session-radix-cache" in retention_problems(off)[0]
    old = parse_server_info({**base, "version": "0.5.10.post1"})
    assert "0.5.17 or later" in retention_problems(old)[0]
    assert release_of("0.5.17") == (0, 5, 17)
    assert release_of("v0.5.21.post2") == (0, 5, 21)
    assert release_of("0.5.22rc1") == (0, 5, 22)
    assert release_of("0.5") is None
    assert release_of("unknown") is None
