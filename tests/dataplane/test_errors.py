"""septum.dataplane has one exception tree: every class derives from DatapathError, the
classes that stood for bad input keep ValueError/LookupError as a second base, and the
pure checks raise the named classes."""

from __future__ import annotations

import inspect

import pytest

from septum.dataplane import errors
from septum.dataplane.addressing import address_bytes, parse_prefix
from septum.dataplane.config import DatapathConfig
from septum.dataplane.errors import (
    ConfigError,
    DatapathError,
    EndpointError,
    PolicyEntryError,
    PrefixError,
)
from septum.dataplane.policy import PolicyEntry, validate
from septum.dataplane.prefilter import deny_entries

CLASSES = [
    cls
    for _, cls in inspect.getmembers(errors, inspect.isclass)
    if cls.__module__ == errors.__name__
]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_every_class_is_a_datapath_error_drawn_in_the_docstring(cls):
    assert issubclass(cls, DatapathError)
    assert cls.__name__ in errors.__doc__


@pytest.mark.parametrize(
    ("cls", "compatible"),
    [
        (ConfigError, ValueError),
        (PolicyEntryError, ValueError),
        (PrefixError, ValueError),
        (EndpointError, LookupError),
    ],
)
def test_bad_input_errors_keep_their_builtin_base(cls, compatible):
    assert issubclass(cls, compatible)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: DatapathConfig(node_name="Bad Name"), ConfigError, r"^DatapathConfig\.node_name"),
        (lambda: DatapathConfig(node_name="n", endpoints=0), ConfigError, r"\.endpoints: 0"),
        (lambda: parse_prefix("10.0.0.0/33"), PrefixError, r"^prefix '10\.0\.0\.0/33': "),
        (lambda: address_bytes("10.0.0"), PrefixError, r"^address '10\.0\.0': "),
        (lambda: deny_entries({"10.0.0.0/8": -1}), PrefixError, r"^rule id of prefix"),
        (lambda: deny_entries(["nope"]), PrefixError, r"^prefix 'nope': "),
        (lambda: validate([PolicyEntry(3)]), PolicyEntryError, r"^entries\[0\]\.direction"),  # type: ignore[arg-type]
    ],
)
def test_pure_checks_raise_named_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()
