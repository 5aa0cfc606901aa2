"""What SAGA sends to SGLang exists in SGLang: launch flags, request fields, session routing.

Read statically from each pinned release's source (its server and I/O modules import the GPU
stack, so they are parsed, not imported; ``conftest.py``):

- every flag the operator renders for a ``ReplicaPool`` is one of SGLang's server arguments,
  and every ``radixEvictionPolicy`` the operator accepts is one of SGLang's choices;
- every field SAGA adds to ``/generate`` and to the OpenAI endpoints (``rid``, ``priority``,
  the engine session) and sends to ``/open_session``, ``/close_session`` and
  ``/abort_request`` is a field of the request type SGLang parses it into (FastAPI ignores
  unknown fields, so a misnamed one would silently do nothing);
- every route SAGA calls is served, the ``/v1/loads`` and ``/server_info`` fields SAGA parses
  are there, and so are the ``meta_info`` keys it reads back from ``/generate``;
- SGLang routes a request by its top-level ``session_id`` to the session radix cache
  (radix-native sessions) and ``session_params.id`` to its older session controller, which is
  why SAGA sends the former by default (``ClientSettings.session_field``).
"""

from __future__ import annotations

import ast
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from saga.operator.reconcile import replicapool
from saga.service.backend.api import ClientSettings, release_of
from saga.service.backend.client import SGLangClient

from .conftest import IMAGE_RELEASE

pytestmark = pytest.mark.contract
ROOT = Path(__file__).resolve().parents[3]
SAMPLE_POOL = ROOT / "deploy" / "helm" / "saga" / "samples" / "replicapool.yaml"


def _modules(zf: zipfile.ZipFile, prefix: str) -> Iterator[tuple[str, ast.Module]]:
    for name in zf.namelist():
        if name.startswith(prefix) and name.endswith(".py"):
            yield name, ast.parse(zf.read(name).decode("utf-8", "replace"))


def _classes(zf: zipfile.ZipFile, member: str) -> dict[str, ast.ClassDef]:
    return {n.name: n for n in ast.parse(zf.read(member)).body if isinstance(n, ast.ClassDef)}


def fields_of(zf: zipfile.ZipFile, member: str, cls: str) -> set[str]:
    """Annotated fields of ``cls`` and of its bases defined in the same module."""
    classes = _classes(zf, member)
    out: set[str] = set()
    todo = [cls]
    while todo:
        node = classes[todo.pop()]
        out |= {
            s.target.id for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
        }
        todo += [b.id for b in node.bases if isinstance(b, ast.Name) and b.id in classes]
    return out


def server_flags(zf: zipfile.ZipFile) -> set[str]:
    """Every ``--flag`` of the release: its server-argument fields (``--`` + name with dashes)
    and every ``--`` literal (aliases, hand-added arguments) in the argument modules."""
    flags: set[str] = set()
    for _, tree in [*_modules(zf, "sglang/srt/server_args"), *_modules(zf, "sglang/srt/arg_groups/")]:
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for s in node.body:
                    if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name):
                        flags.add("--" + s.target.id.replace("_", "-"))
            elif (
                isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("--")
            ):
                flags.add(node.value)
    return flags


def eviction_choices(zf: zipfile.ZipFile) -> set[str]:
    for _, tree in [*_modules(zf, "sglang/srt/server_args"), *_modules(zf, "sglang/srt/arg_groups/")]:
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Assign)
                and any(
                    isinstance(t, ast.Name) and t.id == "RADIX_EVICTION_POLICY_CHOICES" for t in node.targets
                )
                and isinstance(node.value, ast.List)
            ):
                return {
                    e.value
                    for e in node.value.elts
                    if isinstance(e, ast.Constant) and isinstance(e.value, str)
                }
    raise AssertionError("RADIX_EVICTION_POLICY_CHOICES not found")


def sample_pool(**spec: Any) -> replicapool.PoolSpec:
    doc = yaml.safe_load(SAMPLE_POOL.read_text())
    doc["spec"].update(spec)
    got = replicapool.parse_spec(doc)
    assert isinstance(got, replicapool.PoolSpec), got
    return got


def test_operator_flags_are_sglang_server_arguments(sglang_release: tuple[str, zipfile.ZipFile]) -> None:
    version, zf = sglang_release
    known = server_flags(zf)
    assert "--enable-metrics" in known  # the scan found the arguments at all
    keyed = sample_pool(apiKeySecret={"name": "keys", "adminKey": "admin"})  # --api-key, --admin-api-key
    rendered = [
        a for spec in (sample_pool(), keyed) for a in replicapool.server_args(spec) if a.startswith("--")
    ]
    assert "--enable-session-radix-cache" in rendered
    missing = [f for f in rendered if f not in known]
    assert not missing, f"SGLang {version} has no {missing}"


def _release(v: str) -> tuple[int, ...]:
    got = release_of(v)
    assert got is not None, v
    return got


def test_operator_eviction_policies_are_sglang_choices(sglang_release: tuple[str, zipfile.ZipFile]) -> None:
    version, zf = sglang_release
    since = replicapool.EVICTION_POLICY_SINCE
    expected = {
        p for p in replicapool.EVICTION_POLICIES if _release(since.get(p, "0.0.0")) <= _release(version)
    }
    assert expected <= eviction_choices(zf), version
    later = set(replicapool.EVICTION_POLICIES) - expected
    assert not later & eviction_choices(zf), f"{later} exist in {version}: lower EVICTION_POLICY_SINCE"


def test_sample_image_is_the_pinned_release() -> None:
    image = yaml.safe_load(SAMPLE_POOL.read_text())["spec"]["image"]
    assert image.endswith(f":v{IMAGE_RELEASE}")


IO = "sglang/srt/managers/io_struct.py"
OPENAI = "sglang/srt/entrypoints/openai/protocol.py"


def test_generate_fields_exist(sglang_release: tuple[str, zipfile.ZipFile]) -> None:
    version, zf = sglang_release
    generate = fields_of(zf, IO, "GenerateReqInput")
    assert {"input_ids", "text", "sampling_params", "stream"} <= generate
    for style in ("top_level", "session_params"):
        client = SGLangClient("r", "http://127.0.0.1:1", settings=ClientSettings(session_field=style))
        body = client.engine_fields({"input_ids": [1]}, rid="c", priority=3, engine_session="s")
        assert set(body) - {"input_ids"} <= generate, (version, style)
        assert set(body.get("session_params", {})) <= fields_of(zf, IO, "SessionParams")
        if style == "top_level":  # the OpenAI endpoints take the same fields
            for cls in ("ChatCompletionRequest", "CompletionRequest"):
                assert set(body) - {"input_ids"} <= fields_of(zf, OPENAI, cls), (version, cls)


async def test_session_and_abort_bodies_are_sglang_fields(
    sglang_release: tuple[str, zipfile.ZipFile], aiohttp_server_bodies: dict[str, Any]
) -> None:
    version, zf = sglang_release
    want = {
        "/open_session": fields_of(zf, IO, "OpenSessionReqInput"),
        "/close_session": fields_of(zf, IO, "CloseSessionReqInput"),
        "/abort_request": fields_of(zf, IO, "AbortReq"),
    }
    for path, fields in want.items():
        assert set(aiohttp_server_bodies[path]) <= fields, (version, path)


def test_radix_native_sessions_are_the_top_level_session_id(
    sglang_release: tuple[str, zipfile.ZipFile],
) -> None:
    version, zf = sglang_release
    src = zf.read("sglang/srt/managers/scheduler.py").decode()
    assert re.search(r"radix_native_session\s*=\s*\(\s*recv_req\.session_id is not None", src), version
    assert ClientSettings().session_field == "top_level"


@pytest.fixture
async def aiohttp_server_bodies() -> Any:
    """The JSON bodies SAGA's client sends to SGLang's session and abort endpoints, captured by
    a loopback server answering as SGLang does."""
    got: dict[str, Any] = {}

    async def capture(request: web.Request) -> web.Response:
        got[request.path] = await request.json()
        if request.path == "/open_session":
            return web.json_response(got[request.path]["session_id"])
        return web.Response(status=200)

    app = web.Application()
    for path in ("/open_session", "/close_session", "/abort_request"):
        app.router.add_post(path, capture)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    client = SGLangClient("r", f"http://127.0.0.1:{port}")
    try:
        await client.open_session("s1", capacity_of_str_len=1024, timeout_s=30.0)
        await client.close_session("s1")
        await client.abort("c1")
    finally:
        await client.close()
        await runner.cleanup()
    return got


# What SAGA calls and reads back (saga/service/backend/client.py, saga/bench): the routes, the
# /v1/loads fields of parse_loads and the /server_info fields of parse_server_info.
ROUTES = (
    "/generate",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/loads",
    "/server_info",
    "/health",
    "/health_generate",
    "/open_session",
    "/close_session",
    "/abort_request",
    "/flush_cache",
    "/metrics",
)
LOAD_FIELDS = (
    "dp_rank",
    "num_running_reqs",
    "num_waiting_reqs",
    "num_used_tokens",
    "max_total_num_tokens",
    "token_usage",
    "cache_hit_rate",
)
SERVER_ARGS_READ = ("page_size", "dp_size", "enable_dp_attention", "max_running_requests", "model_path")


def test_routes_saga_calls_exist(sglang_release: tuple[str, zipfile.ZipFile]) -> None:
    version, zf = sglang_release
    text = "\n".join(
        zf.read(n).decode("utf-8", "replace")
        for n in zf.namelist()
        if n.endswith(".py") and n.startswith(("sglang/srt/entrypoints/", "sglang/srt/utils/"))
    )
    missing = [r for r in ROUTES if f'"{r}"' not in text]
    assert not missing, f"SGLang {version} serves no {missing}"


def test_load_and_server_info_fields_exist(sglang_release: tuple[str, zipfile.ZipFile]) -> None:
    version, zf = sglang_release
    load = fields_of(zf, "sglang/srt/managers/load_snapshot.py", "LoadSnapshot")
    assert set(LOAD_FIELDS) <= load, (version, set(LOAD_FIELDS) - load)
    args = {f.removeprefix("--").replace("-", "_") for f in server_flags(zf)}
    assert set(SERVER_ARGS_READ) <= args, (version, set(SERVER_ARGS_READ) - args)
    # the scheduler reports its KV pool size and its prompt limit under these keys (top level
    # of /server_info), and the limit it really admits under this one (internal_states; the
    # server argument max_running_requests is null unless given, as seen on SGLang 0.5.17,
    # docs/bench.md)
    scheduler = zf.read("sglang/srt/managers/scheduler.py").decode()
    assert '"max_total_num_tokens"' in scheduler, version
    assert '"max_req_input_len"' in scheduler, version
    assert '"effective_max_running_requests_per_dp"' in scheduler, version
    # ...and refuses a prompt of max_req_input_len tokens or more (ServerInfo.max_input_tokens)
    utils = zf.read("sglang/srt/managers/utils.py").decode()
    assert "len(req.origin_input_ids) >= max_req_input_len" in utils, version


def test_generate_meta_info_keys_saga_reads_exist(sglang_release: tuple[str, zipfile.ZipFile]) -> None:
    # saga.service.calls.native_usage reads these keys of /generate's meta_info
    version, zf = sglang_release
    src = zf.read("sglang/srt/managers/tokenizer_manager.py").decode()
    for key in ("prompt_tokens", "completion_tokens", "cached_tokens", "finish_reason"):
        assert f'"{key}"' in src, (version, key)


def test_openai_usage_fields_saga_reads_exist(sglang_release: tuple[str, zipfile.ZipFile]) -> None:
    # saga.service.openai_api reads usage.{prompt,completion}_tokens and
    # usage.prompt_tokens_details.cached_tokens (the replica's cache hits)
    version, zf = sglang_release
    usage = fields_of(zf, OPENAI, "UsageInfo")
    assert {"prompt_tokens", "completion_tokens", "prompt_tokens_details"} <= usage, version
    assert "cached_tokens" in fields_of(zf, OPENAI, "PromptTokensDetails"), version
