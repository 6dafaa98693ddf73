"""The lab's exception tree: every error a user can hit carries one line saying what to do."""

from __future__ import annotations


class LabError(Exception):
    """Base of every lab error; ``str()`` is the one line shown to the user."""


class NotRootError(LabError):
    pass


class PortInUseError(LabError):
    pass


class BinariesMissingError(LabError):
    pass


class StartupError(LabError):
    pass


class NoLabError(LabError):
    pass
