"""Session-wide test settings shared by every part of the suite."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["septum.lab.pytest_plugin"]  # session-wide `lab` fixture (issue 5)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Privileged tests never skip quietly: on CI (root, BPF) a missing capability is a failure.
    if os.geteuid() != 0 and not os.environ.get("CI"):
        skip = pytest.mark.skip(reason="needs root (privileged test)")
        for item in items:
            if "privileged" in item.keywords:
                item.add_marker(skip)
