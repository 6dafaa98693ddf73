"""septum.dataplane.observe.errors: one tree, old second bases and old homes kept."""

from __future__ import annotations

import pytest

from septum.dataplane.observe import celexpr, filters, h2front, labels, metrics, record, server
from septum.dataplane.observe import errors as e

# (class, the second base callers may catch, the module that raised it before errors.py)
TREE = [
    (e.ServerConfigError, ValueError, server),
    (e.ListenError, OSError, h2front),
    (e.MetricsConfigError, ValueError, metrics),
    (e.RecordError, ValueError, record),
    (e.FilterError, ValueError, filters),
    (e.LabelSelectorError, ValueError, labels),
    (e.CelError, ValueError, celexpr),
]


@pytest.mark.parametrize(
    ("cls", "second_base", "home"), TREE, ids=[cls.__name__ for cls, _, _ in TREE]
)
def test_every_error_is_an_observe_error(cls: type, second_base: type, home: object) -> None:
    assert issubclass(cls, e.ObserveError) and issubclass(cls, second_base)
    assert getattr(home, cls.__name__) is cls


def test_the_tree_lists_every_error() -> None:
    defined = {
        value
        for value in vars(e).values()
        if isinstance(value, type) and issubclass(value, e.ObserveError)
    }
    assert defined == {e.ObserveError, *(cls for cls, _, _ in TREE)}
    for cls in defined:
        assert cls.__name__ in (e.__doc__ or "")


def test_a_bad_selector_reaches_the_caller_as_a_filter_error_naming_the_field() -> None:
    from septum.dataplane.observe.api.flow import flow_pb2

    bad = flow_pb2.FlowFilter(source_label=["a in (b"])
    with pytest.raises(e.FilterError, match=r"whitelist\[0\]\.source_label") as caught:
        filters.FlowSelection([bad], [])
    assert isinstance(caught.value.__cause__, e.ObserveError)
