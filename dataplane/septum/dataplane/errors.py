"""The datapath's exception tree: every error the public API raises is a DatapathError.

    DatapathError
    ├── PrerequisiteError     something the datapath needs is missing (root, bpffs, object)
    ├── LibbpfError           a libbpf call or the kernel refused an operation
    ├── MapFullError          a map has no room left (names the DatapathConfig setting)
    ├── AbiMismatchError      a ctypes mirror disagrees with the object's BTF
    ├── NamespaceError        a network namespace cannot be entered
    ├── AttachError           attaching or detaching a program failed
    ├── ProgramError          + KeyError: the object has no program of that name
    ├── EndpointError         + LookupError: an endpoint is unknown or its spec is invalid
    ├── ConfigError           + ValueError: a DatapathConfig field is invalid
    ├── PolicyEntryError      + ValueError: a policy entry is invalid
    ├── PrefixError           + ValueError: an ipcache/prefilter prefix, or what it maps to,
    │                           is invalid
    └── ProxyRedirectError    + ValueError: the L7 redirect's sockets or routing cannot be set up

The second bases (``ValueError``, ``LookupError``) are kept for callers written before
this tree existed: ``except ValueError`` still catches bad input.  Every message starts
with the field at fault (``identity: 0 is not a security identity``), and errors from
other libraries are wrapped with ``raise ... from err`` so the original stays the cause.
"""

from __future__ import annotations


class DatapathError(Exception):
    """Base of every error raised by ``septum.dataplane`` (outside ``observe``)."""


class PrerequisiteError(DatapathError):
    """Something the datapath needs is missing; the message is one line saying what and how
    to fix it (run as root, mount bpffs, ``make bpf``, a kernel feature)."""


class LibbpfError(DatapathError):
    """A libbpf call failed."""

    def __init__(self, operation: str, errno: int, reason: str) -> None:
        super().__init__(f"{operation}: {reason} (errno {errno})")
        self.operation = operation
        self.errno = errno


class MapFullError(DatapathError):
    """A map has no room left; names the map and the configuration setting to raise."""

    def __init__(self, map_name: str, setting: str, capacity: int) -> None:
        super().__init__(
            f"BPF map {map_name} is full ({capacity} entries): raise DatapathConfig.{setting}"
        )
        self.map_name = map_name
        self.setting = setting
        self.capacity = capacity


class AbiMismatchError(DatapathError):
    """A ctypes mirror in septum.dataplane.abi disagrees with the object's BTF."""


class NamespaceError(DatapathError):
    """A network namespace is missing or the thread cannot enter it."""


class AttachError(DatapathError):
    """Attaching or detaching a program failed."""


class ProgramError(DatapathError, KeyError):
    """The loaded object has no program of the name asked for."""

    def __str__(self) -> str:  # KeyError's would quote the whole message
        return str(self.args[0]) if self.args else ""


class EndpointError(DatapathError, LookupError):
    """An endpoint is unknown or its settings are invalid."""


class ConfigError(DatapathError, ValueError):
    """A DatapathConfig field is invalid; the message names it (``DatapathConfig.<field>``)."""


class PolicyEntryError(DatapathError, ValueError):
    """A policy entry is invalid; the message names the entry index and the field."""


class PrefixError(DatapathError, ValueError):
    """An ipcache or prefilter prefix is not a prefix, or the identity or rule id given for
    it is out of range; the message names the prefix."""


class ProxyRedirectError(DatapathError, ValueError):
    """The L7 redirect's sockets or routing could not be set up (``port: 0 is not a port``)."""
