"""`septum demo`: the user's whole path on the lab, as `make demo` runs it.

Lab up; `helm install` Septum; Cilium's Star Wars app; both ships land; the L3/L4 policy; the
tiefighter lands and the xwing's request times out; the flows through the relay, read with
`septum observe` and the real `hubble`; the L7 policy: the tiefighter still lands, its
`PUT /v1/exhaust-port` gets `403 Access denied`, and the L7 flows through the relay; a
one-screen summary. The lab is left running for
exploration (`septum lab down` removes it). Each step says what it waits for; a step that fails
stops the walk with one line naming what was seen.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
from rich.console import Console
from rich.table import Table

from septum.demo import flows, starwars
from septum.demo.errors import DemoError
from septum.demo.relayaccess import RELAY_LOCAL, forward_relay
from septum.demo.release import Release, releases_on
from septum.demo.waiting import until
from septum.lab import lab as lab_mod
from septum.lab.binaries import locate
from septum.lab.errors import LabError

NODES = 2


@click.command()
@click.option("--nodes", default=NODES, show_default=True, help="Lab nodes (when starting it).")
def demo(nodes: int) -> None:
    """Install Septum with helm on the lab, run the Star Wars demo, show its flows."""
    console = Console(width=max(Console().width, 130))
    try:
        _walk(console, nodes)
    except (DemoError, LabError) as err:
        console.print(f"[bold red]demo failed:[/] {err}")
        console.print("The lab is left as it is for a look; `septum lab down` removes it.")
        sys.exit(1)


def _step(console: Console, text: str) -> None:
    console.print(f"[bold cyan]▶[/] {text}")


def _walk(console: Console, nodes: int) -> None:
    started = time.monotonic()
    lab_mod.require_root()
    with console.status("Starting the lab (a real control plane; nodes as namespaces)..."):
        lab_mod.up(nodes)
        lab = lab_mod.current()
    node_names = sorted(n.name for n in lab.nodes)
    _step(console, f"lab up: nodes {', '.join(node_names)}")

    release = Release(lab)
    others = [r for r in releases_on(lab) if r != (release.namespace, "septum-agent")]
    if others:
        raise DemoError(f"Septum is already installed on the lab elsewhere: {others}")
    with console.status(f"helm install septum ./helm/septum -n {release.namespace} ..."):
        if release.installed():
            release.wait_rolled_out(300)
        else:
            release.install()
    _step(console, f"helm install: agents on {len(release.agent_pods())} nodes, operator, relay")

    with console.status("Deploying the Star Wars app (deathstar x2, tiefighter, xwing)..."):
        starwars.delete_policy(lab)  # a demo run again starts from no policy
        starwars.deploy(lab)
    since = datetime.now(UTC).isoformat()
    _step(console, "Star Wars app running in namespace default")

    before = starwars.check_landings(lab, {"tiefighter": True, "xwing": True})
    _step(console, "No policy yet: " + _landings_text(before))

    with console.status("kubectl apply -f examples/starwars/policy-l3-l4.yaml ..."):
        policy = starwars.apply_policy(lab)
        starwars.wait_enforced(lab, policy, node_names)
    _step(console, "Policy rule1 enforced on every node: only org=empire may reach the deathstar")
    after = starwars.check_landings(lab, {"tiefighter": True, "xwing": False})
    _step(console, "With the policy: " + _landings_text(after))

    with console.status("Reading the flows through the relay..."):
        forward_relay(lab, release.namespace)
        hubble = flows.hubble_binary()
        filters = flows.deathstar_filters(since)
        seen_septum = flows.septum_observe(RELAY_LOCAL, *filters)
        seen_hubble = flows.hubble_observe(hubble, RELAY_LOCAL, *filters)
    _flows_table(console, "septum observe (through the relay)", seen_septum)
    _flows_table(console, "hubble observe (the real hubble CLI, through the relay)", seen_hubble)
    _l7_act(console, lab, node_names, hubble)
    _summary(console, release.namespace, time.monotonic() - started)


def _l7_act(console: Console, lab: lab_mod.Lab, node_names: list[str], hubble: Path) -> None:
    """The second act: an L7 rule lets imperial ships land but not open the exhaust port."""
    since = datetime.now(UTC).isoformat()
    with console.status("kubectl apply -f examples/starwars/policy-l7.yaml ..."):
        policy = starwars.apply_policy(lab, starwars.POLICY_L7)
        starwars.wait_enforced(lab, policy, node_names)
    _step(console, "Policy rule1 at L7: org=empire may only POST /v1/request-landing")
    answers = [
        starwars.ask(lab, "tiefighter", "POST", "/v1/request-landing"),
        starwars.ask(lab, "tiefighter", "PUT", "/v1/exhaust-port"),
        starwars.ask(lab, "xwing", "POST", "/v1/request-landing"),
    ]
    expected = [(200, "Ship landed"), (403, "Access denied"), (0, None)]
    for answer, (status, body) in zip(answers, expected, strict=True):
        if answer.status != status or (body is not None and answer.body != body):
            raise DemoError(f"at L7, {answer.ship}: {answer.line}")
    _step(console, "With the L7 policy: " + "; ".join(f"{a.ship} {a.line}" for a in answers))
    with console.status("Reading the L7 flows through the relay..."):
        filters = ["--since", since, "--type", "l7", "--pod", "default/tiefighter"]
        seen = until(
            "the L7 flows of the tiefighter's two requests through the relay",
            lambda: _with_both_requests(flows.hubble_observe(hubble, RELAY_LOCAL, *filters)),
            30,
        )
        compact = flows.hubble_compact(hubble, RELAY_LOCAL, *filters)
    _l7_table(console, seen)
    console.print("[bold]hubble observe --type l7 -o compact[/] (the real hubble CLI):")
    console.print(compact.rstrip(), markup=False, highlight=False, soft_wrap=True)


def _with_both_requests(seen: list[dict[str, Any]]) -> list[dict[str, Any]]:
    methods = {
        (f["l7"].get("http") or {}).get("method") for f in seen if f["l7"]["type"] == "REQUEST"
    }
    return seen if {"POST", "PUT"} <= methods else []


def _l7_table(console: Console, seen: list[dict[str, Any]]) -> None:
    table = Table(
        title="L7 flows: hubble observe --type l7 (through the relay)", title_justify="left"
    )
    # the response's row is the one from the deathstar, with a status
    for column, width in (("source", 0), ("destination", 0), ("verdict", 9), ("request", 0),
                          ("status", 6)):  # fmt: skip
        table.add_column(column, no_wrap=True, min_width=width or None)
    for flow in seen:
        http = flow["l7"].get("http") or {}
        line = flows.FlowLine.of(flow)
        colour = "green" if flow["verdict"] == "FORWARDED" else "red"
        table.add_row(
            line.source, line.destination, f"[{colour}]{flow['verdict']}[/]",
            f"{http.get('method', '')} {urlsplit(http.get('url', '')).path}",
            str(http.get("code") or "-"),
        )  # fmt: skip
    console.print(table)


def _landings_text(landings: list[starwars.Landing]) -> str:
    return ", ".join(
        f"{r.ship} {'[green]landed[/]' if r.landed else '[red]dropped[/]'} ({r.output})"
        for r in landings
    )


def _flows_table(console: Console, title: str, seen: list[dict[str, Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in ("source", "destination", "verdict", "deciding policy", "drop reason"):
        table.add_column(column, no_wrap=True)
    lines = [flows.FlowLine.of(f) for f in seen]
    shown: set[tuple[str, str, str]] = set()
    for line in lines:
        key = (line.source, line.destination, line.verdict)
        if key in shown:
            continue
        shown.add(key)
        colour = "green" if line.verdict == "FORWARDED" else "red"
        table.add_row(
            line.source, f"{line.destination}:{line.port}", f"[{colour}]{line.verdict}[/]",
            ", ".join(_policy_text(p) for p in line.policies) or "-", line.drop_reason or "-",
        )  # fmt: skip
    console.print(table)
    console.print(
        f"({len(lines)} flows to the deathstar; one row per source, destination and verdict)"
    )


def _bin_dirs() -> str:
    """Where the lab's kubectl and helm and the hubble CLI are (they are not on PATH)."""
    binaries = locate()
    dirs = dict.fromkeys(
        str(p.parent) for p in (binaries.kubectl, binaries.helm, flows.hubble_binary())
    )
    return ":".join(dirs)


def _policy_text(policy: str) -> str:
    """`Kind/ns/name` as `ns/name (Kind)`: the name first, where a reader looks."""
    kind, _, rest = policy.partition("/")
    return f"{rest} ({kind})" if rest else policy


def _summary(console: Console, namespace: str, elapsed_s: float) -> None:
    console.rule(f"[bold]Septum is enforcing on the lab[/] ({elapsed_s:.0f} s)")
    console.print(
        f"""The lab stays up for you to explore (as root, from this checkout; kubectl, helm and
hubble are the lab's own builds: PATH="$PATH:{_bin_dirs()}"):

  export KUBECONFIG=$(.venv/bin/septum lab kubeconfig)
  kubectl get pods -A -o wide            the lab's pods, Septum's in {namespace}
  kubectl get snp,septumendpoints,septumnodes
  .venv/bin/septum observe --follow      every node's flows, through the relay (localhost:4245)
  hubble observe --follow --verdict DROPPED   the real hubble CLI, same relay
  kubectl exec xwing -- curl -s --max-time 3 -XPOST deathstar/v1/request-landing
  kubectl exec tiefighter -- curl -s -XPUT deathstar/v1/exhaust-port     403 Access denied
  hubble observe --type l7 --http-status 403   the refused request, with method and URL
  .venv/bin/septum policy explain --from default/xwing --to default:org=empire,class=deathstar \\
      --port 80                          why the xwing is dropped: tier, policy, rule
  helm uninstall septum -n {namespace}   removes Septum (pins and CNI chaining included)

Tear down: .venv/bin/septum lab down    (then `make test` runs on a fresh lab)"""
    )
