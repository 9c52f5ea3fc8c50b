"""The agentgym command: --version, status, traces, reliability, export."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb

import agentgym_runtime as agentgym
from tests.cli.conftest import run_cli as _cli


def test_version() -> None:
    result = _cli("--version")
    assert result.returncode == 0
    assert result.stdout == f"agentgym-runtime {agentgym.__version__}\n"


def test_status_traces_reliability_export(populated: Path, tmp_path: Path) -> None:
    status = _cli("status", home=populated)
    assert status.returncode == 0, status.stderr
    table = {
        cells[0]: cells[1]
        for line in status.stdout.splitlines()
        if len(cells := [c.strip() for c in line.strip("│ ").split("│")]) == 2
    }
    assert table["episodes stored"] == "4"
    assert table["spans stored"] == "10"
    assert table["spans lost"] == "0"
    assert table["episodes written"] == "4"

    traces = _cli("traces", "--limit", "2", home=populated)
    assert traces.returncode == 0, traces.stderr
    assert traces.stdout.count("support v0") == 2
    assert "unknown_tool" in traces.stdout

    by_tool = _cli("reliability", "--by", "tool", home=populated)
    assert by_tool.returncode == 0, by_tool.stderr
    assert "tool reliability by tool · support" in by_tool.stdout  # one table per agent, named in its title
    lines = by_tool.stdout.splitlines()
    assert any("lookup" in line and "100.0%" in line for line in lines)
    assert any("refund_all" in line and "0.0%" in line for line in lines)

    by_policy = _cli("reliability", "--by", "policy", "--agent", "support", home=populated)
    assert "66.7%" in by_policy.stdout  # 4 ok of 6 calls

    out = tmp_path / "export.parquet"
    exported = _cli("export", str(out), home=populated)
    assert exported.returncode == 0, exported.stderr
    assert "wrote 10 spans" in exported.stdout
    assert duckdb.connect().execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchone() == (10,)


def test_cli_errors_are_clear(populated: Path, tmp_path: Path) -> None:
    bad_by = _cli("reliability", "--by", "month", home=populated)
    assert bad_by.returncode == 2
    assert "--by must be one of: tool, policy, day; got 'month'" in bad_by.stderr
    missing = _cli("traces", home=tmp_path / "empty")
    assert missing.returncode == 2
    assert "no trace store at" in missing.stderr
    bad_format = _cli("export", str(tmp_path / "x.csv"), "--format", "csv", home=populated)
    assert bad_format.returncode == 2
    assert "unknown export format 'csv'; supported formats: parquet, jsonl, otlp-json" in bad_format.stderr


def test_reads_a_snapshot_while_another_process_writes(populated: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, sys; c = duckdb.connect({str(populated / 'traces.duckdb')!r}); print('ready', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        result = _cli("reliability", home=populated)
        assert result.returncode == 0, result.stderr
        assert "reading a snapshot copy" in result.stderr
        assert "lookup" in result.stdout
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
