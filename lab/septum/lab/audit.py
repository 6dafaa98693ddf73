"""The lab API server's audit log: what service accounts asked of it, for RBAC tests.

The lab's kube-apiserver logs (``POLICY``) every request made by a service account (group
``system:serviceaccounts``) at level Metadata, once, when its response is complete, and nothing
else, as JSON lines in ``<state>/audit/audit.log`` (rotated at ``MAX_SIZE_MB``, keeping
``MAX_BACKUPS`` older files named ``audit-<UTC time>.log`` beside it). A chart's RBAC test
compares its Roles with ``calls(log, "system:serviceaccount:NS:NAME", since=...)``: the
(apiGroup, resource, subresource, verb, code) the component really used.

Watches are logged when they end (a server-side timeout or the client closing them), since only
the ResponseComplete stage is kept; a request the API server refused is logged with its code
(403 for RBAC). Requests for non-resource URLs (``/version``, ``/healthz``) carry the URL's path
as their resource and no group, which is how RBAC's ``nonResourceURLs`` name them.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NamedTuple

from septum.lab.errors import LabError
from septum.lab.layout import StateDir

POLICY: Final = """\
apiVersion: audit.k8s.io/v1
kind: Policy
# One event per request, when its response is complete (watches: when they end).
omitStages: [RequestReceived, ResponseStarted, Panic]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: None
"""
MAX_SIZE_MB: Final = 20
MAX_BACKUPS: Final = 2
MAX_AGE_DAYS: Final = 2
_FIRST_LINE_MAX: Final = 4096


class AuditLogError(LabError):
    """The audit log cannot answer: it is missing, or rotated past the position asked for."""


class ApiCall(NamedTuple):
    """One kind of request a user made, as RBAC sees it, and the status code it got."""

    api_group: str  # "" for the core group and for non-resource URLs
    resource: str  # "pods"; for a non-resource URL its path ("/version")
    subresource: str  # "status", "log", "token" or ""
    verb: str  # get, list, watch, create, update, patch, delete, deletecollection
    code: int


@dataclass(frozen=True)
class LogPosition:
    """A point in the audit log that survives rotation: a file and an offset into it.

    The file is known by its inode and its first line (a deleted backup's inode may be given
    to the next new file)."""

    inode: int
    offset: int
    first_line: bytes = b""


def apiserver_flags(state: StateDir) -> list[str]:
    """kube-apiserver's flags for this log; writes the policy file they name."""
    state.audit_dir.mkdir(parents=True, exist_ok=True)
    state.audit_policy.write_text(POLICY)
    return [
        f"--audit-policy-file={state.audit_policy}",
        f"--audit-log-path={state.audit_log}",
        "--audit-log-format=json",
        f"--audit-log-maxsize={MAX_SIZE_MB}",
        f"--audit-log-maxbackup={MAX_BACKUPS}",
        f"--audit-log-maxage={MAX_AGE_DAYS}",
    ]


def service_account_user(namespace: str, name: str) -> str:
    """The username a service account's token authenticates as."""
    return f"system:serviceaccount:{namespace}:{name}"


def api_call(event: dict[str, Any]) -> ApiCall:
    """The request one audit event records (pure: ``event`` is one parsed JSON line)."""
    ref = event.get("objectRef")
    code = int((event.get("responseStatus") or {}).get("code", 0))
    if ref is None:
        path = str(event.get("requestURI", "")).split("?", 1)[0]
        return ApiCall("", path, "", str(event.get("verb", "")), code)
    return ApiCall(
        str(ref.get("apiGroup", "")),
        str(ref.get("resource", "")),
        str(ref.get("subresource", "")),
        str(event.get("verb", "")),
        code,
    )


def event_time(event: dict[str, Any]) -> datetime.datetime:
    """When the event was logged (its stage's time), in UTC."""
    return datetime.datetime.fromisoformat(str(event["stageTimestamp"]))


def position(log_path: Path) -> LogPosition:
    """The log's end now: ``calls(..., since=position(log))`` later sees only what came after."""
    try:
        with open(log_path, "rb") as f:
            info = os.fstat(f.fileno())
            first_line = f.readline(_FIRST_LINE_MAX)
    except FileNotFoundError as err:
        raise AuditLogError(f"{log_path}: no audit log (is the lab up?)") from err
    return LogPosition(info.st_ino, info.st_size, first_line)


def _is_file_at(path: Path, since: LogPosition) -> bool:
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_ino != since.inode:
                return False
            return f.read(len(since.first_line)) == since.first_line
    except FileNotFoundError:  # rotated away (deleted) as we looked
        return False


def _files(log_path: Path) -> list[Path]:
    """The log's files, oldest first: rotated backups (named by their UTC time), then the log."""
    backups = sorted(log_path.parent.glob(f"{log_path.stem}-*{log_path.suffix}"))
    return [*backups, log_path] if log_path.exists() else backups


def _lines(path: Path, offset: int) -> Iterator[bytes]:
    """Complete lines of ``path`` from ``offset`` (a line still being written is left out)."""
    with open(path, "rb") as f:
        f.seek(offset)
        for line in f:
            if line.endswith(b"\n"):
                yield line


def _from_position(log_path: Path, since: LogPosition) -> Iterator[tuple[Path, int]]:
    files = _files(log_path)
    start = next((i for i, path in enumerate(files) if _is_file_at(path, since)), None)
    if start is None:
        raise AuditLogError(
            f"{log_path}: the file at the position asked for was rotated away (more than "
            f"{MAX_BACKUPS} rotations of {MAX_SIZE_MB} MB since): ask again from a later one"
        )
    yield files[start], since.offset
    for path in files[start + 1 :]:
        yield path, 0


def events(
    log_path: Path, since: datetime.datetime | LogPosition | None = None
) -> Iterator[dict[str, Any]]:
    """Every audit event logged after ``since`` (a time, or a position), oldest first."""
    if not log_path.exists() and not _files(log_path):
        raise AuditLogError(f"{log_path}: no audit log (is the lab up?)")
    if isinstance(since, LogPosition):
        spans = list(_from_position(log_path, since))
    else:
        spans = [(path, 0) for path in _files(log_path)]
    after = since.astimezone(datetime.UTC) if isinstance(since, datetime.datetime) else None
    for path, offset in spans:
        try:
            lines = list(_lines(path, offset))
        except FileNotFoundError:
            continue
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # not an event (the log is only ever appended whole lines)
            if after is not None and event_time(event) < after:
                continue
            yield event


def calls(
    log_path: Path, username: str, since: datetime.datetime | LogPosition | None = None
) -> set[ApiCall]:
    """What ``username`` (``system:serviceaccount:NS:NAME``) asked of the API server after
    ``since`` (a time, compared with when each request completed; or a ``position``)."""
    return {
        api_call(event)
        for event in events(log_path, since)
        if (event.get("user") or {}).get("username") == username
    }
