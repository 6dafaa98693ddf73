"""Engine.load leaves the cyclic collector as it found it, and freezes the heap only on request."""

from __future__ import annotations

import gc

from septum.operator.engine.state import Engine

NAMESPACE = {"metadata": {"name": "a"}}
POD = {
    "metadata": {"name": "web", "namespace": "a", "labels": {"app": "web"}},
    "status": {"podIP": "10.0.0.1"},
}


def test_load_restores_the_collector_and_freezes_only_on_request() -> None:
    assert gc.isenabled()
    before = gc.get_freeze_count()
    Engine().load(namespaces=[NAMESPACE], pods=[POD])
    assert gc.isenabled()
    assert gc.get_freeze_count() == before
    try:
        Engine().load(namespaces=[NAMESPACE], pods=[POD], freeze_gc=True)
        assert gc.isenabled()
        assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()
