"""Agents and the operator on the shared lab, for tests: now in septum.bench.labagents.

The product leaves its conflist, plugin and pins behind on purpose (a restart must never
open a window); a test that started agents removes them in its teardown.
"""

from __future__ import annotations

from septum.bench.labagents import (  # noqa: F401 - re-exported for the lab tests
    CONFLIST,
    PIN_ROOT,
    ROOT,
    RUN_DIR,
    SEPTUM,
    AgentProcess,
    OperatorProcess,
    agents_running,
    apply_crds,
    get_health,
    lab_exec,
    wait_gone,
)
