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
    if any("lab" in getattr(item, "fixturenames", ()) for item in items):
        _refuse_a_lab_with_septum_installed()


def _refuse_a_lab_with_septum_installed() -> None:
    """The demo leaves Septum helm-installed on a running lab; the lab tests install and run
    their own agents on the same nodes, so they cannot share it. Say so in one line (only
    when the session has tests on the `lab` fixture: the others never touch the lab)."""
    from septum.demo.release import NAMESPACE, releases_on
    from septum.lab import lab as lab_mod

    if os.geteuid() != 0 or not lab_mod.is_running():
        return
    try:
        installed = releases_on(lab_mod.current())
    except Exception:  # an unhealthy lab: the lab fixture reports it
        return
    if (NAMESPACE, "septum-agent") in installed:  # the tests' own release has its namespace
        pytest.exit(
            "Septum is installed on the running lab (by `make demo`?): "
            "run `.venv/bin/septum lab down`, then `make test` again.",
            returncode=2,
        )
