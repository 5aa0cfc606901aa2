from __future__ import annotations

from pathlib import Path

import pytest

from saga.cli import main
from saga.service.app import client_settings
from saga.service.backend.api import ClientTimeouts
from saga.service.config import ConfigError, embedded_default, load_file, load_text

pytestmark = pytest.mark.unit

HEAD = "apiVersion: saga.dev/v1alpha1\nkind: SchedulerConfig\n"


def problems(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as ei:
        load_text(text)
    return ei.value.problems


def test_embedded_default_is_valid() -> None:
    cfg = embedded_default()
    assert cfg.spec.state.backend == "memory"
    assert cfg.spec.auth.anonymous_tenant == "default"


def test_path_qualified_errors() -> None:
    p = problems(HEAD + "spec:\n  replicas:\n    static: [http://a:1, 'b=http://b:2', nope]\n")
    assert ("spec.replicas.static[2]", "not a URL: 'nope'") in p
    p = problems(HEAD + "spec:\n  limits: {max_new_tokens: x, bogus: 1}\n")
    assert ("spec.limits.max_new_tokens", "expected an integer, got 'x'") in p
    assert ("spec.limits.bogus", "unknown field") in p
    p = problems(
        HEAD
        + "spec:\n  auth: {api_keys: [{key: short, tenant: ghost}]}\n  replicas: {static: [http://a:1]}\n"
    )
    paths = [x[0] for x in p]
    assert "spec.auth.api_keys[0].key" in paths
    assert "spec.auth.api_keys[0].tenant" in paths
    p = problems(HEAD + "spec:\n  state: {backend: etcd}\n  replicas: {static: [http://a:1]}\n")
    assert p[0][0] == "spec.state.backend"


def test_prompt_limit_zero_is_auto_and_negative_is_refused() -> None:
    base = HEAD + "spec:\n  replicas: {static: [http://a:1]}\n  limits: {max_prompt_tokens: %s}\n"
    assert load_text(base % 0).spec.limits.max_prompt_tokens == 0  # the replicas' own limit
    assert load_text(base % 65536).spec.limits.max_prompt_tokens == 65536
    assert problems(base % -1) == [
        ("spec.limits.max_prompt_tokens", "must be >= 0 (0 = the replicas' own limit), got -1")
    ]


def test_wrong_version_and_bad_yaml() -> None:
    assert problems("apiVersion: v9\nkind: SchedulerConfig\n")[0][0] == "apiVersion"
    p = problems(HEAD + "spec: [unclosed\n")
    assert "line" in p[0][0]
    assert problems("- a list\n")[0][1].startswith("expected a mapping")


def test_engine_settings_are_checked(tmp_path: Path) -> None:
    from saga.service.app import engine_settings

    cfg = load_text(HEAD + "spec:\n  replicas: {static: [http://a:1]}\n  engine: {stealing: {nope: 1}}\n")
    with pytest.raises(ConfigError, match=r"spec\.engine\.stealing\.nope: unknown field"):
        engine_settings(cfg)
    cfg = load_text(
        HEAD
        + "spec:\n  tenants: [{name: default}, {name: a, weight: 3}]\n  replicas: {static: [http://a:1]}\n"
    )
    assert engine_settings(cfg).fairness.weights["a"] == 3.0
    lanes = "spec:\n  replicas: {static: [http://a:1]}\n  engine: {lanes: {max_reserved: %s, hold_s: 60}}\n"
    got = engine_settings(load_text(HEAD + lanes % "0.1")).lanes
    assert (got.max_reserved, got.hold_s, got.enabled) == (0.1, 60.0, True)
    with pytest.raises(ConfigError, match=r"spec\.engine: lanes: need"):
        engine_settings(load_text(HEAD + lanes % "1.5"))
    urgency = "spec:\n  replicas: {static: [http://a:1]}\n  engine: {cost: {urgency_power: %s}}\n"
    assert engine_settings(load_text(HEAD + urgency % "1")).cost.urgency_power == 1.0
    with pytest.raises(ConfigError, match=r"urgency_power: must be in \[0, 8\]"):
        engine_settings(load_text(HEAD + urgency % "9"))


def test_serve_check_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(HEAD + "spec:\n  listen: {grpc: 'no-port'}\n")
    assert main(["serve", "--check", "--config", str(bad)]) == 2
    assert "spec.listen.grpc: not a host:port address" in capsys.readouterr().err
    good = tmp_path / "good.yaml"
    good.write_text(HEAD + "spec:\n  replicas: {static: [http://127.0.0.1:30000]}\n")
    assert main(["serve", "--check", "--config", str(good)]) == 0
    assert main(["serve", "--check", "--config", str(tmp_path / "missing.yaml")]) == 2
    with pytest.raises(ConfigError, match="cannot read"):
        load_file(tmp_path / "missing.yaml")
    # an unset key variable is refused at start with the same clear error, nothing started
    keyed = tmp_path / "keyed.yaml"
    keyed.write_text(
        HEAD + "spec:\n  listen: {grpc: '127.0.0.1:0', http: '127.0.0.1:0', metrics: '127.0.0.1:0'}\n"
        "  replicas: {static: [http://127.0.0.1:1], api_key_env: SAGA_TEST_UNSET_KEY}\n"
    )
    capsys.readouterr()
    assert main(["serve", "--config", str(keyed)]) == 2
    assert "environment variable SAGA_TEST_UNSET_KEY is not set" in capsys.readouterr().err


def test_graphs_section_defaults_and_errors() -> None:
    g = embedded_default().spec.graphs
    assert (g.directory, g.from_store, g.poll_interval_s) == (None, False, 10.0)
    base = HEAD + "spec:\n  replicas: {static: [http://a:1]}\n"
    cfg = load_text(base + "  graphs: {directory: /etc/saga/graphs, from_store: true, poll_interval_s: 2}\n")
    assert cfg.spec.graphs.directory == "/etc/saga/graphs"
    assert cfg.spec.graphs.from_store is True
    assert cfg.spec.graphs.poll_interval_s == 2
    p = problems(base + "  graphs: {from_store: yes please}\n")  # phase 1: types
    assert ("spec.graphs.from_store", "expected true or false, got 'yes please'") in p
    p = problems(base + "  graphs: {directory: '', poll_interval_s: 0}\n")  # phase 2: values
    assert ("spec.graphs.directory", "must be a folder path or null") in p
    assert ("spec.graphs.poll_interval_s", "must be in [0.01, 86400], got 0.0") in p
    assert ("spec.graphs.fromStore", "unknown field") in problems(base + "  graphs: {fromStore: true}\n")


def test_kv_events_section() -> None:
    base = HEAD + "spec:\n  replicas:\n    static: [r0=http://a:1]\n"
    assert load_text(base).spec.replicas.kv_events.endpoints == {}
    kv = load_text(
        base
        + '    kv_events: {endpoints: {r0: "tcp://10.0.0.7:5557"}, replay_endpoints: {r0: "tcp://h:5558"}}\n'
    ).spec.replicas.kv_events
    assert kv.endpoints == {"r0": "tcp://10.0.0.7:5557"}
    assert kv.replay_endpoints == {"r0": "tcp://h:5558"}
    found = problems(
        base + "    kv_events:\n"
        '      endpoints: {r0: "http://a:5557", r1: "tcp://nohost"}\n'
        '      replay_endpoints: {r2: "tcp://h:1"}\n'
        "      replay_timeout_s: 0\n"
        "      max_tracked_blocks: 0\n"
    )
    paths = dict(found)
    assert set(paths) == {
        "spec.replicas.kv_events.endpoints.r0",
        "spec.replicas.kv_events.endpoints.r1",
        "spec.replicas.kv_events.replay_endpoints.r2",
        "spec.replicas.kv_events.replay_timeout_s",
        "spec.replicas.kv_events.max_tracked_blocks",
    }
    assert paths["spec.replicas.kv_events.replay_endpoints.r2"] == "replica has no entry in endpoints"


def test_tenant_objectives_and_quotas() -> None:
    from saga.service.app import engine_settings

    base = HEAD + "spec:\n  replicas: {static: [http://a:1]}\n  tenants:\n    - {name: default}\n"
    cfg = load_text(
        base + "    - {name: a, deadline_factor: 2, attainment_target: 0.95, ttft_s: 1.5,"
        " max_active_sessions: 10, max_calls_per_second: 2.5, max_kv_tokens: 100000}\n"
    )
    a = cfg.tenant("a")
    assert a is not None
    assert (a.deadline_factor, a.attainment_target, a.ttft_s) == (2.0, 0.95, 1.5)
    assert (a.max_active_sessions, a.max_calls_per_second, a.max_kv_tokens) == (10, 2.5, 100000)
    assert engine_settings(cfg).fairness.slo_factors == {"a": 2.0}  # default's 0: the engine's
    p = dict(
        problems(
            base + "    - {name: a, deadline_factor: 0.5, attainment_target: 2, ttft_s: -1,"
            " max_active_sessions: -1, max_calls_per_second: -2, max_kv_tokens: -3}\n"
        )
    )
    assert p["spec.tenants[1].deadline_factor"] == "must be >= 1 or 0, got 0.5"
    assert p["spec.tenants[1].attainment_target"] == "must be in [0, 1], got 2.0"
    for name in ("ttft_s", "max_active_sessions", "max_calls_per_second", "max_kv_tokens"):
        assert p[f"spec.tenants[1].{name}"].startswith("must be >= 0")


def test_kv_events_discovered_port() -> None:
    base = HEAD + "spec:\n  replicas:\n    kubernetes: {namespace: llm, label_selector: app=sglang}\n"
    assert load_text(base).spec.replicas.kv_events.discovered_port == 0  # off by default
    kv = load_text(
        base + "    kv_events: {discovered_port: 5557, topic: kv-events}\n"
    ).spec.replicas.kv_events
    assert (kv.discovered_port, kv.topic, kv.endpoints) == (5557, "kv-events", {})
    for bad in ("-1", "65536"):
        p = problems(base + f"    kv_events: {{discovered_port: {bad}}}\n")
        assert p == [
            (
                "spec.replicas.kv_events.discovered_port",
                f"must be 0 (off) or a TCP port in [1, 65535], got {bad}",
            )
        ]
    p = problems(base + "    kv_events: {discovered_port: '5557'}\n")  # phase 1: types
    assert [x[0] for x in p] == ["spec.replicas.kv_events.discovered_port"]


def test_kv_events_discovered_port_names() -> None:
    base = HEAD + "spec:\n  replicas:\n    kubernetes: {namespace: llm, label_selector: app=sglang}\n"
    kv = load_text(base).spec.replicas.kv_events
    assert (kv.discovered_port_name, kv.discovered_replay_port_name) == ("kv-events", "kv-replay")
    kv = load_text(
        base + "    kv_events: {discovered_port: 5557, discovered_replay_port_name: ''}\n"
    ).spec.replicas.kv_events
    assert kv.discovered_replay_port_name == ""  # no replay for discovered replicas
    p = problems(base + "    kv_events: {discovered_replay_port_name: Replay_Port}\n")
    assert p == [
        (
            "spec.replicas.kv_events.discovered_replay_port_name",
            "must be empty or a Kubernetes port name (a DNS label: lowercase letters, digits and '-',"
            " at most 63 characters), got 'Replay_Port'",
        )
    ]
    p = problems(base + "    kv_events: {discovered_port_name: x-, discovered_replay_port_name: '-'}\n")
    assert [x[0] for x in p] == [
        "spec.replicas.kv_events.discovered_port_name",
        "spec.replicas.kv_events.discovered_replay_port_name",
    ]
    p = problems(base + "    kv_events: {discovered_replay_port_name: kv-events}\n")
    assert p == [
        (
            "spec.replicas.kv_events.discovered_replay_port_name",
            "must differ from discovered_port_name ('kv-events')",
        )
    ]


def test_replica_keys_come_from_named_environment_variables() -> None:
    p = problems(
        HEAD + "spec:\n  replicas: {static: [http://a:1], api_key_env: 'not a name', session_field: x}\n"
    )
    assert ("spec.replicas.api_key_env", "must be an environment variable name, got 'not a name'") in p
    assert [x for x in p if x[0] == "spec.replicas.session_field"]
    cfg = load_text(
        HEAD
        + "spec:\n  replicas: {static: [http://a:1], api_key_env: SGL_KEY, admin_api_key_env: SGL_ADMIN}\n"
    )
    t = ClientTimeouts()
    with pytest.raises(ConfigError) as ei:
        client_settings(cfg.spec.replicas, t, {"SGL_KEY": "k1"})
    assert ei.value.problems == [
        ("spec.replicas.admin_api_key_env", "environment variable SGL_ADMIN is not set")
    ]
    got = client_settings(cfg.spec.replicas, t, {"SGL_KEY": "k1", "SGL_ADMIN": "k2"})
    assert (got.api_key, got.admin_api_key, got.session_field) == ("k1", "k2", "top_level")
    none = client_settings(embedded_default().spec.replicas, t, {"SGL_KEY": "k1"})
    assert (none.api_key, none.admin_api_key) == (None, None)
