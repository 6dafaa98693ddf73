"""The helpers the Observer tests read CLI output with (observe_helpers, in conftest.py)."""

from __future__ import annotations

import observe_helpers as h
import pytest

ROW = ["default/xwing:41000", "empire/deathstar:80", "Policy denied", "DROPPED", "TCP Flags: SYN"]


@pytest.mark.parametrize(
    "stamp",
    [
        "Dec  5 18:55:16.931",  # hubble (Go's time.StampMilli), days 1-9: two spaces inside
        "Dec 15 18:55:16.931",  # hubble, days 10-31
        "Dec 05 18:55:16.931",  # Septum's printer
    ],
)
def test_table_cells_keep_the_timestamp_whole_on_any_day(stamp: str) -> None:
    line = f"{stamp}   {'   '.join(ROW)}"
    assert h.table_cells(line) == [stamp, *ROW]


def test_table_cells_of_the_header() -> None:
    header = "TIMESTAMP             SOURCE   DESTINATION   TYPE   VERDICT   SUMMARY"
    assert h.table_cells(header) == h.TABLE_HEADER
