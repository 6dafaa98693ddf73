"""The relay's exceptions: one tree, each error naming the setting at fault."""

from __future__ import annotations


class RelayError(Exception):
    """Anything the relay itself reports."""


class RelayConfigError(RelayError):
    """A setting that cannot work (a flag, a file, an address); the message names it."""


class AgentCallError(RelayError):
    """A call to one agent failed (unreachable, refused, reset); the node is named."""

    def __init__(self, node: str, message: str) -> None:
        super().__init__(f"{node}: {message}")
        self.node = node
