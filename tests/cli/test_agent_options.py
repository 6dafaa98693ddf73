"""`septum agent` turns its flags into AgentOptions (the daemon itself is tested in tests/agent)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from septum.cli import agent as agent_cli


def _options(monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    seen: list[Any] = []

    def fake_run(options: Any) -> int:
        seen.append(options)
        return 0

    import septum.agent.daemon as daemon

    monkeypatch.setattr(daemon, "run", fake_run)
    result = CliRunner().invoke(agent_cli.agent, ["--node", "n1", *args])
    assert result.exit_code == 0, result.output
    return seen[0]


def test_flow_history_is_off_unless_a_directory_is_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert _options(monkeypatch).flow_history_dir is None
    options = _options(monkeypatch, "--flow-history-dir", str(tmp_path / "history"))
    assert options.flow_history_dir == (tmp_path / "history").resolve()
