"""`septum agent` turns its flags into AgentOptions (the daemon itself is tested in tests/agent)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from septum.cli import agent as agent_cli


def _options(monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    seen: list[Any] = []

    def fake_run(options: Any) -> int:
        seen.append(options)
        return 0

    import septum.agent.daemon as daemon

    monkeypatch.setattr(daemon, "run", fake_run)
    result = CliRunner().invoke(agent_cli.agent, ["--node", "n1", *args])
    assert result.exit_code == 0, result.output
    return seen[0]


def test_flow_history_is_off_unless_a_directory_is_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert _options(monkeypatch).flow_history_dir is None
    options = _options(monkeypatch, "--flow-history-dir", str(tmp_path / "history"))
    assert options.flow_history_dir == (tmp_path / "history").resolve()


def test_flow_exports_take_hubbles_exporter_options(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from septum.dataplane.observe.api.flow import flow_pb2
    from septum.dataplane.observe.history.export import ExportConfig
    from septum.dataplane.observe.history.otlp import OtlpConfig

    assert _options(monkeypatch).flow_exports == ()
    options = _options(
        monkeypatch,
        "--flow-export-file", str(tmp_path / "flows.log"),
        "--flow-export-file-max-size-mb", "2.5",
        "--flow-export-file-max-backups", "3",
        "--flow-export-otlp-endpoint", "collector.observability:4317",
        "--flow-export-otlp-header", "authorization=Bearer x=y",
        "--flow-export-allowlist", '{"verdict":["DROPPED","ERROR"]},{"source_pod":["shop/"]}',
        "--flow-export-denylist", '{"destination_port":["53"]}',
        "--flow-export-fieldmask", "time,verdict",
        "--flow-export-fieldmask", "source.pod_name",
    )  # fmt: skip
    file, otlp = options.flow_exports
    assert isinstance(file, ExportConfig) and isinstance(otlp, OtlpConfig)
    assert (file.path, file.max_size_mb, file.max_backups) == (tmp_path / "flows.log", 2.5, 3)
    assert otlp.endpoint == "collector.observability:4317" and not otlp.insecure
    assert otlp.headers == (("authorization", "Bearer x=y"),)
    for config in (file, otlp):
        assert list(config.allow) == [
            flow_pb2.FlowFilter(verdict=[flow_pb2.DROPPED, flow_pb2.ERROR]),
            flow_pb2.FlowFilter(source_pod=["shop/"]),
        ]
        assert list(config.deny) == [flow_pb2.FlowFilter(destination_port=["53"])]
        assert tuple(config.field_mask) == ("time", "verdict", "source.pod_name")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--flow-export-file", "f", "--flow-export-allowlist", '{"verdict":'],
         "--flow-export-allowlist: not JSON"),
        (["--flow-export-file", "f", "--flow-export-denylist", '["DROPPED"]'],
         "--flow-export-denylist: each filter is a JSON object"),
        (["--flow-export-file", "f", "--flow-export-allowlist", '{"verdikt":["DROPPED"]}'],
         "--flow-export-allowlist: not a FlowFilter"),
        (["--flow-export-file", "f", "--flow-export-fieldmask", "time,colour"],
         "--flow-export-fieldmask: ['colour'] name no Flow field"),
        (["--flow-export-otlp-endpoint", "collector"], "--flow-export-otlp-endpoint"),
        (["--flow-export-otlp-insecure"], "need --flow-export-otlp-endpoint"),
        (["--flow-export-otlp-endpoint", "c:4317", "--flow-export-otlp-header", "nokey"],
         "--flow-export-otlp-header: 'nokey' is not KEY=VALUE"),
        (["--flow-export-allowlist", '{"verdict":["DROPPED"]}'],
         "need --flow-export-file or --flow-export-otlp-endpoint"),
        (["--flow-export-file", "f", "--flow-export-file-max-size-mb", "0"],
         "--flow-export-file-max-size-mb"),
    ],
)  # fmt: skip
def test_bad_flow_export_flags_are_refused_by_name(args: list[str], named: str) -> None:
    result = CliRunner().invoke(agent_cli.agent, ["--node", "n1", *args])
    assert result.exit_code == 2, result.output
    assert named in result.output


def test_flow_history_on_a_clickhouse_server_is_a_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from septum.dataplane.observe.history.store import ServerSettings

    monkeypatch.setenv("SEPTUM_FLOW_HISTORY_PASSWORD", "s3cret")
    options = _options(
        monkeypatch,
        "--flow-history-server", "https://clickhouse.observability:8443",
        "--flow-history-server-username", "septum",
        "--flow-history-server-database", "flows_prod",
        "--no-flow-history-server-create-tables",
    )  # fmt: skip
    assert options.flow_history_server == ServerSettings(
        host="clickhouse.observability", port=8443, username="septum", password="s3cret",
        secure=True, database="flows_prod",
    )  # fmt: skip
    assert options.flow_history_create_tables is False
    plain = _options(monkeypatch, "--flow-history-server", "http://ch")
    assert (plain.flow_history_server.port, plain.flow_history_server.secure) == (8123, False)
    assert _options(monkeypatch).flow_history_server is None


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--flow-history-server", "clickhouse:8123"], "is not http://HOST[:PORT]"),
        (["--flow-history-server", "http://u:p@ch:8123"], "credentials do not belong in the URL"),
        (["--flow-history-server", "http://ch:8123/db"], "only scheme, host and port"),
        (["--flow-history-server", "http://ch:99999"], "--flow-history-server"),
        (["--flow-history-server", "http://ch", "--flow-history-server-database", "a-b"],
         "--flow-history-server-database"),
        (["--flow-history-server", "http://ch", "--flow-history-dir", "/tmp/h"], "choose one"),
    ],
)  # fmt: skip
def test_bad_flow_history_server_flags_are_refused_by_name(args: list[str], named: str) -> None:
    result = CliRunner().invoke(agent_cli.agent, ["--node", "n1", *args])
    assert result.exit_code == 2, result.output
    assert named in result.output


def test_pods_of_the_node_skip_its_stack_unless_legacy_routing_is_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _options(monkeypatch).host_legacy_routing is False
    assert _options(monkeypatch, "--host-legacy-routing").host_legacy_routing is True


def test_the_l7_proxy_is_off_unless_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _options(monkeypatch).l7_proxy is False
    assert _options(monkeypatch, "--l7-proxy").l7_proxy is True


def test_tofqdns_options_as_cilium_names_them(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = _options(monkeypatch).tofqdns
    assert (defaults.min_ttl_s, defaults.max_ips_per_hostname) == (0, 1000)
    assert defaults.idle_connection_grace_s == 0.0
    options = _options(
        monkeypatch,
        "--tofqdns-min-ttl",
        "3600",
        "--tofqdns-endpoint-max-ip-per-hostname",
        "50",
        "--tofqdns-idle-connection-grace-period",
        "1m30s",
    ).tofqdns
    assert (options.min_ttl_s, options.max_ips_per_hostname) == (3600, 50)
    assert options.idle_connection_grace_s == 90.0


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--tofqdns-min-ttl", "-1"], "--tofqdns-min-ttl"),
        (["--tofqdns-endpoint-max-ip-per-hostname", "0"], "--tofqdns-endpoint-max-ip-per-hostname"),
        (["--tofqdns-idle-connection-grace-period", "5 minutes"],
         "--tofqdns-idle-connection-grace-period"),
    ],
)  # fmt: skip
def test_bad_tofqdns_options_are_refused_by_name(args: list[str], named: str) -> None:
    result = CliRunner().invoke(agent_cli.agent, ["--node", "n1", *args])
    assert result.exit_code == 2, result.output
    assert named in result.output
