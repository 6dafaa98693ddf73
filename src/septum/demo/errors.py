"""The demo's one error tree."""

from __future__ import annotations


class DemoError(Exception):
    """A step of the walk-through did not do what it should (the message says what was seen)."""


class HelmError(DemoError):
    """helm refused or failed (its own message included)."""


class StepTimeout(DemoError):
    """Something awaited did not happen before its deadline."""
