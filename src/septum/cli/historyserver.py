"""`--flow-history-server URL`: the agent's flow history on a ClickHouse server or cluster
instead of the embedded store (a setting, not a code change: the same schema and queries).

Pure: the URL and the credentials become store.ServerSettings, errors naming the flag. The
password never travels as an argument (it would show in `ps` and in the pod spec): it comes
from the environment (the chart maps it from a Secret).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from septum.dataplane.observe.history.schema import SchemaError, identifier
from septum.dataplane.observe.history.store import ServerSettings

PASSWORD_ENV = "SEPTUM_FLOW_HISTORY_PASSWORD"
_DEFAULT_PORTS = {"http": 8123, "https": 8443}


class HistoryServerFlagError(ValueError):
    """A flow-history server flag's value cannot be used; the message names the flag."""


def server_settings(url: str, username: str, password: str, database: str) -> ServerSettings:
    """http(s)://host[:port] of ClickHouse's HTTP interface as ServerSettings."""
    flag = "--flow-history-server"
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS:
        raise HistoryServerFlagError(f"{flag}: {url!r} is not http://HOST[:PORT] or https://…")
    if not parts.hostname:
        raise HistoryServerFlagError(f"{flag}: {url!r} names no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise HistoryServerFlagError(f"{flag}: {url!r}: only scheme, host and port are used")
    if parts.username or parts.password:
        raise HistoryServerFlagError(
            f"{flag}: credentials do not belong in the URL; use --flow-history-server-username "
            f"and ${PASSWORD_ENV}"
        )
    try:
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
    except ValueError as err:
        raise HistoryServerFlagError(f"{flag}: {url!r}: {err}") from None
    try:
        identifier(database, "--flow-history-server-database")
    except SchemaError as err:
        raise HistoryServerFlagError(str(err)) from None
    return ServerSettings(
        host=parts.hostname,
        port=port,
        username=username,
        password=password,
        secure=parts.scheme == "https",
        database=database,
    )
