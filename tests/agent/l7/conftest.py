from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .fqdnworld import World, fqdn_world


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with fqdn_world(tmp_path) as made:
        yield made
