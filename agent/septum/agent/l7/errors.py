"""The L7 package's exception tree.

L7Error
├── FqdnConfigError   a tofqdns setting out of range; the message starts with the flag
├── FqdnStateError    the persisted name-to-address state cannot be read (path and reason)
└── HttpRuleError     an HTTP rule the proxy cannot enforce; the message names the field
"""

from __future__ import annotations


class L7Error(Exception):
    """Base of every error the L7 proxies raise on purpose."""


class FqdnConfigError(L7Error, ValueError):
    """A tofqdns option that cannot work; the message names the flag at fault."""


class FqdnStateError(L7Error):
    """The persisted FQDN state file is unreadable or malformed."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class HttpRuleError(L7Error, ValueError):
    """An HTTP rule the proxy cannot enforce; the message names the field (``http[0].path``)."""
