"""Where flow history is kept: ClickHouse's engine in process (chDB) or a ClickHouse server.

Both backends speak the same SQL and take rows as ClickHouse's RowBinary, so the writer,
the queries and retention never know which one they talk to (`FlowStore`). Values always
travel as query parameters (``{name:Type}`` placeholders, bound by the engine), never
inside the SQL text.

chDB hosts one engine per process, bound to one directory: a second store on another path
in the same process is refused by chDB itself. Connections are per thread (the writer, each
GetFlows reader): chDB runs queries of different connections in parallel, and a
clickhouse-connect client is not meant to be shared between threads.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from septum.dataplane.observe.errors import ObserveError
from septum.dataplane.observe.history import schema

Params = Mapping[str, int | str]


class StoreError(ObserveError):
    """The flow store refused or failed a statement; the original error is the cause."""


class FlowStore(Protocol):
    database: str

    def execute(self, sql: str, params: Params | None = None) -> None:
        """A statement without a result (DDL, ALTER, DELETE)."""
        ...

    def query(self, sql: str, params: Params | None = None, fmt: str = "RowBinary") -> bytes:
        """A query's result in `fmt` (RowBinary unless asked otherwise)."""
        ...

    def insert(self, table: str, columns: Sequence[str], rows: bytes) -> None:
        """Rows encoded as RowBinary in `columns` order; one atomic insert."""
        ...

    def close(self) -> None: ...


def _text_params(params: Params | None) -> dict[str, str]:
    return {name: str(value) for name, value in (params or {}).items()}


class ChdbStore:
    """The embedded engine (chDB) on a directory of its own."""

    def __init__(self, path: Path, database: str = schema.DEFAULT_DATABASE) -> None:
        from chdb import state  # heavy (the engine): only when history is on

        self._connect = state.connect
        self.path = Path(path)
        self.database = schema.identifier(database, "database")
        self.path.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connections: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False
        # The first connection starts the engine; it stays open while the store is.
        self._connection()

    def _connection(self) -> Any:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            with self._lock:
                if self._closed:
                    raise StoreError(f"flow store {self.path} is closed")
                try:
                    connection = self._connect(str(self.path))
                except Exception as err:
                    raise StoreError(f"cannot open flow store {self.path}: {err}") from err
                self._connections.append(connection)
            self._local.connection = connection
        return connection

    def execute(self, sql: str, params: Params | None = None) -> None:
        self.query(sql, params, fmt="CSV")

    def query(self, sql: str, params: Params | None = None, fmt: str = "RowBinary") -> bytes:
        try:
            result = self._connection().query(sql, fmt, params=_text_params(params))
        except StoreError:
            raise
        except Exception as err:
            raise StoreError(f"flow store query failed: {err}") from err
        data: bytes = result.bytes()
        return data

    def insert(self, table: str, columns: Sequence[str], rows: bytes) -> None:
        sql = f"INSERT INTO {self.database}.{table} ({', '.join(columns)})"
        try:
            inserter = self._connection().send_insert(sql, "RowBinary")
            try:
                inserter.append(rows)
                inserter.finish()
            except BaseException:
                inserter.cancel()
                raise
        except Exception as err:
            raise StoreError(f"flow store insert into {table} failed: {err}") from err

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()


@dataclass(frozen=True)
class ServerSettings:
    """A ClickHouse server or cluster reached over HTTP(S) by clickhouse-connect."""

    host: str
    port: int = 8123
    username: str = "default"
    password: str = ""
    secure: bool = False
    database: str = schema.DEFAULT_DATABASE


class ServerStore:
    """A ClickHouse server (or a cluster's Distributed tables) through clickhouse-connect."""

    def __init__(self, settings: ServerSettings) -> None:
        import clickhouse_connect

        self._get_client = clickhouse_connect.get_client
        self.settings = settings
        self.database = schema.identifier(settings.database, "database")
        self._local = threading.local()
        self._clients: list[Any] = []
        self._lock = threading.Lock()

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            s = self.settings
            try:
                client = self._get_client(
                    host=s.host,
                    port=s.port,
                    username=s.username,
                    password=s.password,
                    secure=s.secure,
                    autogenerate_session_id=False,
                )
            except Exception as err:
                raise StoreError(f"cannot reach ClickHouse at {s.host}:{s.port}: {err}") from err
            with self._lock:
                self._clients.append(client)
            self._local.client = client
        return client

    def execute(self, sql: str, params: Params | None = None) -> None:
        try:
            self._client().command(sql, parameters=dict(params or {}))
        except StoreError:
            raise
        except Exception as err:
            raise StoreError(f"flow store statement failed: {err}") from err

    def query(self, sql: str, params: Params | None = None, fmt: str = "RowBinary") -> bytes:
        try:
            data: bytes = self._client().raw_query(sql, parameters=dict(params or {}), fmt=fmt)
        except StoreError:
            raise
        except Exception as err:
            raise StoreError(f"flow store query failed: {err}") from err
        return data

    def insert(self, table: str, columns: Sequence[str], rows: bytes) -> None:
        try:
            self._client().raw_insert(
                f"{self.database}.{table}", list(columns), insert_block=rows, fmt="RowBinary"
            )
        except StoreError:
            raise
        except Exception as err:
            raise StoreError(f"flow store insert into {table} failed: {err}") from err

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()


def create_tables(store: FlowStore) -> None:
    """The store's tables (idempotent): on a server or chDB, the local layout."""
    for statement in schema.local_ddl(store.database):
        store.execute(statement)


def disk_usage(store: FlowStore) -> tuple[int, int]:
    """(bytes on disk, rows) of the flows table's active parts."""
    text = store.query(
        "SELECT sum(bytes_on_disk), sum(rows) FROM system.parts "
        "WHERE database = {db:String} AND table = 'flows' AND active",
        {"db": store.database},
        fmt="TSV",
    ).decode()
    size, rows = (int(v or 0) for v in text.split())
    return size, rows
