"""Cluster objects in, an `Engine` out: the one loader of `septum policy`.

Manifests (offline) and the live cluster (`septum.cli.cluster`) both produce a
`ClusterObjects`; `load_engine` feeds it to the engine exactly as the operator and the
agents do. Raw API dicts stay in this module and the reader; the commands see the engine.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from septum.cli.policyerrors import InputError
from septum.operator.engine import Apply, Engine, InvalidObject, InvalidPolicy, parse_policy
from septum.operator.engine.parse import policy_key
from septum.operator.engine.rules import PolicyKey

POLICY_KINDS = frozenset(
    {
        "NetworkPolicy",
        "SeptumNetworkPolicy",
        "SeptumClusterwideNetworkPolicy",
        "ClusterNetworkPolicy",
        "AdminNetworkPolicy",
        "BaselineAdminNetworkPolicy",
    }
)
Obj = dict[str, Any]


def documents(paths: Iterable[str]) -> Iterator[tuple[str, Obj]]:
    """(`file#document`, object) of every object in the files ('-' is stdin); `kind: …List`
    documents are unpacked."""
    for path in paths:
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text()
        except OSError as err:
            raise InputError(f"-f {path}: cannot read: {err.strerror}") from err
        try:
            loaded = list(yaml.safe_load_all(text))
        except yaml.YAMLError as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise InputError(f"-f {path}: not valid YAML: {first}") from err
        for index, doc in enumerate(loaded):
            if not isinstance(doc, dict):
                continue
            items = doc.get("items") if str(doc.get("kind", "")).endswith("List") else [doc]
            for item in items or []:
                if isinstance(item, dict):
                    yield f"{path}#{index}", item


def _object_key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    assert isinstance(meta, Mapping)
    return str(obj.get("kind", "")), str(meta.get("namespace") or ""), str(meta.get("name", ""))


@dataclass(slots=True)
class ClusterObjects:
    """What the engine is loaded from; `notes` say what was skipped and why."""

    namespaces: list[Obj] = field(default_factory=list)
    pods: list[Obj] = field(default_factory=list)
    nodes: list[Obj] = field(default_factory=list)
    policies: list[Obj] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, obj: Obj) -> bool:
        """File one object by its kind; False when the engine has no use for it."""
        kind = obj.get("kind", "")
        bucket = {"Namespace": self.namespaces, "Pod": self.pods, "Node": self.nodes}.get(kind)
        if bucket is None and kind in POLICY_KINDS:
            bucket = self.policies
        if bucket is None:
            return False
        bucket.append(obj)
        return True

    def overlaid(self, other: ClusterObjects) -> ClusterObjects:
        """These objects with `other`'s on top: an object of the same kind, namespace and
        name is replaced (the cluster plus a candidate's manifests)."""
        merged = ClusterObjects(notes=[*self.notes, *other.notes])
        for mine, theirs, out in (
            (self.namespaces, other.namespaces, merged.namespaces),
            (self.pods, other.pods, merged.pods),
            (self.nodes, other.nodes, merged.nodes),
            (self.policies, other.policies, merged.policies),
        ):
            replaced = {_object_key(obj) for obj in theirs}
            out.extend(obj for obj in mine if _object_key(obj) not in replaced)
            out.extend(theirs)
        return merged


def objects_from_manifests(paths: Iterable[str]) -> ClusterObjects:
    objects = ClusterObjects()
    for _, obj in documents(paths):
        objects.add(obj)
    return objects


@dataclass(frozen=True, slots=True)
class Loaded:
    engine: Engine
    rejected: dict[str, str]  # "Kind ns/name" -> why the engine left the policy out


def load_engine(objects: ClusterObjects) -> Loaded:
    """A fresh engine over `objects` (the engine's `load`, as the operator and agents use)."""
    engine = Engine()
    try:
        result = engine.load(
            namespaces=objects.namespaces,
            pods=objects.pods,
            nodes=objects.nodes,
            policies=objects.policies,
        )
    except InvalidObject as err:
        raise InputError(str(err)) from err
    return Loaded(engine, result.rejected)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A candidate policy set: the policies to apply, checked before anything is read."""

    changes: tuple[Apply, ...]
    keys: tuple[PolicyKey, ...]
    ignored: tuple[str, ...]  # `file#doc: Kind name` of objects that are not policies


def candidate_from_manifests(paths: Iterable[str]) -> Candidate:
    """Every policy in the files, validated; an invalid one is an InputError naming its
    file, object and field path."""
    changes: list[Apply] = []
    keys: list[PolicyKey] = []
    ignored: list[str] = []
    for where, obj in documents(paths):
        if obj.get("kind") not in POLICY_KINDS:
            kind, namespace, name = _object_key(obj)
            ignored.append(
                f"{where}: {kind or 'object'} {namespace + '/' if namespace else ''}{name}"
            )
            continue
        try:
            parse_policy(obj)
        except InvalidPolicy as err:
            raise InputError(f"-f {where}: {err}") from err
        changes.append(Apply(obj))
        keys.append(policy_key(obj))
    if not changes:
        raise InputError("-f: the candidate files hold no policy")
    return Candidate(tuple(changes), tuple(keys), tuple(ignored))


def proposed_engine(objects: ClusterObjects, changes: Iterable[Apply]) -> Loaded:
    """A second engine over the same objects, with `changes` applied through the engine's
    incremental path: what applying them would do.

    The engine's `whatif.candidate` makes this by deep-copying the live engine, but its
    rule resolver keys caches by `id(rule)`, which a deep copy invalidates (KeyError as
    soon as the copy has policies to re-resolve). Loading the same objects again gives the
    same identities and rule ids (the load is deterministic), so entries compare exactly.
    """
    loaded = load_engine(objects)
    rejected: dict[str, str] = {}
    for change in changes:
        try:
            loaded.engine.upsert_policy(change.obj)
        except InvalidPolicy as err:
            rejected[str(policy_key(change.obj))] = str(err)
    return Loaded(loaded.engine, rejected)
