"""Shared fixtures of the CLI tests: a home with recorded episodes, and running the command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import agentgym_runtime as agentgym
from agentgym_runtime.recording.capture import record_tool_failure
from agentgym_runtime.semconv import ToolOutcome


def run_cli(*args: str, home: Path | None = None, columns: int = 200) -> subprocess.CompletedProcess[str]:
    """Run ``agentgym ARGS`` in a subprocess (as users do) with ``COLUMNS`` set."""
    env = {**os.environ, "COLUMNS": str(columns)}
    if home is not None:
        env["AGENTGYM_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "agentgym_runtime.cli", *args], capture_output=True, text=True, timeout=120, env=env
    )


@pytest.fixture
def populated(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    agentgym.configure(home=home)

    @agentgym.tool
    def lookup(order_id: int) -> str:
        return "ok"

    for i in range(4):
        with agentgym.episode(agent="support"):
            lookup(order_id=i)
            if i % 2:
                record_tool_failure("refund_all", ToolOutcome.UNKNOWN_TOOL, call_id=f"x{i}")
    agentgym.shutdown()
    return home
