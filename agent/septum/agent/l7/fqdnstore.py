"""The FQDN cache on disk: written atomically, read back at agent start.

A crash mid-write must leave the previous file whole, so the document goes to a
temporary file in the same directory, is flushed to disk, and replaces the old one
with one rename (then the directory is synced so the rename itself survives).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from septum.agent.l7.errors import FqdnStateError
from septum.agent.l7.fqdncache import FqdnCache, FqdnConfig

STATE_FILE = "fqdn-cache.json"


def save(path: Path, cache: FqdnCache) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(cache.to_json(), out, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def load(path: Path, config: FqdnConfig | None = None) -> FqdnCache:
    """The saved cache, or an empty one when none was saved yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return FqdnCache(config)
    except OSError as err:
        raise FqdnStateError(str(path), f"cannot be read: {err}") from err
    try:
        return FqdnCache.from_json(json.loads(text), config)
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise FqdnStateError(str(path), f"malformed FQDN state: {err}") from err


__all__ = ["STATE_FILE", "load", "save"]
