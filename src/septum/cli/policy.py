"""`septum policy`: validate, explain, diff and what-if, over manifests or the live cluster.

Offline, manifests may hold policies, pods, namespaces and nodes (multi-document YAML or
`kind: List`). With a kubeconfig the commands read the cluster instead (the policies as the
agents enforce them), and `-f` adds manifests on top. Either way one loader
(`septum.cli.policyinput`) feeds the engine, exactly as the operator and the agents do.

Exit codes: explain 0 allowed / 1 denied; diff and what-if 0 nothing changes / 1 something
changes (as `diff`); every command 2 on an error, with one line naming the argument or field.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from septum.cli.policyerrors import InputError, PolicyCliError
from septum.cli.policyinput import (
    POLICY_KINDS,
    Candidate,
    ClusterObjects,
    Loaded,
    candidate_from_manifests,
    documents,
    load_engine,
    objects_from_manifests,
    proposed_engine,
)
from septum.operator.engine import Engine, InvalidPolicy, UnknownEndpoint, explain, parse_policy

F = TypeVar("F", bound=Callable[..., Any])


class _Failed(click.ClickException):
    exit_code = 2  # 1 means "denied" / "changes"; an error must not read as either


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except PolicyCliError as err:
        raise _Failed(str(err)) from err


def _kubeconfig_option(command: F) -> F:
    return click.option(
        "--kubeconfig",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Read the live cluster through this kubeconfig (default: $KUBECONFIG).",
    )(command)


def _timeout_option(command: F) -> F:
    return click.option(
        "--timeout",
        "timeout_s",
        type=click.FloatRange(min=0.1),
        default=10.0,
        show_default=True,
        help="Seconds to wait for the API server (and each Observer).",
    )(command)


def _output_option(command: F) -> F:
    return click.option(
        "-o",
        "--output",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="text for people, json for scripts.",
    )(command)


def _env_kubeconfig() -> Path | None:
    first = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    return Path(first) if first else None


def _read_cluster(kubeconfig: Path, timeout_s: float) -> ClusterObjects:
    from septum.cli.cluster import read_cluster  # kubernetes_asyncio only when it is needed

    return asyncio.run(read_cluster(kubeconfig, timeout_s))


def _loaded(objects: ClusterObjects) -> Loaded:
    """The engine over `objects`; notes and policies the engine left out go to stderr."""
    loaded = load_engine(objects)
    for note in objects.notes:
        click.echo(f"note: {note}", err=True)
    for name, error in loaded.rejected.items():
        click.echo(f"warning: {name} ignored: {error}", err=True)
    return loaded


@click.group(name="policy")
def policy() -> None:
    """Check, explain and preview network policies: offline from manifests, or live."""


@policy.command()
@click.option(
    "-f", "--filename", "paths", multiple=True, required=True, help="Manifest file ('-' for stdin)."
)
def validate(paths: tuple[str, ...]) -> None:
    """Parse every policy; report each invalid field with its full path."""
    failures = 0
    count = 0
    with _errors():
        objects = list(documents(paths))
    for where, obj in objects:
        if obj.get("kind") not in POLICY_KINDS:
            continue
        count += 1
        try:
            parse_policy(obj)
        except InvalidPolicy as err:
            failures += 1
            click.echo(f"{where}: {err}", err=True)
    click.echo(f"{count - failures} valid, {failures} invalid")
    if failures:
        raise SystemExit(1)


def _endpoint(text: str) -> str | dict[str, Any]:
    """'ns/pod', 'host:NODE' (a node's host endpoint), an IP, or 'ns:key=value,…'
    for a hypothetical pod (the '=' tells it from 'host:NODE')."""
    if ":" in text and "=" in text:
        namespace, _, labels = text.partition(":")
        pairs = dict(item.split("=", 1) for item in labels.split(",") if item)
        return {"namespace": namespace, "labels": pairs}
    return text


@policy.command(name="explain")
@click.option(
    "-f",
    "--filename",
    "paths",
    multiple=True,
    help="Manifests: policies, pods, namespaces, nodes (with --kubeconfig: on top of the cluster).",
)
@_kubeconfig_option
@_timeout_option
@click.option(
    "--from",
    "source",
    required=True,
    help="Source: ns/pod, host:NODE, an IP, or ns:key=value,… (hypothetical).",
)
@click.option(
    "--to",
    "destination",
    required=True,
    help="Destination: ns/pod, host:NODE, an IP, or ns:key=value,….",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    required=True,
    help="Destination port (ICMP: the type).",
)
@click.option(
    "--protocol", default="TCP", show_default=True, help="TCP, UDP, SCTP, ICMP or ICMPv6."
)
def explain_command(
    paths: tuple[str, ...],
    kubeconfig: Path | None,
    timeout_s: float,
    source: str,
    destination: str,
    port: int,
    protocol: str,
) -> None:
    """Say whether a connection is allowed, in which tier, and which policy and rule decided.

    Without -f the live cluster is read ($KUBECONFIG or --kubeconfig); -f alone works
    offline; both explain the cluster with the manifests applied on top.
    """
    if kubeconfig is None and not paths:
        kubeconfig = _env_kubeconfig()
        if kubeconfig is None:
            raise _Failed("-f or --kubeconfig: give manifests, a kubeconfig, or both")
    with _errors():
        objects = objects_from_manifests(paths)
        if kubeconfig is not None:
            objects = _read_cluster(kubeconfig, timeout_s).overlaid(objects)
        engine = _loaded(objects).engine
    try:
        result = explain(engine, _endpoint(source), _endpoint(destination), port, protocol)
    except UnknownEndpoint as err:
        raise click.BadParameter(str(err), param_hint="--from/--to") from err
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--protocol") from err
    click.echo(result.summary())
    if not result.allowed:
        raise SystemExit(1)


def _live_kubeconfig(kubeconfig: Path | None) -> Path:
    found = kubeconfig or _env_kubeconfig()
    if found is None:
        raise _Failed("--kubeconfig: required (or set KUBECONFIG): the command reads the cluster")
    return found


def _proposed(cluster: ClusterObjects, wanted: Candidate) -> Engine:
    """The cluster's engine with the candidate applied; a policy the engine refuses in
    context (a priority already taken, say) is an error naming it."""
    loaded = proposed_engine(cluster, wanted.changes)
    if loaded.rejected:
        name, error = next(iter(loaded.rejected.items()))
        raise InputError(f"-f: {name}: {error}")
    return loaded.engine


def _candidate_options(command: F) -> F:
    command = _output_option(command)
    command = _timeout_option(command)
    command = _kubeconfig_option(command)
    return click.option(
        "-f",
        "--filename",
        "paths",
        multiple=True,
        required=True,
        help="The candidate policies ('-' for stdin); same kind and name replaces a policy.",
    )(command)


@policy.command(name="diff")
@_candidate_options
def diff_command(
    paths: tuple[str, ...], kubeconfig: Path | None, timeout_s: float, output: str
) -> None:
    """Print each endpoint's effective change (datapath entries added and removed) if the
    candidate policies were applied. Exit 0: no change; 1: changes; 2: error."""
    from septum.cli.diffreport import endpoint_changes, render_json, render_text
    from septum.operator.engine.whatif import effective_diff

    config = _live_kubeconfig(kubeconfig)
    with _errors():
        wanted = candidate_from_manifests(paths)
        cluster = _read_cluster(config, timeout_s)
        current = _loaded(cluster).engine
        proposed = _proposed(cluster, wanted)
    for where in wanted.ignored:
        click.echo(f"note: {where}: not a policy, ignored", err=True)
    changes = endpoint_changes(current, proposed, effective_diff(current, proposed))
    endpoints = len(proposed.endpoints()) + len(proposed.host_endpoints())
    if output == "json":
        click.echo(json.dumps(render_json(changes, endpoints), indent=2))
    else:
        click.echo(render_text(changes, endpoints))
    raise SystemExit(1 if changes else 0)


@policy.command(name="what-if")
@_candidate_options
@click.option(
    "--since",
    default="1h",
    show_default=True,
    help="Flows since this time (RFC 3339) or this long ago (5m, 1h).",
)
@click.option(
    "--server",
    "servers",
    multiple=True,
    help="Observer address (repeatable; default: every node's agent, found from the Nodes).",
)
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default="/run/septum",
    show_default=True,
    help="Where this machine has the agents' per-node sockets (<run-dir>/<node>/observer.sock).",
)
@click.option(
    "--allow-localhost",
    type=click.Choice(["always", "policy"]),
    default="always",
    show_default=True,
    help="As the agents run: always skips node-to-own-pod flows (policy never decides them).",
)
def what_if_command(
    paths: tuple[str, ...],
    kubeconfig: Path | None,
    timeout_s: float,
    output: str,
    since: str,
    servers: tuple[str, ...],
    run_dir: Path,
    allow_localhost: str,
) -> None:
    """Replay the agents' recent flows against the candidate policies; list the connections
    whose verdict would change. Exit 0: none; 1: some; 2: error."""
    from septum.cli.flowconvert import distinct
    from septum.cli.flowfetch import fetch_flows, node_observers
    from septum.cli.whatifreport import changed_flows, render_json, render_text, replay

    config = _live_kubeconfig(kubeconfig)
    with _errors():
        wanted = candidate_from_manifests(paths)
        cluster = _read_cluster(config, timeout_s)
        current = _loaded(cluster).engine
        proposed = _proposed(cluster, wanted)
        fetched = fetch_flows(
            list(servers) or node_observers(cluster.nodes, run_dir), since, timeout_s
        )
        seen = distinct(fetched.flows, current, allow_localhost == "always")
        report = replay(current, proposed, seen.flows.values())
    notes = [f"{where}: not a policy, ignored" for where in wanted.ignored]
    notes += [f"Observer {server} skipped: {why}" for server, why in fetched.failed.items()]
    if fetched.lost:
        notes.append(f"the Observers lost {fetched.lost} flows (ring overrun): replay is partial")
    changed = changed_flows(report, seen)
    if output == "json":
        body = render_json(changed, seen, notes)
        body["servers"] = {"answered": fetched.answered, "failed": fetched.failed}
        click.echo(json.dumps(body, indent=2))
    else:
        click.echo(render_text(changed, seen, notes))
    raise SystemExit(1 if changed else 0)
