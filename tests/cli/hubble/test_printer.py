"""septum.cli.hubble.printer: Hubble's output formats, rendered into a list."""

from __future__ import annotations

import pytest

from septum.cli.hubble.errors import FlagError
from septum.cli.hubble.printer import Printer, identity_text
from septum.wellknown.reserved import ReservedIdentity


def test_reserved_identities_print_by_name() -> None:
    assert identity_text(ReservedIdentity.HOST) == "host"
    assert identity_text(ReservedIdentity.REMOTE_NODE) == "remote-node"
    assert identity_text(ReservedIdentity.WORLD_IPV4) == "world-ipv4"
    assert identity_text(1001) == "ID:1001"


def test_an_unknown_format_names_the_flag() -> None:
    with pytest.raises(FlagError, match="--output: unknown format 'yaml'"):
        Printer("yaml", write=[].append)


def test_table_header_is_flushed_on_close() -> None:
    lines: list[str] = []
    printer = Printer("table", write=lines.append)
    assert lines == []
    printer.close()
    assert lines == ["TIMESTAMP   SOURCE   DESTINATION   TYPE   VERDICT   SUMMARY"]
