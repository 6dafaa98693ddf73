"""The sandbox leaves no namespace behind, even when its own construction fails."""

from __future__ import annotations

import secrets

import pytest

from septum.dataplane import sandbox as sandbox_mod
from septum.dataplane.sandbox import Sandbox, sandbox_namespaces

pytestmark = pytest.mark.privileged


def test_a_sandbox_that_fails_while_being_built_removes_its_namespace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prefix = f"sdp{secrets.token_hex(2)}"

    def refuse(path: str, value: str) -> None:
        raise OSError(f"cannot write {path}")  # a fault the kernel will not produce on demand

    monkeypatch.setattr(sandbox_mod, "_write_sysctl", refuse)
    with pytest.raises(OSError, match="cannot write"):
        Sandbox(prefix)
    assert sandbox_namespaces(prefix) == []
