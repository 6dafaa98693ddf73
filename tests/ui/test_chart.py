"""The chart's UI part rendered by the real helm: off by default, on with ui.enabled (with its
Service), pointed at the relay (TLS when the relay serves TLS), args `septum ui` accepts."""

from __future__ import annotations

from typing import Any

import click
import pytest

from septum.cli.ui import ui
from tests.helm.test_chart_render import _container, _helm, render

pytestmark = pytest.mark.lab  # helm is one of the lab's Go-built binaries


def _parse(args: list[str]) -> dict[str, Any]:
    """The rendered args through `septum ui`'s own parser (no server is started)."""
    ctx = ui.make_context("ui", list(args[1:]), resilient_parsing=False)
    assert args[0] == "ui"
    return dict(ctx.params)


def test_off_by_default_and_on_with_its_service() -> None:
    assert ("Deployment", "septum-ui") not in render()
    objs = render("ui.enabled=true")
    deploy, service = objs[("Deployment", "septum-ui")], objs[("Service", "septum-ui")]
    container = _container(deploy)
    params = _parse(container["args"])
    assert params["port"] == 12000
    assert params["server"] == "septum-relay.kube-system.svc:80"
    assert not params["tls"] and not params["tls_ca_cert_files"]
    assert container["ports"][0]["containerPort"] == 12000
    assert service["spec"]["ports"][0] == {
        "name": "http",
        "port": 80,
        "targetPort": "http",
        "protocol": "TCP",
    }
    assert service["spec"]["selector"] == deploy["spec"]["selector"]["matchLabels"]
    assert deploy["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_a_tls_relay_is_dialled_with_tls_and_only_its_ca() -> None:
    objs = render("ui.enabled=true", "relay.tls.enabled=true")
    deploy = objs[("Deployment", "septum-ui")]
    # (Not parsed: the parser checks the CA file exists, which only the pod has.)
    args = _container(deploy)["args"]
    assert "--server=tls://septum-relay.kube-system.svc:80" in args
    assert "--tls-ca-cert-files=/etc/septum/relay-ca/ca.crt" in args
    volume = deploy["spec"]["template"]["spec"]["volumes"][0]
    assert volume["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("ui.enabled=true", "relay.enabled=false"), "ui.enabled: the UI reads the relay"),
        (("ui.listenPort=0",), "/ui/listenPort"),
        (("ui.bogus=1",), "additional properties 'bogus' not allowed"),
    ],
)
def test_bad_values_are_refused_naming_the_key(sets: tuple[str, ...], message: str) -> None:
    from tests.helm.test_chart_render import CHART

    out = _helm("template", "septum", str(CHART), *(f"--set={s}" for s in sets))
    assert out.returncode != 0 and message in out.stderr, out.stderr


def test_parser_refuses_what_the_chart_never_renders() -> None:
    with pytest.raises(click.BadParameter):
        ui.make_context("ui", ["--port", "70000"])
