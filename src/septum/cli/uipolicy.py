"""`septum ui`'s policy service (septum.ui.v1.PolicyService): explain, what-if and the
policies selecting a workload, for the browser, over the same gRPC-Web bridge.

It lives in the CLI layer because it is `septum policy explain` / `what-if` behind another
front: the same loaders (manifests and/or the live cluster), the same engine calls, the same
replay of the relay's recent flows. Every error is a gRPC status naming the field at fault.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path

import grpc

from septum.cli.hubble.client import ClientTLS
from septum.cli.policyerrors import ClusterError, InputError, PolicyCliError
from septum.cli.policyinput import (
    ClusterObjects,
    candidate_from_manifests,
    load_engine,
    objects_from_manifests,
    proposed_engine,
)
from septum.operator.engine import Engine, UnknownEndpoint, explain
from septum.operator.engine.explain import DirectionVerdict, resolve_endpoint
from septum.ui.api.v1 import policy_pb2
from septum.ui.bridge import LocalCallError, LocalHandler

SERVICE = "/septum.ui.v1.PolicyService/"
CLUSTER_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class PolicySource:
    """Where the policies come from: manifests (-f), the cluster (--kubeconfig, or in a pod
    its service account's in-cluster configuration), or both."""

    paths: tuple[str, ...]
    kubeconfig: Path | None
    server: str  # the Observer the what-if replays the recent flows of (the UI's --server)
    in_cluster: bool = False  # no --kubeconfig, in a pod: read the cluster through its account
    tls: ClientTLS | None = None  # how the UI dials --server (its --tls* flags), for the what-if

    async def objects(self) -> ClusterObjects:
        cluster_wanted = self.kubeconfig is not None or self.in_cluster
        if not self.paths and not cluster_wanted:
            raise LocalCallError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "septum ui was started without --kubeconfig or -f, outside a pod: "
                "no policies to explain",
            )
        try:
            objects = objects_from_manifests(self.paths)
            if cluster_wanted:
                from septum.cli.cluster import read_cluster

                cluster = await read_cluster(self.kubeconfig, CLUSTER_TIMEOUT_S)
                objects = cluster.overlaid(objects)
        except ClusterError as err:
            raise LocalCallError(grpc.StatusCode.UNAVAILABLE, str(err)) from err
        except PolicyCliError as err:
            raise LocalCallError(grpc.StatusCode.FAILED_PRECONDITION, str(err)) from err
        return objects

    async def engine(self) -> Engine:
        return load_engine(await self.objects()).engine


def _direction(name: str, v: DirectionVerdict | None) -> policy_pb2.DirectionVerdict:
    if v is None:
        return policy_pb2.DirectionVerdict(direction=name, enforced=False, allowed=True)
    return policy_pb2.DirectionVerdict(
        direction=name,
        enforced=True,
        allowed=v.allowed,
        audit=v.audit,
        tier=v.tier.name if v.tier is not None else "",
        policy=str(v.policy) if v.policy is not None else "",
        reason=v.reason,
        passed_by=[str(ref) for ref in v.passed_by],
    )


def _endpoint_spec(field: str, text: str) -> str | dict[str, object]:
    text = text.strip()
    if not text:
        raise LocalCallError(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: required")
    if ":" in text and "=" in text:
        namespace, _, labels = text.partition(":")
        try:
            pairs = dict(item.split("=", 1) for item in labels.split(",") if item)
        except ValueError:
            raise LocalCallError(
                grpc.StatusCode.INVALID_ARGUMENT, f"{field}: want ns:key=value,... ({text!r})"
            ) from None
        return {"namespace": namespace, "labels": pairs}
    return text


def make_handlers(source: PolicySource) -> dict[str, LocalHandler]:
    async def explain_call(body: bytes) -> bytes:
        req = policy_pb2.ExplainRequest.FromString(body)
        src = _endpoint_spec("source", req.source)
        dst = _endpoint_spec("destination", req.destination)
        if req.port > 65535:
            raise LocalCallError(grpc.StatusCode.INVALID_ARGUMENT, f"port: {req.port} > 65535")
        engine = await source.engine()
        try:
            result = explain(engine, src, dst, req.port, req.protocol or "TCP")
        except UnknownEndpoint as err:
            raise LocalCallError(
                grpc.StatusCode.INVALID_ARGUMENT, f"source/destination: {err}"
            ) from err
        except ValueError as err:
            raise LocalCallError(grpc.StatusCode.INVALID_ARGUMENT, f"protocol: {err}") from err
        return policy_pb2.ExplainResponse(
            allowed=result.allowed,
            audited=result.audited,
            summary=result.summary(),
            directions=[
                _direction("egress", result.egress),
                _direction("ingress", result.ingress),
            ],
        ).SerializeToString()

    async def what_if_call(body: bytes) -> bytes:
        req = policy_pb2.WhatIfRequest.FromString(body)
        if not req.manifests.strip():
            raise LocalCallError(grpc.StatusCode.INVALID_ARGUMENT, "manifests: required")
        cluster = await source.objects()
        return await asyncio.to_thread(_what_if, cluster, req, source.server, source.tls)

    async def list_call(body: bytes) -> bytes:
        req = policy_pb2.ListPoliciesRequest.FromString(body)
        engine = await source.engine()
        labels = None
        if req.workload:
            try:
                labels = resolve_endpoint(engine, _endpoint_spec("workload", req.workload)).labels
            except UnknownEndpoint as err:
                raise LocalCallError(grpc.StatusCode.INVALID_ARGUMENT, f"workload: {err}") from err
        out = policy_pb2.ListPoliciesResponse()
        for policy in engine.ordered_policies():
            if labels is not None and not any(
                part.subject is not None and part.subject.matches(labels) for part in policy.parts
            ):
                continue
            key = policy.key
            out.policies.add(
                kind=key.kind, namespace=key.namespace, name=key.name, tier=policy.tier.name
            )
        return out.SerializeToString()

    return {
        SERVICE + "Explain": explain_call,
        SERVICE + "WhatIf": what_if_call,
        SERVICE + "ListPolicies": list_call,
    }


def _what_if(
    cluster: ClusterObjects, req: policy_pb2.WhatIfRequest, server: str, tls: ClientTLS | None
) -> bytes:
    """The replay, blocking (the Observer client and the engine): run in a thread."""
    from septum.cli.flowconvert import distinct
    from septum.cli.flowfetch import fetch_flows
    from septum.cli.whatifreport import changed_flows, replay, summary

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="septum-ui-whatif-") as f:
        f.write(req.manifests)
        f.flush()
        try:
            wanted = candidate_from_manifests([f.name])
        except InputError as err:
            raise LocalCallError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "manifests: "
                + str(err).replace(f"-f {f.name}", "").replace(f.name, "").lstrip(": "),
            ) from err
    current = load_engine(cluster).engine
    loaded = proposed_engine(cluster, wanted.changes)
    if loaded.rejected:
        name, error = next(iter(loaded.rejected.items()))
        raise LocalCallError(grpc.StatusCode.INVALID_ARGUMENT, f"manifests: {name}: {error}")
    try:
        fetched = fetch_flows([server], req.since or "1h", CLUSTER_TIMEOUT_S, tls)
    except PolicyCliError as err:
        raise LocalCallError(grpc.StatusCode.INVALID_ARGUMENT, f"since: {err}") from err
    seen = distinct(fetched.flows, current, True)
    changed = changed_flows(replay(current, loaded.engine, seen.flows.values()), seen)
    notes = [f"{where}: not a policy, ignored" for where in wanted.ignored]
    notes += [f"Observer {s} skipped: {why}" for s, why in fetched.failed.items()]
    if fetched.lost:
        notes.append(f"the Observers lost {fetched.lost} flows (ring overrun): replay is partial")
    out = policy_pb2.WhatIfResponse(
        summary=summary(changed, seen),
        flows=seen.total,
        connections=len(seen.flows),
        notes=notes,
    )
    for item in changed:
        c = out.changed.add(
            source=item.source,
            destination=item.destination,
            protocol=item.protocol,
            port=item.port,
            flows=item.count,
        )
        c.observed.update(item.observed)
        c.current.allowed = item.before.allowed
        c.current.decided_by.extend(item.before.reasons)
        c.candidate.allowed = item.after.allowed
        c.candidate.decided_by.extend(item.after.reasons)
    return out.SerializeToString()
