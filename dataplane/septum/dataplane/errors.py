"""The datapath's exception tree: every error the public API raises is a DatapathError."""

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


class PolicyEntryError(DatapathError, ValueError):
    """A policy entry is invalid; the message names the entry index and the field."""


class EndpointError(DatapathError, LookupError):
    """An endpoint is unknown or its settings are invalid."""


class AttachError(DatapathError):
    """Attaching or detaching a program failed."""
