"""`septum agent`: run the per-node agent (see septum.agent.daemon)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import click

from septum.operator.owner import Owner

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration_s(flag: str, text: str) -> float:
    """A Go duration ("0s", "90s", "1h30m") in seconds, as Cilium's duration flags take them."""
    value = text.strip()
    if value == "0":
        return 0.0
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(number + unit for number, unit in parts) != value:
        raise click.BadParameter(
            f"{text!r} is not a duration (e.g. 0s, 30s, 5m, 1h30m)", param_hint=flag
        )
    return sum(float(number) * _DURATION_UNIT_S[unit] for number, unit in parts)


def _path(value: str | None) -> Path | None:
    return Path(value).resolve() if value else None


def _daemonset(ctx: click.Context, param: click.Parameter, value: str | None) -> Owner | None:
    """NAMESPACE/NAME as the DaemonSet; a usage error naming the flag otherwise."""
    try:
        return None if value is None else Owner.parse("daemonsets", value)
    except ValueError as err:
        raise click.BadParameter(str(err), ctx, param) from None


@click.command()
@click.option(
    "--node",
    envvar="NODE_NAME",
    required=True,
    help="The Kubernetes node this agent serves (default: $NODE_NAME).",
)
@click.option("--kubeconfig", default=None, help="Kubeconfig file (default: in-cluster).")
@click.option("--cni-conf-dir", default=None, help="The node's CNI conf dir (chain into it).")
@click.option("--cni-bin-dir", default=None, help="The node's CNI bin dir (install septum-cni).")
@click.option(
    "--state-dir",
    default="/var/lib/septum",
    show_default=True,
    help="Endpoint records kept across restarts (per node below it).",
)
@click.option(
    "--run-dir",
    default="/run/septum",
    show_default=True,
    help="Sockets (per node below it: agent.sock, health.sock, observer.sock).",
)
@click.option(
    "--allow-localhost",
    type=click.Choice(["always", "policy"]),
    default="always",
    show_default=True,
    help="always: the node reaches its pods whatever ingress policy says; policy: it does not.",
)
@click.option("--health-port", type=int, default=None, help="Serve /healthz, /readyz on TCP.")
@click.option("--health-socket", default=None, help="Serve /healthz, /readyz on a unix socket.")
@click.option("--observer-socket", default=None, help="Hubble Observer on a unix socket.")
@click.option(
    "--observer-address",
    default=None,
    help="Hubble Observer on TCP host:port, e.g. :4244 (TLS with --observer-tls-*, or "
    "--observer-insecure).",
)
@click.option("--observer-tls-cert-file", default=None, help="The Observer's TLS certificate.")
@click.option("--observer-tls-key-file", default=None, help="The Observer's TLS private key.")
@click.option(
    "--observer-tls-client-ca-file",
    default=None,
    help="CA of the client certificates, which are then required (mutual TLS).",
)
@click.option(
    "--observer-insecure", is_flag=True, help="Serve the Observer's TCP listener in plaintext."
)
@click.option(
    "--observer-tls-server-name",
    default=None,
    help="TLS server name advertised to peers "
    "[default: <node>.<cluster-name>.hubble-grpc.septum.io].",
)
@click.option(
    "--observer-advertise-address",
    default=None,
    help="host:port announced for this node (default: the listener's; on every address, "
    "the node's InternalIP with the listener's port).",
)
@click.option("--ct-gc-interval", type=float, default=60.0, show_default=True, help="Seconds.")
@click.option(
    "--log-format", type=click.Choice(["json", "text"]), default="json", show_default=True
)
@click.option("--log-level", default="INFO", show_default=True)
@click.option("--cluster-name", default="default", show_default=True)
@click.option(
    "--host-firewall/--no-host-firewall",
    default=False,
    show_default=True,
    help="Enforce host policies (nodeSelector) on the node's own interfaces.",
)
@click.option(
    "--host-audit", is_flag=True, help="Host firewall in audit mode: would-be drops pass."
)
@click.option(
    "--host-legacy-routing/--no-host-legacy-routing",
    default=False,
    show_default=True,
    help="Send packets between two pods of this node through the node's IP stack and its "
    "iptables FORWARD chain (off: the source pod's program delivers them, as Cilium's BPF "
    "host routing).",
)
@click.option(
    "--l7-proxy/--no-l7-proxy",
    default=False,
    show_default=True,
    help="Run the node's HTTP proxies and redirect connections that rules.http select to them "
    "(off: such connections are allowed at L3/L4 only).",
)
@click.option(
    "--tofqdns-min-ttl",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Seconds a DNS answer's addresses stay selected by toFQDNs at least (Cilium's option).",
)
@click.option(
    "--tofqdns-endpoint-max-ip-per-hostname",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Addresses kept per pod and name; beyond it those that expire first go.",
)
@click.option(
    "--tofqdns-idle-connection-grace-period",
    default="0s",
    show_default=True,
    help="How long an expired address stays while the pod's connection to it was recently "
    "active (a Go duration: 0s, 30s, 5m, 1h30m).",
)
@click.option(
    "--host-interface",
    "host_interfaces",
    multiple=True,
    help="A node interface for the host firewall (default: all carrying the node's addresses).",
)
@click.option(
    "--flow-history-dir",
    default=None,
    help="Keep days of flows behind GetFlows in an embedded store here (default: the ring only).",
)
@click.option(
    "--flow-history-server",
    default=None,
    help="Keep flow history on this ClickHouse server or cluster instead "
    "(http(s)://HOST[:PORT], its HTTP interface); password from $SEPTUM_FLOW_HISTORY_PASSWORD.",
)
@click.option(
    "--flow-history-server-username", default="default", show_default=True,
    envvar="SEPTUM_FLOW_HISTORY_USERNAME", help="ClickHouse user for the flow history.",
)  # fmt: skip
@click.option(
    "--flow-history-server-database", default="septum_flows", show_default=True,
    help="ClickHouse database of the flow history.",
)  # fmt: skip
@click.option(
    "--flow-history-server-create-tables/--no-flow-history-server-create-tables",
    default=True,
    show_default=True,
    help="Create the tables if missing; off on a cluster, where the DDL is the operator's "
    "(schema.cluster_ddl).",
)
@click.option(
    "--flow-export-file",
    default=None,
    help="Write flows as Hubble's flow-log JSON lines to this file, rotated by size "
    "(Hubble's --hubble-export-file-path).",
)
@click.option(
    "--flow-export-file-max-size-mb", type=float, default=10.0, show_default=True,
    help="Size at which the flow log rotates.",
)  # fmt: skip
@click.option(
    "--flow-export-file-max-backups", type=int, default=5, show_default=True,
    help="Rotated flow logs kept.",
)  # fmt: skip
@click.option(
    "--flow-export-otlp-endpoint",
    default=None,
    help="Send flows as OTLP logs to this collector (host:port of its OTLP/gRPC receiver).",
)
@click.option("--flow-export-otlp-insecure", is_flag=True, help="Plaintext to the OTLP collector.")
@click.option(
    "--flow-export-otlp-ca-file", default=None, help="CA of the OTLP collector's certificate."
)
@click.option(
    "--flow-export-otlp-header",
    "flow_export_otlp_headers",
    multiple=True,
    help="KEY=VALUE sent with every OTLP request (e.g. authorization=Bearer …); repeatable.",
)
@click.option(
    "--flow-export-allowlist",
    default="",
    help="Export only flows matching these FlowFilters (JSON objects, comma-separated, as "
    "Hubble's --hubble-export-allowlist).",
)
@click.option(
    "--flow-export-denylist", default="", help="Never export flows matching these FlowFilters."
)
@click.option(
    "--flow-export-fieldmask",
    multiple=True,
    help="Export only these Flow fields (e.g. time,verdict,source.pod_name); repeatable.",
)
@click.option(
    "--owner-daemonset",
    default=None,
    callback=_daemonset,
    help="NAMESPACE/NAME of the DaemonSet running this agent: gone at SIGTERM = uninstall "
    "(detach, unpin, unchain CNI, delete this node's objects); unset: SIGTERM keeps all.",
)
def agent(
    node: str,
    kubeconfig: str | None,
    cni_conf_dir: str | None,
    cni_bin_dir: str | None,
    state_dir: str,
    run_dir: str,
    allow_localhost: str,
    health_port: int | None,
    health_socket: str | None,
    observer_socket: str | None,
    observer_address: str | None,
    observer_tls_cert_file: str | None,
    observer_tls_key_file: str | None,
    observer_tls_client_ca_file: str | None,
    observer_insecure: bool,
    observer_tls_server_name: str | None,
    observer_advertise_address: str | None,
    ct_gc_interval: float,
    log_format: str,
    log_level: str,
    cluster_name: str,
    host_firewall: bool,
    host_audit: bool,
    host_legacy_routing: bool,
    l7_proxy: bool,
    tofqdns_min_ttl: int,
    tofqdns_endpoint_max_ip_per_hostname: int,
    tofqdns_idle_connection_grace_period: str,
    host_interfaces: tuple[str, ...],
    flow_history_dir: str | None,
    flow_history_server: str | None,
    flow_history_server_username: str,
    flow_history_server_database: str,
    flow_history_server_create_tables: bool,
    flow_export_file: str | None,
    flow_export_file_max_size_mb: float,
    flow_export_file_max_backups: int,
    flow_export_otlp_endpoint: str | None,
    flow_export_otlp_insecure: bool,
    flow_export_otlp_ca_file: str | None,
    flow_export_otlp_headers: tuple[str, ...],
    flow_export_allowlist: str,
    flow_export_denylist: str,
    flow_export_fieldmask: tuple[str, ...],
    owner_daemonset: Owner | None,
) -> None:
    """Run Septum's agent for one node: CNI chaining, datapath, policy, flows."""
    from septum.agent.daemon import AgentOptions, run
    from septum.agent.errors import AgentConfigError
    from septum.agent.observerconfig import ObserverOptions
    from septum.cli.flowexport import FlowExportFlagError, FlowExportFlags, export_configs

    try:
        flow_exports = export_configs(
            FlowExportFlags(
                file=flow_export_file,
                file_max_size_mb=flow_export_file_max_size_mb,
                file_max_backups=flow_export_file_max_backups,
                otlp_endpoint=flow_export_otlp_endpoint,
                otlp_insecure=flow_export_otlp_insecure,
                otlp_ca_file=flow_export_otlp_ca_file,
                otlp_headers=flow_export_otlp_headers,
                allowlist=flow_export_allowlist,
                denylist=flow_export_denylist,
                fieldmask=flow_export_fieldmask,
            )
        )
    except FlowExportFlagError as err:
        raise click.UsageError(str(err)) from None
    history_server = None
    if flow_history_server is not None:
        from septum.cli.historyserver import (
            PASSWORD_ENV,
            HistoryServerFlagError,
            server_settings,
        )

        if flow_history_dir is not None:
            raise click.UsageError("--flow-history-dir and --flow-history-server: choose one")
        try:
            history_server = server_settings(
                flow_history_server,
                flow_history_server_username,
                os.environ.get(PASSWORD_ENV, ""),
                flow_history_server_database,
            )
        except HistoryServerFlagError as err:
            raise click.UsageError(str(err)) from None
    from septum.agent.l7.fqdncache import FqdnConfig

    grace_s = _duration_s(
        "--tofqdns-idle-connection-grace-period", tofqdns_idle_connection_grace_period
    )
    tofqdns = FqdnConfig(
        min_ttl_s=tofqdns_min_ttl,
        max_ips_per_hostname=tofqdns_endpoint_max_ip_per_hostname,
        idle_connection_grace_s=grace_s,
    )
    run_root = Path(run_dir).resolve()
    options = AgentOptions(
        node=node,
        kubeconfig=str(_path(kubeconfig)) if kubeconfig else None,
        cni_conf_dir=_path(cni_conf_dir),
        cni_bin_dir=_path(cni_bin_dir),
        state_dir=Path(state_dir).resolve(),
        run_dir=run_root,
        allow_localhost="policy" if allow_localhost == "policy" else "always",
        health_port=health_port,
        health_socket=_path(health_socket) or run_root / node / "health.sock",
        observer=ObserverOptions(
            socket=_path(observer_socket) or run_root / node / "observer.sock",
            address=observer_address,
            tls_cert_file=_path(observer_tls_cert_file),
            tls_key_file=_path(observer_tls_key_file),
            tls_client_ca_file=_path(observer_tls_client_ca_file),
            insecure=observer_insecure,
            tls_server_name=observer_tls_server_name,
            advertise_address=observer_advertise_address,
        ),
        ct_gc_interval_s=ct_gc_interval,
        log_format="text" if log_format == "text" else "json",
        log_level=log_level,
        cluster_name=cluster_name,
        host_firewall=host_firewall,
        host_audit=host_audit,
        host_legacy_routing=host_legacy_routing,
        l7_proxy=l7_proxy,
        tofqdns=tofqdns,
        host_interfaces=tuple(host_interfaces),
        flow_history_dir=_path(flow_history_dir),
        flow_history_server=history_server,
        flow_history_create_tables=flow_history_server_create_tables,
        flow_exports=flow_exports,
        owner_daemonset=owner_daemonset,
    )
    try:
        options.check()
    except AgentConfigError as err:
        raise click.UsageError(str(err)) from None
    sys.exit(run(options))
