"""Every example runs offline and prints a reliability table from what it recorded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"
EXPECTED = {
    # example -> lines that must appear in its output
    "plain_python_agent.py": [
        "tool reliability by tool",
        "│ plain-support │ get_order_status │     4 │  1 │            0 │            2 │          1 │            0 │            0 │       25.0% │",
        "│ plain-support │ cancel_order     │     1 │  0 │            1 │            0 │          0 │            0 │            0 │        0.0% │",
    ],
}


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_example_runs_offline(name: str) -> None:
    env = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "reliability" in result.stdout
    for line in EXPECTED.get(name, []):
        assert line in result.stdout, f"{name}: missing {line!r} in\n{result.stdout}"
