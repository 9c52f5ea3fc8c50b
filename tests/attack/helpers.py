"""Shared pieces of the attack suite: a child-process runner and store readers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb

ENV = {
    **os.environ,
    "PYTHONUNBUFFERED": "1",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "CREWAI_DISABLE_TELEMETRY": "true",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


def spawn(code: str) -> subprocess.Popen[str]:
    """Start ``python -c code`` with pipes (text mode)."""
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


def run(code: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -c code`` to the end."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=ENV, check=False
    )


def count(path: Path, table: str, where: str = "") -> int:
    """Rows of ``table`` in the DuckDB file at ``path`` (read-only)."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        row = con.execute(f"SELECT count(*) FROM {table} {where}").fetchone()
        return int(row[0]) if row else 0
    finally:
        con.close()
