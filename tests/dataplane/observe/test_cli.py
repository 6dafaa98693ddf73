"""`septum observe` and `septum status` against a running Observer."""

from __future__ import annotations

import json
import re
import threading

import observe_helpers as h
import pytest
from click.testing import CliRunner

from septum.cli.observe import observe
from septum.cli.status import status

DEATHSTAR = f"empire/{h.DEATHSTAR.pod_name}"


@pytest.fixture
def fed(observer: h.RunningObserver) -> h.RunningObserver:
    observer.push(
        h.event(src_port=41000, rule_id=1),
        h.reply_event(41000),
        h.event(src_port=41001, dst_port=8080, event_type=1, verdict=2, drop_reason=133),
    )
    return observer


def invoke(observer: h.RunningObserver, *args: str, command: object = observe) -> str:
    result = CliRunner().invoke(command, ["--server", str(observer.socket), *args])  # type: ignore[arg-type]
    assert result.exit_code == 0, result.output
    return result.output


def test_compact(fed: h.RunningObserver) -> None:
    lines = invoke(fed, "--color", "never").splitlines()
    assert len(lines) == 3
    assert lines[0].endswith(
        f"default/xwing:41000 (ID:1001) -> {DEATHSTAR}:80 (ID:1002) "
        "policy-verdict:L3-L4 INGRESS ALLOWED (TCP Flags: SYN)"
    )
    assert lines[1].endswith(
        f"default/xwing:41000 (ID:1001) <- {DEATHSTAR}:80 (ID:1002) from-endpoint FORWARDED "
        "(TCP Flags: SYN, ACK)"
    )
    assert "DROPPED (TCP Flags: SYN)" in lines[2] and ":8080 (ID:1002)" in lines[2]


def test_compact_colours_when_asked(fed: h.RunningObserver) -> None:
    out = (
        CliRunner()
        .invoke(observe, ["--server", str(fed.socket), "--color", "always"], color=True)
        .output
    )
    assert "\x1b[32mALLOWED" in out and "\x1b[31mDROPPED" in out


def test_filters_and_not(fed: h.RunningObserver) -> None:
    out = invoke(fed, "-o", "jsonpb", "--to-pod", DEATHSTAR, "--not", "--verdict", "DROPPED")
    (only,) = [json.loads(line)["flow"] for line in out.splitlines()]
    assert only["l4"]["TCP"]["source_port"] == 41000 and only["verdict"] == "FORWARDED"
    out = invoke(fed, "-o", "json", "--verdict", "DROPPED", "--from-label", "app=xwing")
    assert [
        json.loads(line)["flow"]["l4"]["TCP"]["destination_port"] for line in out.splitlines()
    ] == [8080]


def test_table_and_dict(fed: h.RunningObserver) -> None:
    table = invoke(fed, "-o", "table", "--first", "1").splitlines()
    assert h.table_cells(table[0]) == h.TABLE_HEADER
    assert h.table_cells(table[1])[1:] == [
        "default/xwing:41000",
        f"{DEATHSTAR}:80",
        "policy-verdict:L3-L4 INGRESS",
        "ALLOWED",
        "TCP Flags: SYN",
    ]
    record = invoke(fed, "-o", "dict", "--last", "1").splitlines()
    assert record[1:] == [
        "     SOURCE: default/xwing:41001",
        f"DESTINATION: {DEATHSTAR}:8080",
        "       TYPE: policy denied: no allow entry matched (default deny)",
        "    VERDICT: DROPPED",
        "    SUMMARY: TCP Flags: SYN",
    ]


def test_follow(observer: h.RunningObserver) -> None:
    result: dict[str, str] = {}

    def run() -> None:
        args = ["--server", str(observer.socket), "-f", "-o", "jsonpb", "--to-port", "9999"]
        result["out"] = CliRunner().invoke(observe, args).output

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    observer.push(h.event(src_port=7, dst_port=80), h.event(src_port=8, dst_port=9999))
    # Closing the ring ends every follower once it has read what the ring holds.
    observer.node.ring.close()
    thread.join(20)
    assert not thread.is_alive()
    lines = result["out"].splitlines()
    assert [json.loads(line)["flow"]["l4"]["TCP"]["source_port"] for line in lines] == [8]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "table", "-f"], "--output table and --follow"),
        (["--last", "1", "--first", "1"], "--last and --first"),
        (["--pod", "a", "--from-pod", "b"], "--pod"),
        (["--verdict", "NOPE"], "--verdict"),
        (["--since", "soon"], "--since"),
        (["--not"], "--not"),
    ],
)
def test_bad_flags_name_the_flag(fed: h.RunningObserver, args: list[str], message: str) -> None:
    result = CliRunner().invoke(observe, ["--server", str(fed.socket), *args])
    assert result.exit_code == 2 and message in result.output


def test_unreachable_server_names_the_flag(short_tmp: object) -> None:
    result = CliRunner().invoke(observe, ["--server", f"{short_tmp}/none.sock", "--timeout", "0.5"])
    assert result.exit_code == 1 and "--server" in result.output


def test_status(fed: h.RunningObserver) -> None:
    out = invoke(fed, command=status)
    assert "Flows seen:       3" in out
    assert "Flow buffer:      3/4,095 (0.07%)" in out
    assert (
        "Lost events:      0 (hubble_ring_buffer=0, observer_events_queue=0, "
        "perf_event_ring_buffer=0)" in out
    )
    assert re.search(rf"{h.NODE}\s+NODE_CONNECTED", out)
