"""The private parts of `h2` the HTTP/2 front (observe/h2link.py) relies on, pinned.

h2link replaces h2's connection state machine with one whose GOAWAY ends only new streams: it
subclasses `h2.connection.H2ConnectionStateMachine`, copies its `_transitions` table (keys
`(ConnectionState, ConnectionInputs)`, values `(side effect, next state)`) with three entries
changed, and assigns an instance to `H2Connection.state_machine`. None of that is h2's public
API, so an h2 release may change it without notice; these tests fail, naming what moved,
before the front's graceful stop silently breaks (an upgrade of the `h2` pin must pass them).
"""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest

from septum.dataplane.observe import h2link

State = h2.connection.ConnectionState
Input = h2.connection.ConnectionInputs
# The entries h2link overrides: upstream, each ends the connection.
OVERRIDDEN = [
    (State.IDLE, Input.SEND_GOAWAY),
    (State.SERVER_OPEN, Input.SEND_GOAWAY),
    (State.CLIENT_OPEN, Input.RECV_GOAWAY),
]


def test_h2_has_the_state_machine_table_the_front_copies() -> None:
    machine = h2.connection.H2ConnectionStateMachine
    table = getattr(machine, "_transitions", None)
    assert isinstance(table, dict), "h2.connection.H2ConnectionStateMachine._transitions is gone"
    for key in OVERRIDDEN:
        assert key in table, f"h2's _transitions has no entry for {key}"
        side_effect, target = table[key]
        # Why the front overrides them: upstream a GOAWAY closes the whole connection.
        assert side_effect is None and target == State.CLOSED, (key, table[key])


def test_the_front_overrides_only_those_entries() -> None:
    upstream = h2.connection.H2ConnectionStateMachine._transitions
    ours = h2link._GracefulStateMachine._transitions
    changed = {key for key in ours if ours[key] != upstream.get(key)}
    assert changed == set(OVERRIDDEN)
    assert set(ours) == set(upstream)


def test_h2_connection_takes_a_replacement_state_machine_and_uses_its_table() -> None:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    assert isinstance(conn.state_machine, h2.connection.H2ConnectionStateMachine)
    conn.state_machine = h2link._GracefulStateMachine()
    conn.initiate_connection()
    conn.close_connection()  # SEND_GOAWAY while IDLE (no stream yet): upstream would close
    assert conn.state_machine.state == State.IDLE


def _open_stream(
    server: h2.connection.H2Connection, graceful_client: bool = False
) -> tuple[h2.connection.H2Connection, int]:
    """A client connection (with the front's state machine, if asked) with one open request
    stream to `server`."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    if graceful_client:
        client.state_machine = h2link._GracefulStateMachine()  # as H2Link does, before use
    client.initiate_connection()
    stream_id = client.get_next_available_stream_id()
    client.send_headers(
        stream_id,
        [(":method", "POST"), (":path", "/x"), (":scheme", "http"), (":authority", "a")],
    )
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    return client, stream_id


def test_a_stream_open_before_goaway_still_carries_data_both_ways() -> None:
    server = h2link.H2Link(client_side=False).conn
    client, stream_id = _open_stream(server, graceful_client=True)
    assert server.state_machine.state == State.SERVER_OPEN
    assert client.state_machine.state == State.CLIENT_OPEN
    server.send_headers(stream_id, [(":status", "200")])
    server.close_connection(last_stream_id=stream_id)  # the front stopping: GOAWAY first
    server.send_data(stream_id, b"still here", end_stream=True)  # ...then the call finishes
    events = client.receive_data(server.data_to_send())  # RECV_GOAWAY in CLIENT_OPEN
    assert any(isinstance(e, h2.events.ConnectionTerminated) for e in events)
    assert any(isinstance(e, h2.events.DataReceived) for e in events)


def test_plain_h2_still_refuses_it_which_is_why_the_front_overrides() -> None:
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    _, stream_id = _open_stream(server)
    server.send_headers(stream_id, [(":status", "200")])
    server.close_connection(last_stream_id=stream_id)
    with pytest.raises(h2.exceptions.ProtocolError):
        server.send_data(stream_id, b"too late")
