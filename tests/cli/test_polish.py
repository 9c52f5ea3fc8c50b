"""CLI polish: status of exited processes, unknown agents and formats, --json, 80 columns, formatting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from agentgym_runtime.cli import format as fmt
from agentgym_runtime.cli.status import COUNTS_CACHE, collect, render, rows
from agentgym_runtime.cli.store_commands import render_reliability
from tests.cli.conftest import run_cli


def test_formatting_reads_the_same_everywhere() -> None:
    assert [fmt.fmt_duration(s) for s in (0.004, 59.94, 60, 3599, 3600, 90061)] == [
        "4 ms",
        "59.9 s",
        "1m 00s",
        "59m 59s",
        "1h 00m",
        "1d 01h",
    ]
    assert fmt.fmt_percent(2 / 3) == "66.7%"
    assert fmt.fmt_number(1_000_000) == "1,000,000"
    assert fmt.fmt_eta(0.5, 30) == "30.0 s"
    assert fmt.fmt_signed(float("inf")) == "+∞"
    assert fmt.fmt_version(0) == "v0"


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_status_shows_an_exited_process_and_counts_from_the_cache(populated: Path) -> None:
    published = json.loads((populated / "status.json").read_text())
    (populated / "status.json").write_text(json.dumps({**published, "pid": _dead_pid()}))
    first = run_cli("status", "--json", home=populated)
    assert first.returncode == 0, first.stderr
    document = json.loads(first.stdout)
    assert document["process"]["state"] == "exited"
    assert document["counts"]["spans"] == 10 and document["counts"]["source"] == "store"
    assert (populated / COUNTS_CACHE).exists()
    second = json.loads(run_cli("status", "--json", home=populated).stdout)
    assert second["counts"]["source"] == "cache" and second["counts"]["episodes"] == 4
    table = run_cli("status", home=populated, columns=80).stdout
    assert " exited, updated " in table
    # Only a path longer than the terminal may overflow: it is printed whole, never cut.
    assert str(populated / "traces.duckdb") in table
    assert all(len(line) <= 80 for line in table.splitlines() if str(populated) not in line and "─" not in line)


def test_status_of_this_running_process_and_a_fresh_home(tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir()
    now = time.time()
    (home / "status.json").write_text(
        json.dumps({"pid": os.getpid(), "service_name": "svc", "updated_at": now, "stats": {"spans_lost": 3}})
    )
    document = collect(str(home))
    assert document["process"]["state"] == "running"
    assert document["counts"] == {"error": f"no trace store at {home / 'traces.duckdb'}"}
    text = render(rows(document, now), 80, colour=False)
    assert any("spans lost" in line and "│ 3 " in line for line in text.splitlines())
    assert "not readable: no trace store at" in text


def test_unknown_agents_and_formats_list_the_choices(populated: Path, tmp_path: Path) -> None:
    for command in (("traces", "-a", "nosuch"), ("reliability", "-a", "nosuch")):
        result = run_cli(*command, home=populated)
        assert result.returncode == 2
        assert "unknown agent 'nosuch'; agents with recorded episodes: support" in result.stderr
    csv = run_cli("export", str(tmp_path / "y.csv"), home=populated)
    assert csv.returncode == 2
    assert "cannot tell the export format of 'y.csv'; supported formats: parquet, jsonl, otlp-json" in csv.stderr
    assert not (tmp_path / "y.csv").exists()
    jsonl = run_cli("export", str(tmp_path / "y.jsonl"), home=populated)
    assert jsonl.returncode == 0, jsonl.stderr
    assert "(jsonl)" in jsonl.stdout
    assert len((tmp_path / "y.jsonl").read_text().splitlines()) == 4  # one line per episode


def test_listing_commands_print_json(populated: Path) -> None:
    traces = json.loads(run_cli("traces", "--json", "-n", "3", home=populated).stdout)
    assert [len(t["calls"]) for t in traces] == [2, 1, 2]  # newest first; odd ones failed once
    reliability = json.loads(run_cli("reliability", "--json", "--by", "policy", home=populated).stdout)
    assert reliability[0]["calls"] == 6 and reliability[0]["successes"] == 4
    scenarios = json.loads(run_cli("scenarios", "list", "--json").stdout)
    assert [s["name"] for s in scenarios] == ["code_review", "customer_support", "qa_testing"]


def test_tables_fit_80_columns_without_cutting_typed_values() -> None:
    rows_ = [
        {
            "agent": "support-eu",
            "key": name,
            "calls": 123456,
            "successes": 120000,
            "unknown_tool": 1000,
            "invalid_arguments": 2000,
            "tool_error": 456,
            "error_result": 0,
            "not_executed": 2000,
        }
        for name in ("lookup_customer_by_email", "refund_order")
    ]
    console = Console(width=80, record=True, color_system=None)
    console.print(render_reliability(rows_, "tool"))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    for value in ("support-eu", "lookup_customer_by_email", "123,456", "97.2%", "1,000", "2,000"):
        assert value in text, value
    assert "…" not in text


def test_scenario_typos_name_the_known_scenarios() -> None:
    result = run_cli("scenarios", "show", "customer-support")
    assert result.returncode == 1
    assert "unknown scenario 'customer-support' (did you mean 'customer_support'?)" in result.stderr
    assert "code_review, customer_support, qa_testing" in result.stderr.replace("\n", "")
