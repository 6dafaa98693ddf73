"""The UI server's one error tree."""

from __future__ import annotations


class UIError(Exception):
    """Base of every error `septum ui` raises."""


class FramingError(UIError):
    """A gRPC-Web request body that is not a sequence of well-formed frames."""


class AssetsError(UIError):
    """The built front end is missing where `septum ui` was told to find it."""
