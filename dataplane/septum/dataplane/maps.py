"""Typed access to one BPF map by file descriptor, with a full map reported as MapFullError
naming the setting to raise.

* :class:`BpfMap`: one value per key -- lookups, updates, deletes, iteration and batch
  operations.
* :class:`PerCpuMap`: one value per key *and CPU* (per-CPU arrays and hashes), read as a
  list with an entry for each possible CPU; :func:`sum_per_cpu` adds them up.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable, Iterator, Sequence
from functools import cached_property
from typing import Any, Generic, TypeVar, cast

from septum.dataplane.errors import DatapathError, LibbpfError, MapFullError
from septum.dataplane.libbpf import BPF_ANY, BpfMapBatchOpts, check, lib

K = TypeVar("K", bound=ctypes.Structure | ctypes._SimpleCData)  # type: ignore[type-arg]
V = TypeVar("V", bound=ctypes.Structure | ctypes._SimpleCData)  # type: ignore[type-arg]
T = TypeVar("T")

# Errors a full map returns: hash maps E2BIG, LPM tries ENOSPC.
_FULL_ERRNOS = {errno.E2BIG, errno.ENOSPC}
# Kernel-internal "not supported" (no Python errno name): batch ops on map types without them.
_ENOTSUPP = 524
# What a batch operation the map type (or kernel) lacks returns: fall back to per key.
_BATCH_UNSUPPORTED = {-errno.EINVAL, -_ENOTSUPP, -errno.EOPNOTSUPP}
# Keys read per BPF_MAP_LOOKUP_BATCH call.
_LOOKUP_CHUNK = 4096
# The kernel copies a per-CPU value out once per possible CPU, each copy padded to 8 bytes.
_PER_CPU_ALIGN = 8


class _MapHandle(Generic[K, V]):
    """What every map has: a name, a file descriptor, key and value types, a capacity and
    the DatapathConfig setting that sizes it; deletes and key walks."""

    def __init__(
        self,
        name: str,
        fd: int,
        key_type: type[K],
        value_type: type[V],
        capacity: int,
        setting: str,
    ) -> None:
        self.name = name
        self.fd = fd
        self.key_type = key_type
        self.value_type = value_type
        self.capacity = capacity
        self.setting = setting

    def _raise(self, result: int, operation: str) -> None:
        if result >= 0:
            return
        code = -result
        if code in _FULL_ERRNOS:
            raise MapFullError(self.name, self.setting, self.capacity)
        raise LibbpfError(f"{operation} on map {self.name}", code, os.strerror(code))

    def delete(self, key: K) -> bool:
        """Delete `key`; False when it was not there."""
        result = lib().bpf_map_delete_elem(self.fd, ctypes.byref(key))
        if result == -errno.ENOENT:
            return False
        self._raise(result, "delete")
        return True

    def keys(self) -> Iterator[K]:
        """Every key (a snapshot walk with get_next_key; safe while deleting)."""
        binding = lib()
        current: K | None = None
        while True:
            following = self.key_type()
            previous = ctypes.byref(current) if current is not None else None
            result = binding.bpf_map_get_next_key(self.fd, previous, ctypes.byref(following))
            if result == -errno.ENOENT:
                return
            self._raise(result, "get_next_key")
            yield following
            current = following

    def _read_batches(
        self, value_size: int, decode: Callable[[memoryview], T | None]
    ) -> list[tuple[K, T]] | None:
        """Every entry through BPF_MAP_LOOKUP_BATCH, its value made by `decode` from the
        entry's `value_size` bytes (None: leave the entry out, its key never made); None
        when the map type has no lookup batch (the caller walks the keys instead)."""
        key_size = ctypes.sizeof(self.key_type)
        keys = ctypes.create_string_buffer(key_size * _LOOKUP_CHUNK)
        values = ctypes.create_string_buffer(value_size * _LOOKUP_CHUNK)
        entries: list[tuple[K, T]] = []
        in_batch = ctypes.c_uint64(0)
        out_batch = ctypes.c_uint64(0)
        first = True
        opts = BpfMapBatchOpts(sz=ctypes.sizeof(BpfMapBatchOpts))
        while True:
            count = ctypes.c_uint32(_LOOKUP_CHUNK)
            result = lib().bpf_map_lookup_batch(
                self.fd,
                None if first else ctypes.byref(in_batch),
                ctypes.byref(out_batch),
                keys,
                values,
                ctypes.byref(count),
                ctypes.byref(opts),
            )
            if result < 0 and result != -errno.ENOENT:
                if first and result in _BATCH_UNSUPPORTED:
                    return None
                self._raise(result, "lookup_batch")
            value_bytes = memoryview(values).cast("B")
            for index in range(count.value):
                offset = index * value_size
                value = decode(value_bytes[offset : offset + value_size])
                if value is not None:
                    key = cast(K, self.key_type.from_buffer_copy(keys, index * key_size))
                    entries.append((key, value))
            if result == -errno.ENOENT:
                return entries
            in_batch.value = out_batch.value
            first = False


class BpfMap(_MapHandle[K, V]):
    """One map: `key_type`/`value_type` are the ctypes mirrors from septum.dataplane.abi."""

    # per operation: array maps batch updates but not deletes (None: not tried yet)
    _update_batch_supported: bool | None = None
    _delete_batch_supported: bool | None = None

    def lookup(self, key: K) -> V | None:
        value = self.value_type()
        result = lib().bpf_map_lookup_elem(self.fd, ctypes.byref(key), ctypes.byref(value))
        if result == -errno.ENOENT:
            return None
        self._raise(result, "lookup")
        return value

    def update(self, key: K, value: V, flags: int = BPF_ANY) -> None:
        result = lib().bpf_map_update_elem(self.fd, ctypes.byref(key), ctypes.byref(value), flags)
        self._raise(result, "update")

    def items(self) -> Iterator[tuple[K, V]]:
        for key in self.keys():
            value = self.lookup(key)
            if value is not None:
                yield key, value

    def update_batch(self, keys: Sequence[K], values: Sequence[V]) -> None:
        """Insert/replace many entries in one syscall where the map type supports it."""
        if not keys:
            return
        if self._update_batch_supported is not False:
            key_array: Any = (self.key_type * len(keys))(*cast(Any, keys))
            value_array: Any = (self.value_type * len(values))(*cast(Any, values))
            count = ctypes.c_uint32(len(keys))
            opts = BpfMapBatchOpts(sz=ctypes.sizeof(BpfMapBatchOpts))
            result = lib().bpf_map_update_batch(
                self.fd, key_array, value_array, ctypes.byref(count), ctypes.byref(opts)
            )
            if result == -errno.ENOMEM:
                # Non-preallocated maps allocate from per-CPU caches that a long batch can
                # drain under memory pressure; element by element lets them refill.
                pass
            elif result not in _BATCH_UNSUPPORTED:
                self._update_batch_supported = True
                self._raise(result, "update_batch")
                return
            else:
                self._update_batch_supported = False
        for key, value in zip(keys, values, strict=True):
            self.update(key, value)

    def delete_batch(self, keys: Sequence[K]) -> None:
        """Delete many keys (missing ones are ignored), with BPF_MAP_DELETE_BATCH where the
        map type has it (hash maps; LPM tries on recent kernels) and one by one elsewhere."""
        done = 0
        if keys and self._delete_batch_supported is not False:
            done = self._delete_batched(keys)
        for key in keys[done:]:
            self.delete(key)

    def _delete_batched(self, keys: Sequence[K]) -> int:
        """Delete `keys` in batches; returns how many it went through (0 when the map type
        has no delete batch: the caller deletes them one by one)."""
        key_array: Any = (self.key_type * len(keys))(*cast(Any, keys))
        key_size = ctypes.sizeof(self.key_type)
        opts = BpfMapBatchOpts(sz=ctypes.sizeof(BpfMapBatchOpts))
        done = 0
        while done < len(keys):
            count = ctypes.c_uint32(len(keys) - done)
            result = lib().bpf_map_delete_batch(
                self.fd,
                ctypes.byref(key_array, done * key_size),
                ctypes.byref(count),
                ctypes.byref(opts),
            )
            if done == 0 and result in _BATCH_UNSUPPORTED:
                self._delete_batch_supported = False
                return 0
            self._delete_batch_supported = True
            if result != -errno.ENOENT:
                self._raise(result, "delete_batch")
                return len(keys)
            # The kernel stops at the first missing key, having deleted the `count` keys
            # before it: go on after it.
            done += count.value + 1
        return done

    def lookup_batch(self) -> list[tuple[K, V]]:
        """Every entry, read with BPF_MAP_LOOKUP_BATCH where supported (hash, array)."""
        value_size = ctypes.sizeof(self.value_type)
        batched = self._read_batches(
            value_size,
            lambda raw: cast(V, self.value_type.from_buffer_copy(raw)),
        )
        return list(self.items()) if batched is None else batched


class PerCpuMap(_MapHandle[K, V]):
    """A per-CPU array or hash map: each key holds one `value_type` per possible CPU, read
    together as a list indexed by CPU (the datapath's counters, which no CPU shares)."""

    @cached_property
    def cpus(self) -> int:
        """How many values each key holds."""
        return possible_cpus()

    @cached_property
    def _stride(self) -> int:
        # the kernel pads each CPU's copy to 8 bytes
        return -(-ctypes.sizeof(self.value_type) // _PER_CPU_ALIGN) * _PER_CPU_ALIGN

    def _values(self, raw: memoryview) -> list[V]:
        return [
            cast(V, self.value_type.from_buffer_copy(raw[cpu * self._stride :]))
            for cpu in range(self.cpus)
        ]

    def lookup(self, key: K) -> list[V] | None:
        """The key's value on every possible CPU; None when the key is absent."""
        buffer = ctypes.create_string_buffer(self._stride * self.cpus)
        result = lib().bpf_map_lookup_elem(self.fd, ctypes.byref(key), buffer)
        if result == -errno.ENOENT:
            return None
        self._raise(result, "lookup")
        return self._values(memoryview(buffer).cast("B"))

    def update(self, key: K, values: Sequence[V], flags: int = BPF_ANY) -> None:
        """Set the key's value on every possible CPU: `values` holds one per CPU."""
        if len(values) != self.cpus:
            raise DatapathError(
                f"update on map {self.name}: {len(values)} values for {self.cpus} CPUs"
            )
        buffer = ctypes.create_string_buffer(self._stride * self.cpus)
        for cpu, value in enumerate(values):
            ctypes.memmove(
                ctypes.byref(buffer, cpu * self._stride), ctypes.byref(value), ctypes.sizeof(value)
            )
        result = lib().bpf_map_update_elem(self.fd, ctypes.byref(key), buffer, flags)
        self._raise(result, "update")

    def items(self) -> Iterator[tuple[K, list[V]]]:
        for key in self.keys():
            values = self.lookup(key)
            if values is not None:
                yield key, values

    def lookup_batch(self) -> list[tuple[K, list[V]]]:
        """Every entry with its per-CPU values, read with BPF_MAP_LOOKUP_BATCH where
        supported (per-CPU arrays and hashes since Linux 5.6)."""
        batched = self._read_batches(self._stride * self.cpus, self._values)
        return list(self.items()) if batched is None else batched

    def lookup_batch_summed(self) -> list[tuple[K, V]]:
        """Every entry that is not zero on all CPUs, with its values summed over the CPUs
        (see sum_per_cpu).  Zero entries are skipped before any value is made: a per-CPU
        array holds every slot, and most of a counter array is zero."""
        value_size = self._stride * self.cpus
        zero = bytes(value_size)

        def summed(raw: memoryview) -> V | None:
            return None if raw == zero else sum_per_cpu(self._values(raw))

        batched = self._read_batches(value_size, summed)
        if batched is None:
            return [(key, sum_per_cpu(values)) for key, values in self.items()]
        return batched


def possible_cpus() -> int:
    """How many CPUs the kernel may ever bring up: the length of every per-CPU value."""
    return check(lib().libbpf_num_possible_cpus(), "libbpf_num_possible_cpus")


def sum_per_cpu(values: Sequence[V]) -> V:
    """The per-CPU values of one key (never empty: one per possible CPU) added up, field by
    field for a struct of integers."""
    kind: Any = type(values[0])
    if issubclass(kind, ctypes.Structure):
        names = [field[0] for field in kind._fields_]
        return cast(V, kind(*(sum(getattr(value, name) for value in values) for name in names)))
    return cast(V, kind(sum(cast(Any, value).value for value in values)))
