"""`septum operator`: run the cluster-wide operator (thin: options in, septum.operator.daemon)."""

from __future__ import annotations

from pathlib import Path

import click

from septum.operator.daemon import DEFAULT_HEALTH_PORT, Options, run
from septum.operator.errors import ConfigError
from septum.operator.kube import pod_namespace
from septum.operator.owner import Owner


def _duration_s(text: str) -> float:
    """`300`, `300s`, `5m`, `1h` as seconds (Cilium's options take Go durations)."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for suffix in ("ms", "s", "m", "h"):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * units[suffix]
    return float(text)


class _Duration(click.ParamType[float]):
    name = "duration"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float):
            return float(value)
        try:
            return _duration_s(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a duration (e.g. 300, 90s, 5m)", param, ctx)


def _deployment(ctx: click.Context, param: click.Parameter, value: str | None) -> Owner | None:
    """NAMESPACE/NAME as the Deployment; a usage error naming the flag otherwise."""
    try:
        return None if value is None else Owner.parse("deployments", value)
    except ValueError as err:
        raise click.BadParameter(str(err), ctx, param) from None


@click.command()
@click.option(
    "--kubeconfig",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Kubeconfig file; without it, the in-cluster service account.",
)
@click.option(
    "--namespace",
    default=lambda: pod_namespace(),
    show_default="$POD_NAMESPACE, else the service account's namespace, else kube-system",
    help="Namespace of the leader-election Lease (septum-operator).",
)
@click.option(
    "--cluster-name",
    default="default",
    show_default=True,
    help="Cluster name in every identity's labels (io.cilium.k8s.policy.cluster).",
)
@click.option(
    "--identity-gc-interval",
    "identity_gc_interval_s",
    type=_Duration(),
    default="5m",
    show_default=True,
    help="How long an identity stays unused (no pod has its labels) before it is deleted.",
)
@click.option(
    "--health-port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_HEALTH_PORT,
    show_default=True,
    help="Port of /healthz and /readyz (0: no health server).",
)
@click.option(
    "--log-format", type=click.Choice(["json", "text"]), default="json", show_default=True
)
@click.option(
    "--leader-elect/--no-leader-elect",
    default=True,
    show_default=True,
    help="Act only while holding the Lease (run several replicas safely).",
)
@click.option(
    "--owner-deployment",
    default=None,
    callback=_deployment,
    help="NAMESPACE/NAME of the Deployment running this operator: gone at SIGTERM = "
    "uninstall (delete every SeptumIdentity and the Lease); unset: SIGTERM keeps all.",
)
def operator(**options: object) -> None:
    """Run the Septum operator: identities, policy validation and status, cluster-wide."""
    try:
        code = run(Options(**options))  # type: ignore[arg-type]
    except ConfigError as err:
        raise click.ClickException(str(err)) from None
    raise SystemExit(code)
