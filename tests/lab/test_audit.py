"""Reading the lab API server's audit log (septum.lab.audit), from files written here.

The lab test in test_audit_lab.py checks a real API server writes what this reads.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from septum.lab import audit
from septum.lab.audit import ApiCall, AuditLogError, LogPosition
from septum.lab.layout import StateDir

AGENT = audit.service_account_user("septum-system", "septum-agent")
OTHER = audit.service_account_user("kube-system", "replicaset-controller")


def event(
    user: str,
    verb: str,
    at: str,
    resource: str | None = "pods",
    group: str | None = None,
    subresource: str | None = None,
    code: int = 200,
    uri: str = "/api/v1/pods",
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": f"{user}-{verb}-{at}",
        "stage": "ResponseComplete",
        "requestURI": uri,
        "verb": verb,
        "user": {"username": user, "groups": ["system:serviceaccounts", "system:authenticated"]},
        "responseStatus": {"metadata": {}, "code": code},
        "requestReceivedTimestamp": f"2026-12-05T10:00:{at}.000000Z",
        "stageTimestamp": f"2026-12-05T10:00:{at}.004000Z",
    }
    if resource is not None:
        ref: dict[str, Any] = {"resource": resource, "apiVersion": "v1"}
        if group:
            ref["apiGroup"] = group
        if subresource:
            ref["subresource"] = subresource
        out["objectRef"] = ref
    return out


def write(path: Path, *events: dict[str, Any], partial: str = "") -> None:
    with open(path, "a") as f:
        for e in events:
            f.write(json.dumps(e) + "\n")
        f.write(partial)


def test_api_call_of_resource_subresource_and_non_resource_requests() -> None:
    assert audit.api_call(event(AGENT, "list", "01")) == ApiCall("", "pods", "", "list", 200)
    lease = event(AGENT, "update", "01", "leases", "coordination.k8s.io", code=409)
    assert audit.api_call(lease) == ApiCall("coordination.k8s.io", "leases", "", "update", 409)
    status = event(AGENT, "patch", "01", "septumnetworkpolicies", "septum.io", "status")
    assert audit.api_call(status) == ApiCall(
        "septum.io", "septumnetworkpolicies", "status", "patch", 200
    )
    version = event(AGENT, "get", "01", resource=None, uri="/version?timeout=32s")
    assert audit.api_call(version) == ApiCall("", "/version", "", "get", 200)


def test_calls_of_one_user_since_a_time(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    write(
        log,
        event(AGENT, "list", "01"),
        event(AGENT, "watch", "05"),
        event(OTHER, "create", "06"),
        event(AGENT, "create", "07", "pods", subresource="eviction", code=403),
        event(AGENT, "watch", "08"),  # the same call again: one entry
    )
    assert audit.calls(log, AGENT) == {
        ApiCall("", "pods", "", "list", 200),
        ApiCall("", "pods", "", "watch", 200),
        ApiCall("", "pods", "eviction", "create", 403),
    }
    since = datetime.datetime(2026, 12, 5, 10, 0, 5, tzinfo=datetime.UTC)
    assert audit.calls(log, AGENT, since=since) == {
        ApiCall("", "pods", "", "watch", 200),
        ApiCall("", "pods", "eviction", "create", 403),
    }
    # The same instant in another zone.
    cet = since.astimezone(datetime.timezone(datetime.timedelta(hours=1)))
    assert audit.calls(log, AGENT, since=cet) == audit.calls(log, AGENT, since=since)


def test_a_position_sees_only_what_came_after_and_skips_a_line_being_written(
    tmp_path: Path,
) -> None:
    log = tmp_path / "audit.log"
    write(log, event(AGENT, "list", "01"))
    mark = audit.position(log)
    first_line = log.read_bytes()
    assert mark == LogPosition(log.stat().st_ino, log.stat().st_size, first_line)
    write(log, event(AGENT, "get", "02"), partial='{"kind": "Event", "verb": "dele')
    assert audit.calls(log, AGENT, since=mark) == {ApiCall("", "pods", "", "get", 200)}


def test_a_position_survives_rotation(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    write(log, event(AGENT, "list", "01"))
    mark = audit.position(log)
    write(log, event(AGENT, "get", "02"))
    # What the API server's log rotation does: rename with the UTC time, start a new file.
    os.rename(log, tmp_path / "audit-2026-12-05T10-00-03.000.log")
    write(log, event(AGENT, "delete", "04"))
    got = audit.calls(log, AGENT, since=mark)
    assert got == {ApiCall("", "pods", "", "get", 200), ApiCall("", "pods", "", "delete", 200)}
    # Since a time, the backups are read too.
    assert len(audit.calls(log, AGENT)) == 3


def test_a_position_rotated_away_is_an_error(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    write(log, event(AGENT, "list", "01"))
    mark = audit.position(log)
    log.unlink()
    write(log, event(AGENT, "get", "02"))
    with pytest.raises(AuditLogError, match="rotated away"):
        audit.calls(log, AGENT, since=mark)


def test_no_log_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(AuditLogError, match="no audit log"):
        audit.position(tmp_path / "audit.log")
    with pytest.raises(AuditLogError, match="no audit log"):
        audit.calls(tmp_path / "audit.log", AGENT)


def test_the_policy_logs_service_accounts_at_metadata_when_complete(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    flags = audit.apiserver_flags(state)
    assert f"--audit-log-path={state.audit_log}" in flags
    assert "--audit-log-format=json" in flags
    assert any(f.startswith("--audit-log-maxsize=") for f in flags)
    policy = yaml.safe_load(state.audit_policy.read_text())
    assert policy["kind"] == "Policy"
    assert set(policy["omitStages"]) == {"RequestReceived", "ResponseStarted", "Panic"}
    assert policy["rules"] == [
        {"level": "Metadata", "userGroups": ["system:serviceaccounts"]},
        {"level": "None"},
    ]
