"""septum.cli.diffreport: the effective per-endpoint change, readable and as JSON."""

from __future__ import annotations

import json

from septum.cli.diffreport import endpoint_changes, render_json, render_text
from septum.cli.policyinput import ClusterObjects, load_engine, proposed_engine
from septum.operator.engine import Apply, Engine
from septum.operator.engine.whatif import effective_diff

from .clusterdata import CLUSTER, DENY_WEB, SAME, objects


def _cluster(text: str = CLUSTER) -> ClusterObjects:
    cluster = ClusterObjects()
    for obj in objects(text):
        cluster.add(obj)
    return cluster


def _diff(candidate_text: str) -> tuple[Engine, Engine, int]:
    current = load_engine(_cluster()).engine
    loaded = proposed_engine(_cluster(), [Apply(obj) for obj in objects(candidate_text)])
    assert not loaded.rejected
    proposed = loaded.engine
    endpoints = len(proposed.endpoints()) + len(proposed.host_endpoints())
    return current, proposed, endpoints


def test_a_deny_lists_the_pod_and_the_entry() -> None:
    current, proposed, endpoints = _diff(DENY_WEB)
    changes = endpoint_changes(current, proposed, effective_diff(current, proposed))
    assert [change.endpoint for change in changes] == ["shop/db"]
    (db,) = changes
    added = [line for line in db.lines if line.change == "+"]
    # The allow it replaces is listed right before it, as removed, described by the current engine.
    web = [line for line in db.lines if line.peer == "shop/{app=web}"]
    assert [(line.change, line.verdict) for line in web] == [("-", "allow"), ("+", "deny")]
    assert "NetworkPolicy shop/db-from-web spec.ingress[0]" in web[0].decided_by
    # The default deny stays, now also in the candidate's name: one `~` line per entry.
    assert {line.change for line in db.lines if line.peer == "any peer"} == {"~"}
    assert any(
        line.direction == "ingress"
        and line.peer == "shop/{app=web}"
        and (line.protocol, line.ports) == ("TCP", "5432")
        and line.verdict == "deny"
        and line.policy == "SeptumNetworkPolicy shop/deny-web"
        for line in added
    ), added
    text = render_text(changes, endpoints)
    assert text.splitlines()[0] == "shop/db:"
    assert "deny by policy tier: SeptumNetworkPolicy shop/deny-web" in text
    assert text.splitlines()[-1].startswith(f"1 of {endpoints} endpoints change: ")
    body = json.loads(json.dumps(render_json(changes, endpoints)))
    assert body["changed"] is True
    assert body["endpoints"][0]["endpoint"] == "shop/db"
    entry = next(e for e in body["endpoints"][0]["entries"] if e["change"] == "added")
    assert entry["peer"] == "shop/{app=web}"
    assert entry["peerLabels"].startswith("k8s:app=web,")
    assert entry["verdict"] == "deny"


def test_no_change() -> None:
    current, proposed, endpoints = _diff(SAME)
    changes = endpoint_changes(current, proposed, effective_diff(current, proposed))
    assert changes == []
    assert render_text(changes, endpoints) == (
        f"no change: the candidate leaves all {endpoints} endpoints' entries as they are"
    )
    assert render_json(changes, endpoints)["changed"] is False


def test_endpoints_with_the_same_change_share_a_block() -> None:
    text = CLUSTER + "\n---\n" + CLUSTER.split("---")[4].replace("name: db,", "name: db2,")
    text = text.replace("status: {podIP: 10.0.0.2}\n", "status: {podIP: 10.0.0.2}\n", 1)
    cluster = ClusterObjects()
    for obj in objects(text):
        if obj["metadata"]["name"] == "db2":
            obj["status"]["podIP"] = "10.0.0.3"
        cluster.add(obj)
    current = load_engine(cluster).engine
    proposed = proposed_engine(cluster, [Apply(obj) for obj in objects(DENY_WEB)]).engine
    changes = endpoint_changes(current, proposed, effective_diff(current, proposed))
    rendered = render_text(changes, 5)
    assert rendered.splitlines()[0] == "shop/db, shop/db2 (2 endpoints):"
