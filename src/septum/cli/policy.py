"""`septum policy`: validate and explain policies from YAML manifests, offline.

Manifests may hold policies, pods, namespaces and nodes (multi-document YAML
or `kind: List`); the engine loads them exactly as the operator would.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import yaml

from septum.operator.engine import (
    Engine,
    InvalidObject,
    InvalidPolicy,
    UnknownEndpoint,
    explain,
    parse_policy,
)

POLICY_KINDS = {
    "NetworkPolicy",
    "SeptumNetworkPolicy",
    "SeptumClusterwideNetworkPolicy",
    "ClusterNetworkPolicy",
    "AdminNetworkPolicy",
    "BaselineAdminNetworkPolicy",
}


def _documents(paths: tuple[str, ...]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path in paths:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        try:
            loaded = list(yaml.safe_load_all(text))
        except yaml.YAMLError as err:
            raise click.BadParameter(f"{path}: not valid YAML: {err}", param_hint="-f") from err
        for index, doc in enumerate(loaded):
            if not isinstance(doc, dict):
                continue
            items = doc.get("items") if doc.get("kind", "").endswith("List") else [doc]
            for item in items or []:
                if isinstance(item, dict):
                    yield f"{path}#{index}", item


@click.group(name="policy")
def policy() -> None:
    """Check and explain network policies offline, from manifests."""


@policy.command()
@click.option(
    "-f", "--filename", "paths", multiple=True, required=True, help="Manifest file ('-' for stdin)."
)
def validate(paths: tuple[str, ...]) -> None:
    """Parse every policy; report each invalid field with its full path."""
    failures = 0
    count = 0
    for where, obj in _documents(paths):
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


def _load(paths: tuple[str, ...]) -> Engine:
    buckets: dict[str, list[dict[str, Any]]] = {
        "Namespace": [],
        "Pod": [],
        "Node": [],
        "policy": [],
    }
    for _, obj in _documents(paths):
        kind = obj.get("kind", "")
        if kind in POLICY_KINDS:
            buckets["policy"].append(obj)
        elif kind in buckets:
            buckets[kind].append(obj)
    engine = Engine()
    try:
        result = engine.load(
            namespaces=buckets["Namespace"],
            pods=buckets["Pod"],
            nodes=buckets["Node"],
            policies=buckets["policy"],
        )
    except InvalidObject as err:
        raise click.ClickException(str(err)) from err
    for name, error in result.rejected.items():
        click.echo(f"warning: {name} ignored: {error}", err=True)
    return engine


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
    required=True,
    help="Manifests: policies, pods, namespaces, nodes.",
)
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
    paths: tuple[str, ...], source: str, destination: str, port: int, protocol: str
) -> None:
    """Say whether a connection is allowed, in which tier, and which policy and rule decided."""
    engine = _load(paths)
    try:
        result = explain(engine, _endpoint(source), _endpoint(destination), port, protocol)
    except UnknownEndpoint as err:
        raise click.BadParameter(str(err), param_hint="--from/--to") from err
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--protocol") from err
    click.echo(result.summary())
    if not result.allowed:
        raise SystemExit(1)
