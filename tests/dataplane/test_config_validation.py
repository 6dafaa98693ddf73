"""DatapathConfig refuses, when it is built, every value the kernel would truncate, wrap or
refuse later (after the maps were pinned): each error names the field."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from septum.dataplane import abi
from septum.dataplane.config import DatapathConfig
from septum.dataplane.loader import MAP_SETTINGS

# Independent of config.py's own lists: every field that sizes a map (the loader's table;
# local_addr_entries is derived from endpoints) and every DatapathConfig field the kernel's
# struct septum_config holds.
_FIELDS = {f.name for f in fields(DatapathConfig)}
CAPACITIES = sorted({f for f in MAP_SETTINGS.values() if f in _FIELDS and f != "ringbuf_bytes"})
TIMEOUTS = [name for name, _ in abi.Config._fields_ if name in _FIELDS]


def test_the_field_lists_are_complete():
    assert len(CAPACITIES) == 9
    assert DatapathConfig(node_name="n1", endpoints=300).local_addr_entries == 600
    assert TIMEOUTS == [
        "ct_timeout_tcp_syn_s",
        "ct_timeout_tcp_established_s",
        "ct_timeout_tcp_close_s",
        "ct_timeout_other_s",
        "drop_event_interval_ms",
    ]


def _refused(field: str, value: object) -> str:
    with pytest.raises(ValueError, match=rf"^DatapathConfig\.{field}: ") as caught:
        DatapathConfig(**{"node_name": "n1", field: value})
    return str(caught.value)


@pytest.mark.parametrize("field", CAPACITIES)
@pytest.mark.parametrize(
    ("value", "why"),
    [
        (0, "out of range"),
        (-1, "out of range"),
        # 2**32 + 4 used to reach the kernel as 4 and recreate the pinned map empty
        (2**32 + 4, "out of range"),
        (2**31 + 1, "out of range"),
        (1.5, "not an integer"),
        ("1024", "not an integer"),
        (True, "not an integer"),
        (None, "not an integer"),
    ],
)
def test_a_capacity_outside_what_max_entries_holds_is_refused(field, value, why):
    assert why in _refused(field, value)


@pytest.mark.parametrize("field", TIMEOUTS)
@pytest.mark.parametrize(
    ("value", "why"),
    [
        # -1 used to wrap to 4294967295 seconds in the kernel
        (-1, "out of range"),
        (0, "out of range"),
        (2**32, "out of range"),
        (1.5, "not an integer"),
        ("60", "not an integer"),
        (False, "not an integer"),
    ],
)
def test_a_timeout_outside_a_u32_or_zero_is_refused(field, value, why):
    assert why in _refused(field, value)


@pytest.mark.parametrize("value", [2048, 1 << 32, 4096.0, "4096", 0])
def test_a_ring_buffer_size_that_is_no_power_of_two_in_range_is_refused(value):
    _refused("ringbuf_bytes", value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("node_name", 7),
        ("node_name", "Not_A_Label"),
        ("bpf_object", "/tmp/septum.bpf.o"),
        ("pin_root", "/sys/fs/bpf/septum"),
        ("netns", 3),
        ("revoke_on_policy_change", 1),
    ],
)
def test_other_fields_of_the_wrong_kind_are_refused(field, value):
    _refused(field, value)


def test_the_bounds_themselves_are_accepted():
    config = DatapathConfig(
        node_name="n1",
        bpf_object=Path("/nonexistent.o"),
        **{name: 1 for name in CAPACITIES},
        **{name: 2**32 - 1 for name in TIMEOUTS},
        ringbuf_bytes=1 << 31,
        netns="node-ns",
    )
    assert config.endpoints == 1 and config.ct_timeout_other_s == 2**32 - 1
    widest = DatapathConfig(node_name="n1", **{name: 2**31 for name in CAPACITIES})
    assert widest.conntrack_entries == 2**31
