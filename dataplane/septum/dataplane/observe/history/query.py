"""GetFlows over history and the ring as one sequence, without a gap or a duplicate.

The seam is a ring sequence number, `cut`: the ring's oldest entry when the call starts.
The history part is every stored row in the time range except this agent run's rows from
`cut` on (the ring still has those); the ring part starts at `cut`. When the ring overwrites
entries before this reader gets to them, the reader takes them from the store instead
(backfill), so a follower that falls behind loses nothing the store kept. Before reading
rows below a sequence number the reader waits for the writer to have stored (or counted
as lost) everything below it.

Which requests read history (the rest are the ring's, as without history):
- `first` (the oldest N flows): from the oldest stored flow;
- `since` older than the ring's oldest flow, without `number`: forward from `since`;
- `number` N (the last N) when the ring holds fewer than N matching flows: the missing
  ones from the store, newest first, then the ring.

Rows come in pages (keyset on time, seq, boot); each page is one SQL query with the
filters pushed down (sql.py). When the SQL is not exact, each Flow is rebuilt and the
request's FlowSelection decides. Between pages the stream yields Paused, so an event-loop
caller serves its other streams.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import replace
from typing import Final, NamedTuple

from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.decoder import finish_flow, format_flow_uuid
from septum.dataplane.observe.history import sql
from septum.dataplane.observe.history.store import FlowStore
from septum.dataplane.observe.history.writer import HISTORY_STORE_LOST_SOURCE, HistoryWriter
from septum.dataplane.observe.query import CaughtUp, FlowQuery, Paused, stream_ring
from septum.dataplane.observe.ring import FlowRing, LostMarker
from septum.dataplane.observe.wire import encode_flow_bytes_response, encode_lost_response

# The first page is small (a quick first answer); each next one is 8 times larger, so a long
# answer costs a few queries, not one per 4,096 rows: every page's query scans the matching
# rows of its whole remaining window before its LIMIT applies (at 10^7 flows a day's drops of
# a namespace took six doubling pages, 60 % of the answer's time, and now takes three).
PAGE_ROWS: Final = 4096
PAGE_GROWTH: Final = 8
MAX_PAGE_ROWS: Final = 262_144
_SELECT: Final = (
    "SELECT time, boot, seq, src_port, dst_port, protocol, shape, kind, "
    "lost_source, lost_count, lost_seq_last"
)
_ROW: Final = struct.Struct("<q19sQHHBQbIQQ")
_KIND_LOST: Final = 1
_MAX_TEMPLATES: Final = 65_536


class _Row(NamedTuple):  # a tuple: ~10^5 of them per long answer, built in C
    time_ns: int
    boot: str
    seq: int
    src_port: int
    dst_port: int
    protocol: int
    shape: int
    lost: bool
    lost_source: int
    lost_count: int
    lost_seq_last: int


def _rows(data: bytes) -> list[_Row]:
    boots: dict[bytes, str] = {}  # a handful of agent runs per answer: decode each once
    make = _Row._make
    return [
        make((t, boots.get(b) or boots.setdefault(b, b.decode()), s, sp, dp, pr, sh,
              k == _KIND_LOST, ls, lc, ll))
        for t, b, s, sp, dp, pr, sh, k, ls, lc, ll in _ROW.iter_unpack(data)
    ]  # fmt: skip


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


class HistoryReader:
    """Implements query.FlowHistory for one node's store and writer."""

    def __init__(
        self, store: FlowStore, writer: HistoryWriter, flush_timeout_s: float = 5.0
    ) -> None:
        self.store = store
        self.writer = writer
        self.boot = writer.encoder.decoder.uuid_prefix
        self.flush_timeout_s = flush_timeout_s
        self._templates: OrderedDict[int, bytes] = OrderedDict()
        self.table = f"{store.database}.flows"

    # ---- rows -> messages -------------------------------------------------------------
    def _fetch_templates(self, shapes: set[int]) -> None:
        missing = [s for s in shapes if s not in self._templates]
        if not missing:
            return
        params = sql.Params()
        in_list = params.in_list("shape", missing, "UInt64")
        data = self.store.query(
            f"SELECT shape, template FROM {self.store.database}.flow_shapes "
            f"WHERE {in_list} LIMIT 1 BY shape",
            params.values,
        )
        pos = 0
        while pos < len(data):
            (shape,) = struct.unpack_from("<Q", data, pos)
            length, pos = _read_varint(data, pos + 8)
            self._templates[shape] = data[pos : pos + length]
            pos += length
        while len(self._templates) > _MAX_TEMPLATES:
            self._templates.popitem(last=False)

    def _lost_message(
        self, row: _Row, node_name: str, lost_window: tuple[int, int] | None
    ) -> tuple[bytes, bool] | None:
        count = row.lost_count
        if lost_window is not None and row.boot == self.boot:
            # Only the part of a store-loss range inside [first, end) is this answer's.
            first, end = lost_window
            if row.lost_source == HISTORY_STORE_LOST_SOURCE:
                count = min(row.lost_seq_last + 1, end) - max(row.seq, first)
                if count <= 0:
                    return None
        return encode_lost_response(
            row.lost_source, count, row.time_ns, row.time_ns, node_name
        ), False

    def _messages(
        self,
        rows: list[_Row],
        node_name: str,
        selection: object | None,
        lost_window: tuple[int, int] | None,
    ) -> Iterator[tuple[bytes, bool]]:
        """Each row's GetFlowsResponse (and whether it is a flow), skipping rows whose shape
        retention removed first and flows `selection` refuses. The loop is the hot path of a
        long history answer (~10^5 rows): names are bound locally, rows unpacked as tuples."""
        templates = self._templates
        finish, uuid_of, respond = finish_flow, format_flow_uuid, encode_flow_bytes_response
        parse = flow_pb2.Flow.FromString
        for row in rows:
            time_ns, boot, seq, src_port, dst_port, protocol, shape, lost = row[:8]
            if lost:
                message = self._lost_message(row, node_name, lost_window)
                if message is not None:
                    yield message
                continue
            template = templates.get(shape)
            if template is None:  # retention removed the shape first: nothing to rebuild from
                continue
            flow_bytes, time_bytes = finish(
                template, time_ns, uuid_of(boot, seq), protocol, src_port, dst_port
            )
            if selection is not None and not selection(parse(flow_bytes)):  # type: ignore[operator]
                continue
            yield respond(flow_bytes, time_bytes, node_name), True

    def _pages(
        self, where: str, params: dict[str, int | str], descending: bool
    ) -> Iterator[list[_Row]]:
        """Pages of rows matching `where`, by (time, seq, boot), keyset-paginated."""
        order = "DESC" if descending else "ASC"
        compare = "<" if descending else ">"
        after: tuple[int, int, str] | None = None
        page_rows = PAGE_ROWS
        while True:
            page_params = dict(params)
            keyset = ""
            if after is not None:
                page_params.update(kt=after[0], ks=after[1], kb=after[2])
                bound = "<=" if descending else ">="
                keyset = (
                    f" AND time {bound} fromUnixTimestamp64Nano({{kt:Int64}}, 'UTC')"
                    f" AND (toUnixTimestamp64Nano(time), seq, boot) {compare}"
                    f" ({{kt:Int64}}, {{ks:UInt64}}, {{kb:String}})"
                )
            data = self.store.query(
                f"{_SELECT} FROM {self.table} WHERE {where}{keyset} "
                f"ORDER BY time {order}, seq {order}, boot {order} LIMIT {page_rows}",
                page_params,
            )
            rows = _rows(data)
            if not rows:
                return
            self._fetch_templates({row.shape for row in rows if not row.lost})
            yield rows
            if len(rows) < page_rows:
                return
            page_rows = min(page_rows * PAGE_GROWTH, MAX_PAGE_ROWS)
            last = rows[-1]
            after = (last.time_ns, last.seq, last.boot)

    def _where(self, query: FlowQuery, params: sql.Params) -> tuple[str, bool]:
        pushed = sql.pushdown(query.whitelist, query.blacklist, params)
        terms = [pushed.where]
        if query.since_ns is not None:
            terms.append(
                f"time >= fromUnixTimestamp64Nano({params.add(query.since_ns, 'Int64')}, 'UTC')"
            )
        if query.until_ns is not None:
            terms.append(
                f"time <= fromUnixTimestamp64Nano({params.add(query.until_ns, 'Int64')}, 'UTC')"
            )
        return " AND ".join(terms), pushed.exact

    def rows_before(
        self, query: FlowQuery, node_name: str, cut: int, descending: bool, limit: int, pause: bool
    ) -> Iterator[tuple[bytes, bool] | Paused]:
        """History's messages older than the ring's `cut`, in time order or reversed."""
        params = sql.Params()
        where, exact = self._where(query, params)
        boot, cut_seq = params.add(self.boot, "String"), params.add(cut, "UInt64")
        where += f" AND NOT (boot = {boot} AND seq >= {cut_seq})"
        selection = None if exact else query.selection
        sent = 0
        for page in self._pages(where, params.values, descending):
            for count, message in enumerate(
                self._messages(page, node_name, selection, (0, cut)), start=1
            ):
                yield message
                if message[1]:
                    sent += 1
                    if limit and sent >= limit:
                        return
                if pause and count % PAGE_ROWS == 0:
                    # A page grows to 262,144 rows (~1 s of rebuilding): the h2 front's other
                    # streams get the loop back every 4,096 messages, not once a page.
                    yield Paused(0)
            if pause:
                yield Paused(0)

    def backfill(
        self, query: FlowQuery, node_name: str, first: int, end: int
    ) -> Iterator[tuple[bytes, bool]] | None:
        """This run's sequence numbers [first, end), which the ring overwrote, from the store."""
        if not self.writer.flush(self.flush_timeout_s) or self.writer.durable_seq < end:
            return None
        params = sql.Params()
        where, exact = self._where(query, params)
        boot = params.add(self.boot, "String")
        lo, hi = params.add(first, "UInt64"), params.add(end, "UInt64")
        where += (
            f" AND boot = {boot} AND ((kind = 'flow' AND seq >= {lo} AND seq < {hi})"
            f" OR (kind = 'lost' AND seq < {hi} AND lost_seq_last >= {lo}))"
        )
        selection = None if exact else query.selection
        data = self.store.query(
            f"{_SELECT} FROM {self.table} WHERE {where} ORDER BY seq", params.values
        )
        rows = _rows(data)
        self._fetch_templates({row.shape for row in rows if not row.lost})
        return iter(list(self._messages(rows, node_name, selection, (first, end))))

    # ---- query.FlowHistory ------------------------------------------------------------
    def stream(
        self, ring: FlowRing, query: FlowQuery, node_name: str, pause_every: int
    ) -> Iterator[bytes | CaughtUp | Paused]:
        return self._stream(ring, query, node_name, pause_every)

    def _stream(
        self, ring: FlowRing, query: FlowQuery, node_name: str, pause_every: int
    ) -> Iterator[bytes | CaughtUp | Paused]:
        q = query

        def backfill(first: int, end: int) -> Iterator[tuple[bytes, bool]] | None:
            return self.backfill(q, node_name, first, end)

        head = ring.head
        cut = ring.oldest
        oldest_wall = _wall_of(ring, cut)
        pause = pause_every > 0
        since_before_ring = q.since_ns is not None and (
            oldest_wall is None or q.since_ns < oldest_wall
        )
        if q.first or (q.number == 0 and since_before_ring and not q.first):
            self.writer.flush(self.flush_timeout_s)
            sent = 0
            for item in self.rows_before(
                q, node_name, cut, False, q.number if q.first else 0, pause
            ):
                if isinstance(item, Paused):
                    yield item
                    continue
                yield item[0]
                sent += item[1]
            if q.first and q.number and sent >= q.number:
                return
            rest = replace(q, number=q.number - sent if (q.first and q.number) else 0, first=True)
            yield from stream_ring(
                ring, rest, node_name, pause_every, start_seq=cut, backfill=backfill
            )
            return
        if q.number and not q.first:
            found = _ring_matches(ring, q, cut, head, q.number)
            if found < q.number and (cut > 0 or self._has_older_runs()):
                self.writer.flush(self.flush_timeout_s)
                older: list[bytes] = []
                for item in self.rows_before(q, node_name, cut, True, q.number - found, pause):
                    if isinstance(item, Paused):
                        yield item
                    else:
                        older.append(item[0])
                yield from reversed(older)
                rest = replace(q, number=0, first=True)
                yield from stream_ring(
                    ring, rest, node_name, pause_every, start_seq=cut, backfill=backfill
                )
                return
        yield from stream_ring(ring, q, node_name, pause_every, backfill=backfill)

    def _has_older_runs(self) -> bool:
        params = sql.Params()
        boot = params.add(self.boot, "String")
        data = self.store.query(
            f"SELECT 1 FROM {self.table} WHERE boot != {boot} LIMIT 1", params.values, fmt="TSV"
        )
        return bool(data.strip())


def _wall_of(ring: FlowRing, seq: int) -> int | None:
    entry = ring.entry(seq)
    if entry is None:
        return None
    return ring.wall_time_ns(entry)


def _ring_matches(ring: FlowRing, query: FlowQuery, cut: int, head: int, want: int) -> int:
    """How many flows of the ring in [cut, head) the query selects (counting stops at `want`)."""
    found = 0
    selection = query.selection
    for seq in range(head - 1, cut - 1, -1):
        entry = ring.entry(seq)
        if entry is None:
            break
        if isinstance(entry, LostMarker):
            continue
        wall_ns = ring.wall_time_ns(entry)
        if query.since_ns is not None and wall_ns < query.since_ns:
            break
        if query.until_ns is not None and wall_ns > query.until_ns:
            continue
        if selection.matches_everything or selection(ring.flow(seq, entry)):
            found += 1
            if found >= want:
                break
    return found
