"""The Observer client's exception tree.

    ClientError
    ├── FlagError           + ValueError: a flag value or combination `hubble observe` would
    │                         refuse (``--verdict: invalid value 'NOPE'; ...``)
    └── ClientConfigError   + ValueError: a connection setting that cannot work
                              (``--tls-client-key-file: needs --tls-client-cert-file``)

Every message starts with the flag(s) at fault, so the CLI shows it as a usage error as is.
The ``ValueError`` second base is kept for callers written before this tree existed.
Errors the server side raises are in ``septum.dataplane.observe.errors``; the two trees are
apart because the two halves are.
"""

from __future__ import annotations


class ClientError(Exception):
    """Base of every error ``septum.cli.hubble`` raises on purpose."""


class FlagError(ClientError, ValueError):
    """A flag value or combination Hubble would refuse; names the flag(s)."""


class ClientConfigError(ClientError, ValueError):
    """A connection setting that cannot work; names the flag."""
