"""Filters to SQL: values only as parameters; exact only when SQL says all the filters say."""

from __future__ import annotations

from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.history import sql
from septum.dataplane.observe.history.sql import LOST_ROW_VERDICT


def _push(whitelist=(), blacklist=()):  # type: ignore[no-untyped-def]
    return sql.pushdown(list(whitelist), list(blacklist), sql.Params())


def test_values_are_parameters_never_sql_text() -> None:
    evil = "x'); DROP TABLE flows; --"
    pushed = _push([flow_pb2.FlowFilter(source_pod=[f"shop/{evil}"])])
    assert evil not in pushed.where
    assert evil.split("/")[-1] in pushed.params.values()
    assert pushed.exact


def test_exact_fields_are_pushed_and_others_left_to_python() -> None:
    exact = _push([flow_pb2.FlowFilter(verdict=[flow_pb2.DROPPED], destination_port=["80"])])
    assert exact.exact and "verdict IN" in exact.where and "dst_port IN" in exact.where
    mixed = _push([flow_pb2.FlowFilter(verdict=[flow_pb2.DROPPED], source_label=["app=a"])])
    assert not mixed.exact and "verdict IN" in mixed.where


def test_a_blacklist_filter_is_pushed_only_whole() -> None:
    whole = _push(blacklist=[flow_pb2.FlowFilter(verdict=[flow_pb2.DROPPED])])
    assert "NOT" in whole.where and whole.exact
    partial = _push(
        blacklist=[flow_pb2.FlowFilter(verdict=[flow_pb2.DROPPED], source_label=["app=a"])]
    )
    assert partial.where == "1" and not partial.exact and partial.params == {}


def test_lost_events_always_pass() -> None:
    where = _push([flow_pb2.FlowFilter(verdict=[2])]).where
    assert where.startswith(f"((verdict = {LOST_ROW_VERDICT} AND kind = 'lost') OR")
