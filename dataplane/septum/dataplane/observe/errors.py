"""The Observer's exception tree: every error ``septum.dataplane.observe`` raises on purpose.

    ObserveError
    ├── ServerConfigError    + ValueError: a listen or TLS setting cannot work; the message
    │                          starts with the setting (``listen.tcp_address: ...``)
    ├── ListenError          + OSError: a listener could not bind (``ObserverServer.start``
    │                          reports it as a ServerConfigError naming the setting)
    ├── MetricsConfigError   + ValueError: the ``metrics`` setting names an unknown metric
    ├── RecordError          + ValueError: a ring-buffer batch is not whole flow events
    ├── FilterError          + ValueError: a GetFlows filter Hubble would refuse; the message
    │                          starts with the field (``whitelist[0].source_ip: ...``) and the
    │                          service answers INVALID_ARGUMENT with it
    ├── LabelSelectorError   + ValueError: a label selector does not parse
    └── CelError             + ValueError: a CEL expression does not compile or is not bool

LabelSelectorError and CelError do not know which filter field they came from: the filter
compiler re-raises them as a FilterError naming the field, ``from`` the original.

The second bases are kept for callers written before this tree existed (``except ValueError``
around configuration, ``except OSError`` around binding). Each class is also importable from
the module that raises it (``septum.dataplane.observe.filters.FilterError``), as before.

The client side (flags, printer, connection) lives in ``septum.cli.hubble`` with its own tree.
"""

from __future__ import annotations


class ObserveError(Exception):
    """Base of every error ``septum.dataplane.observe`` raises on purpose."""


class ServerConfigError(ObserveError, ValueError):
    """A listen or TLS setting that cannot work; the message names the setting."""


class ListenError(ObserveError, OSError):
    """A listener could not bind; the message names the setting."""


class MetricsConfigError(ObserveError, ValueError):
    """The ``metrics`` setting names a metric Septum does not serve."""


class RecordError(ObserveError, ValueError):
    """A batch whose length is not a whole number of events."""


class FilterError(ObserveError, ValueError):
    """A GetFlows filter Hubble would refuse; the message starts with the field at fault."""


class LabelSelectorError(ObserveError, ValueError):
    """A label selector that does not parse."""


class CelError(ObserveError, ValueError):
    """A CEL expression Hubble would refuse (syntax, unknown field, or not a bool)."""
