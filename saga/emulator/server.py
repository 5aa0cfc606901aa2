"""aiohttp shell: SGLang 0.5's HTTP API in front of a :class:`ReplicaRuntime`.

Native endpoints: ``/generate`` (SSE or JSON), ``/health``, ``/health_generate``, ``/ready``,
``/server_info`` (+ ``/get_server_info``), ``/model_info`` (+ ``/get_model_info``), ``/v1/models``,
``/v1/loads``, ``/get_load``, ``/metrics``, ``/flush_cache``, ``/abort_request``,
``/open_session``, ``/close_session``; OpenAI endpoints in :mod:`saga.emulator.openai_api`;
``/admin/faults`` (GET/POST) sets the fault knobs. Handlers only convert messages and delegate;
bad input always gets a 400 with an SGLang-style body, never a 500 (only the ``failure_rate``
fault knob answers 500, on purpose).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from saga.emulator.core import (
    EmulatorError,
    Event,
    Finished,
    FirstToken,
    ReplicaConfig,
    Request,
    TokensGenerated,
    UnknownSession,
    output_token_ids,
    tokenizer,
)
from saga.emulator.faults import FaultConfig, FaultConfigError
from saga.emulator.kv_publisher import KvEventPublisher
from saga.emulator.protocol import (
    BadRequest,
    engine_error_body,
    finish_reason_native,
    parse_generate,
    validation_error_body,
)
from saga.emulator.replica_runtime import InjectedFailure, ReplicaCrashed, ReplicaRuntime
from saga.kv_events import KvEventsConfig

log = logging.getLogger(__name__)

EMULATED_SGLANG_VERSION = "0.5.20"  # the release whose interfaces it mirrors (tests/contract/sglang)
RUNTIME_KEY = web.AppKey("runtime", ReplicaRuntime)
ATTN_DP_SIZE_KEY = web.AppKey("attn_dp_size", int)
HEALTH_TIMEOUT_S = 20.0
"""Wall seconds ``/health_generate`` waits for its one-token request (SGLang uses 20 s)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type="application/json")


async def read_json(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return json.loads(raw) if raw else {}
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"malformed JSON body: {e}") from None


def runtime_of(request: web.Request) -> ReplicaRuntime:
    return request.app[RUNTIME_KEY]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    rt = runtime_of(request)
    if rt.crashed:
        if request.transport is not None:
            request.transport.close()
        raise web.HTTPServiceUnavailable(text="replica crashed")
    try:
        return await handler(request)
    except BadRequest as e:
        return _json(validation_error_body(str(e)), 400)
    except EmulatorError as e:
        return _json(engine_error_body(str(e)), 400)
    except InjectedFailure as e:
        return _json(engine_error_body(str(e)), 500)
    except ReplicaCrashed:
        if request.transport is not None:
            request.transport.close()
        raise web.HTTPServiceUnavailable(text="replica crashed") from None


# ----------------------------------------------------------------------------- generation


@dataclass(slots=True)
class GenerationProgress:
    """What a handler needs to render one step of a generation."""

    event: Event
    completion_tokens: int
    new_token_ids: list[int]
    finished: Finished | None
    cached_tokens: int


async def run_generation(rt: ReplicaRuntime, req: Request) -> AsyncGenerator[GenerationProgress, None]:
    """Submit ``req`` and yield its progress until it finishes (aborting it if the caller stops
    early, e.g. a client that disconnected)."""
    await rt.before_generation()
    queue = rt.submit(req)
    produced = 0
    cached = 0
    done = False
    try:
        while True:
            ev = await queue.get()
            if isinstance(ev, FirstToken):
                cached = ev.cached_tokens
                count = 1
            elif isinstance(ev, TokensGenerated):
                count = ev.completion_tokens
            else:
                count = ev.completion_tokens
                cached = ev.cached_tokens
            new = output_token_ids(req.seed, count - produced, produced) if count > produced else []
            produced = max(produced, count)
            fin = ev if isinstance(ev, Finished) else None
            if fin is not None:
                done = True
            yield GenerationProgress(ev, produced, new, fin, cached)
            if done:
                return
    finally:
        if not done:
            rt.abort(req.rid)


def _meta(req: Request, prog: GenerationProgress, started: float) -> dict[str, Any]:
    fin = prog.finished
    return {
        "id": req.rid,
        "finish_reason": None
        if fin is None
        else finish_reason_native(fin.finish_reason, prog.completion_tokens),
        "prompt_tokens": req.num_tokens,
        "completion_tokens": prog.completion_tokens,
        "cached_tokens": prog.cached_tokens,
        "e2e_latency": time.monotonic() - started,
    }


async def generate(request: web.Request) -> web.StreamResponse:
    rt = runtime_of(request)
    parsed = parse_generate(await read_json(request), rt.config.page_size)
    req = parsed.request
    started = time.monotonic()
    gen = run_generation(rt, req)
    ids: list[int] = []
    if not parsed.stream:
        last: GenerationProgress | None = None
        async for step in gen:
            ids.extend(step.new_token_ids)
            last = step
        assert last is not None
        return _json(
            {"text": tokenizer.decode(ids), "output_ids": ids, "meta_info": _meta(req, last, started)}
        )
    # Validate and enqueue before answering 200, so bad input still gets a 400.
    prog = await gen.__anext__()
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    try:
        while True:
            ids.extend(prog.new_token_ids)
            chunk = {
                "text": tokenizer.decode(ids),
                "output_ids": list(ids),
                "meta_info": _meta(req, prog, started),
            }
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            if prog.finished is not None:
                break
            prog = await gen.__anext__()
        await resp.write(b"data: [DONE]\n\n")
    finally:
        await gen.aclose()  # aborts the request if the client went away mid-stream
    await resp.write_eof()
    return resp


# ----------------------------------------------------------------------------- info & health


async def health(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    return web.Response(status=200 if rt.faults.healthy else 503)


async def health_generate(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    if not rt.faults.healthy:
        return web.Response(status=503)
    req = Request.from_tokens(f"HEALTH_CHECK_{uuid.uuid4().hex}", [0], 1, rt.config.page_size)
    queue = rt.submit(req)
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_S):
            while not isinstance(await queue.get(), Finished):
                pass
    except TimeoutError:
        rt.abort(req.rid)
        return web.Response(status=503)
    return web.Response(status=200)


async def ready(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    return _json({"status": "ready" if rt.faults.healthy else "unhealthy"}, 200 if rt.faults.healthy else 503)


def _load_entry(rt: ReplicaRuntime) -> dict[str, Any]:
    load = rt.model.load()
    return {
        "dp_rank": 0,
        "num_running_reqs": load.num_running,
        "num_waiting_reqs": load.num_waiting,
        "num_used_tokens": load.used_tokens,
        "max_total_num_tokens": load.total_tokens,
        "token_usage": round(load.token_usage, 6),
        "cache_hit_rate": round(load.cache_hit_rate, 6),
        "num_cached_tokens": load.cached_tokens_in_pool,
        "num_open_sessions": load.open_sessions,
    }


async def server_info(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    cfg = rt.config
    t = cfg.timing
    return _json(
        {
            "model_path": cfg.model_name,
            "tokenizer_path": cfg.model_name,
            "served_model_name": cfg.model_name,
            "page_size": cfg.page_size,
            "max_total_num_tokens": cfg.kv_capacity_tokens,
            "context_length": cfg.context_length,
            # The scheduler's init info, merged into the top level as SGLang 0.5 does.
            "max_req_input_len": cfg.max_req_input_len,
            # As SGLang reports an unset --max-running-requests: null here, the scheduler's
            # own limit as internal_states[0].effective_max_running_requests_per_dp.
            "max_running_requests": None,
            "chunked_prefill_size": cfg.chunked_prefill_size,
            "enable_priority_scheduling": cfg.enable_priority_scheduling,
            "enable_session_radix_cache": cfg.enable_session_radix_cache,
            "schedule_low_priority_values_first": cfg.schedule_low_priority_values_first,
            "tp_size": 1,
            "dp_size": request.app[ATTN_DP_SIZE_KEY],
            "enable_dp_attention": request.app[ATTN_DP_SIZE_KEY] > 1,
            "version": EMULATED_SGLANG_VERSION,
            "internal_states": [
                {**_load_entry(rt), "effective_max_running_requests_per_dp": cfg.max_running_requests}
            ],
            "emulator": {
                "replica_id": rt.replica_id,
                "time_scale": rt.time_scale,
                "timing": {
                    "fixed_overhead_s": t.fixed_overhead_s,
                    "prefill_s_per_token": t.prefill_s_per_token,
                    "decode_s_per_seq": t.decode_s_per_seq,
                    "kv_read_s_per_token": t.kv_read_s_per_token,
                },
                "faults": rt.faults.as_dict(),
            },
        }
    )


async def model_info(request: web.Request) -> web.Response:
    name = runtime_of(request).config.model_name
    return _json(
        {
            "model_path": name,
            "tokenizer_path": name,
            "is_generation": True,
            "preferred_sampling_params": None,
            "weight_version": "default",
        }
    )


async def v1_models(request: web.Request) -> web.Response:
    cfg = runtime_of(request).config
    card = {"id": cfg.model_name, "object": "model", "created": 0, "owned_by": "sglang"}
    card["max_model_len"] = cfg.context_length
    return _json({"object": "list", "data": [card]})


async def v1_loads(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    return _json({"timestamp": time.time(), "dp_rank_count": 1, "loads": [_load_entry(rt)]})


async def get_load(request: web.Request) -> web.Response:
    load = runtime_of(request).model.load()
    return _json(
        [
            {
                "dp_rank": 0,
                "num_reqs": load.num_running + load.num_waiting,
                "num_waiting_reqs": load.num_waiting,
                "num_tokens": load.used_tokens,
            }
        ]
    )


async def metrics(request: web.Request) -> web.Response:
    body = runtime_of(request).metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


# ----------------------------------------------------------------------------- cache & sessions


async def flush_cache(request: web.Request) -> web.Response:
    ok = runtime_of(request).flush_cache()
    text = (
        "Cache flushed.\nPlease check backend logs for more details. "
        "(When there are running or waiting requests, the operation will not be performed.)\n"
    )
    return web.Response(text=text, status=200 if ok else 400)


async def abort_request(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    if body.get("abort_all", False) is True:
        rt.abort_all()
        return web.Response(status=200)
    rid = body.get("rid")
    if not isinstance(rid, str) or not rid:
        raise BadRequest("field 'rid' (string) or 'abort_all': true is required")
    rt.abort(rid)  # like SGLang: aborting an unknown rid is not an error
    return web.Response(status=200)


async def open_session(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    cap = body.get("capacity_of_str_len")
    if cap is None or isinstance(cap, bool) or not isinstance(cap, int) or cap < 0:
        raise BadRequest("field 'capacity_of_str_len' (non-negative integer) is required")
    sid = body.get("session_id")
    if sid is None:
        sid = uuid.uuid4().hex
    if not isinstance(sid, str) or not sid:
        raise BadRequest("field 'session_id' must be a non-empty string")
    rt.model.open_session(sid, rt.clock.now())
    return _json(sid)


async def close_session(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    body = await read_json(request)
    sid = body.get("session_id") if isinstance(body, dict) else None
    if not isinstance(sid, str) or not sid:
        raise BadRequest("field 'session_id' (string) is required")
    try:
        rt.model.close_session(sid, rt.clock.now())
    except UnknownSession:
        # SGLang answers 200 here too: the close goes to its scheduler, which only logs it
        log.warning("session id %s does not exist, cannot close", sid)
    return web.Response(status=200)


# ----------------------------------------------------------------------------- admin


async def get_faults(request: web.Request) -> web.Response:
    return _json(runtime_of(request).faults.as_dict())


async def set_faults(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    try:
        rt.faults.update(body)
    except FaultConfigError as e:
        raise BadRequest(str(e)) from None
    return _json(rt.faults.as_dict())


def build_app(rt: ReplicaRuntime, attn_dp_size: int = 1) -> web.Application:
    from saga.emulator import openai_api

    app = web.Application(middlewares=[error_middleware], client_max_size=64 * 1024 * 1024)
    app[RUNTIME_KEY] = rt
    app[ATTN_DP_SIZE_KEY] = attn_dp_size
    r = app.router
    r.add_route("POST", "/generate", generate)
    r.add_route("PUT", "/generate", generate)
    r.add_post("/v1/completions", openai_api.completions)
    r.add_post("/v1/chat/completions", openai_api.chat_completions)
    for path in ("/health",):
        r.add_get(path, health)
    r.add_get("/health_generate", health_generate)
    r.add_get("/ready", ready)
    for path in ("/server_info", "/get_server_info"):
        r.add_get(path, server_info)
    for path in ("/model_info", "/get_model_info"):
        r.add_get(path, model_info)
    r.add_get("/v1/models", v1_models)
    r.add_get("/v1/loads", v1_loads)
    r.add_get("/get_load", get_load)
    r.add_get("/metrics", metrics)
    for method in ("GET", "POST"):
        r.add_route(method, "/flush_cache", flush_cache)
        r.add_route(method, "/open_session", open_session)
        r.add_route(method, "/close_session", close_session)
    r.add_post("/abort_request", abort_request)
    r.add_get("/admin/faults", get_faults)
    r.add_post("/admin/faults", set_faults)
    app.on_cleanup.append(_cleanup)
    return app


async def _cleanup(app: web.Application) -> None:
    app[RUNTIME_KEY].close()


# ----------------------------------------------------------------------------- running servers


@dataclass
class RunningReplica:
    runtime: ReplicaRuntime
    runner: web.AppRunner
    host: str
    port: int
    kv_publisher: KvEventPublisher | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


async def start_replica(
    config: ReplicaConfig,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    replica_id: str = "replica-0",
    time_scale: float = 1.0,
    faults: FaultConfig | None = None,
    kv_events: KvEventsConfig | None = None,
    rank: int = 0,
    attn_dp_size: int = 1,
) -> RunningReplica:
    """Start one replica on ``host:port`` (port 0: a free one) in the running loop.
    ``kv_events``: publish KV events as SGLang's ``--kv-events-config`` does (on the endpoint's
    and the replay endpoint's ports + ``rank``); publisher ``"null"`` or None: none.

    ``attn_dp_size`` > 1: ``/server_info`` reports a replica with that many attention DP ranks
    (``dp_size``, ``enable_dp_attention``), of which this server runs one (``rank``, with its
    own model, radix cache and publisher, as each SGLang rank has). The emulator has no DP
    controller: the other ranks are started as replicas of their own (same ``kv_events``,
    ``rank=r``), so they publish where SGLang's rank ``r`` would, and calls meant for rank
    ``r`` go to its server."""
    if attn_dp_size < 1 or rank < 0:
        raise ValueError(f"attn_dp_size must be >= 1 and rank >= 0, got {attn_dp_size}, {rank}")
    pub = None
    if kv_events is not None and kv_events.publisher == "zmq":
        pub = KvEventPublisher(kv_events, rank)
    rt = ReplicaRuntime(config, replica_id, time_scale=time_scale, faults=faults, kv_events=pub)
    runner = web.AppRunner(build_app(rt, attn_dp_size), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    actual = int(runner.addresses[-1][1]) if port == 0 else port

    def _stop_listening() -> None:
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().create_task(site.stop())

    rt.on_crash(_stop_listening)
    return RunningReplica(rt, runner, host, actual, pub)


async def start_cluster(
    n: int,
    config: ReplicaConfig,
    host: str = "127.0.0.1",
    base_port: int = 0,
    *,
    time_scale: float = 1.0,
    faults: FaultConfig | None = None,
    kv_events: KvEventsConfig | None = None,
) -> list[RunningReplica]:
    """Start ``n`` replicas on consecutive ports from ``base_port`` (0: free ports); replica
    ``i`` publishes KV events (``kv_events``) on the endpoint's port + ``i``."""
    replicas = []
    for i in range(n):
        port = base_port + i if base_port else 0
        f = None
        if faults is not None:
            f = FaultConfig(**{**faults.as_dict(), "seed": faults.seed + i})
        replicas.append(
            await start_replica(
                config,
                host,
                port,
                replica_id=f"replica-{i}",
                time_scale=time_scale,
                faults=f,
                kv_events=kv_events,
                rank=i,
            )
        )
    return replicas


async def stop_cluster(replicas: list[RunningReplica]) -> None:
    for rep in replicas:
        await rep.runner.cleanup()
        if rep.kv_publisher is not None:
            await rep.kv_publisher.close()
