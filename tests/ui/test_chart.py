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
    assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == "septum-ui"


def test_the_policy_view_reads_the_cluster_read_only_through_its_own_account() -> None:
    assert not {key for key in render() if key[1] == "septum-ui"}
    objs = render("ui.enabled=true")
    account = objs[("ServiceAccount", "septum-ui")]
    assert account["metadata"]["namespace"] == "kube-system"
    assert account.get("automountServiceAccountToken", True)  # the pod reads with its token
    binding = objs[("ClusterRoleBinding", "septum-ui")]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "septum-ui",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "septum-ui", "namespace": "kube-system"}
    ]
    rules = objs[("ClusterRole", "septum-ui")]["rules"]
    granted = {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    # Exactly the lists septum.cli.cluster makes, and nothing that writes.
    from septum.cli.cluster import KINDS

    lists = {(k.api_version.rpartition("/")[0], k.plural, "list") for k in KINDS}
    crd = ("apiextensions.k8s.io", "customresourcedefinitions", "get")
    assert granted == lists | {crd}
    (crd_rule,) = [r for r in rules if "customresourcedefinitions" in r["resources"]]
    assert sorted(crd_rule["resourceNames"]) == sorted(
        f"{k.plural}.{k.api_version.rpartition('/')[0]}" for k in KINDS if k.optional
    )


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
