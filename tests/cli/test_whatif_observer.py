"""What-if over flows fetched from a real Observer (in this process, real gRPC and protobuf):
fetch, place, replay against a candidate, report."""

from __future__ import annotations

import os

# As in tests/dataplane/observe: before grpc is imported (other tests fork after gRPC threads).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import json  # noqa: E402
import socket  # noqa: E402

import pytest  # noqa: E402

from septum.cli.flowconvert import distinct  # noqa: E402
from septum.cli.flowfetch import fetch_flows, node_observers  # noqa: E402
from septum.cli.policyerrors import InputError, ObserverError  # noqa: E402
from septum.cli.policyinput import ClusterObjects, load_engine, proposed_engine  # noqa: E402
from septum.cli.whatifreport import changed_flows, render_json, render_text, replay  # noqa: E402
from septum.dataplane.observe.metadata import EndpointInfo  # noqa: E402
from septum.operator.engine import Apply  # noqa: E402

from .clusterdata import CLUSTER, DENY_WEB, objects  # noqa: E402
from .observer_feed import DROPPED, event, fed_observer  # noqa: E402

WEB = EndpointInfo(7, 300, "shop", "web", ("k8s:app=web",), ips=("10.0.0.1",))
DB = EndpointInfo(8, 301, "shop", "db", ("k8s:app=db",), ips=("10.0.0.2",))


def _cluster() -> ClusterObjects:
    cluster = ClusterObjects()
    for obj in objects(CLUSTER):
        cluster.add(obj)
    return cluster


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_flows_whose_verdict_would_change() -> None:
    with fed_observer(WEB, DB) as observer:
        observer.push(
            *(event("10.0.0.1", "10.0.0.2", 5432, endpoint_id=8) for _ in range(3)),
            event("10.0.0.1", "10.0.0.2", 80, endpoint_id=8, verdict=DROPPED),
            event("10.0.0.9", "10.0.0.2", 5432, src_identity=300, endpoint_id=8),
        )
        dead = f"127.0.0.1:{_free_port()}"
        fetched = fetch_flows([observer.server, dead], "1h", timeout_s=2)
    assert fetched.answered == [observer.server]
    assert list(fetched.failed) == [dead]
    assert len(fetched.flows) == 5
    current = load_engine(_cluster()).engine
    proposed = proposed_engine(_cluster(), [Apply(obj) for obj in objects(DENY_WEB)]).engine
    seen = distinct(fetched.flows, current)
    changed = changed_flows(replay(current, proposed, seen.flows.values()), seen)
    assert [(c.source, c.destination, c.port, c.count) for c in changed] == [
        ("shop/web", "shop/db", 5432, 3)
    ]
    (web_db,) = changed
    assert (web_db.before.verdict, web_db.after.verdict) == ("ALLOWED", "DENIED")
    assert web_db.observed == {"FORWARDED": 3}
    assert web_db.after.reasons == (
        "ingress: deny by policy tier: SeptumNetworkPolicy shop/deny-web spec.ingressDeny[0]",
    )
    text = render_text(changed, seen, [])
    assert text.splitlines()[0] == "shop/web -> shop/db TCP/5432: ALLOWED -> DENIED  x3"
    assert "not placed: 1 flows: 10.0.0.9 (pod identity 300) has no pod" in text
    assert text.splitlines()[-1] == (
        "1 of 2 distinct connections would change (3 of 5 flows); 1 flows could not be placed"
    )
    body = json.loads(json.dumps(render_json(changed, seen, [])))
    assert body["changedConnections"][0]["candidate"]["verdict"] == "DENIED"
    assert body["unplaced"]


def test_fetch_errors_name_the_flag() -> None:
    with pytest.raises(ObserverError, match=r"^--server: no Observer answered \(127"):
        fetch_flows([f"127.0.0.1:{_free_port()}"], "1h", timeout_s=1)
    with pytest.raises(InputError, match=r"^--since: 'yesterday' is neither"):
        fetch_flows(["127.0.0.1:1"], "yesterday")


def test_observers_from_nodes(tmp_path: object) -> None:
    nodes = [obj for obj in objects(CLUSTER) if obj["kind"] == "Node"]
    assert node_observers(nodes) == ["192.168.0.1:4244", "192.168.0.2:4244"]
