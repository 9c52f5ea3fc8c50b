"""`agentgym status` on a home with a million spans, side by side with `agentgym --version`.

Each command runs in a fresh process (as users and health checks run it), alternating, 15 times;
medians are reported. ``status`` is measured three ways: the first call after the store changed
(opens DuckDB, counts, refreshes the counts cache), the steady state (cache valid), and with a
published ``status.json`` of a live process. ``python -c pass`` is the floor of any command.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from agentgym_runtime.collectors.schema import migrate

SPANS = 1_000_000
RUNS = 15


def build_home(home: Path) -> None:
    """A home whose store holds ``SPANS`` tool spans over 100k episodes (written by SQL, for speed)."""
    home.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(home / "traces.duckdb"))
    migrate(con)
    con.execute(
        "INSERT INTO spans (trace_id, span_id, name, kind, start_unix_nano, end_unix_nano, status_code, "
        "episode_id, agent, policy_version, operation, tool_name, tool_outcome) "
        "SELECT 't' || (i // 10), 's' || i, 'execute_tool lookup', 'INTERNAL', 1700000000000000000 + i * 1000000, "
        "1700000000000000000 + i * 1000000 + 500000, 'OK', 'e' || (i // 10), 'support', 0, 'execute_tool', "
        "'lookup', CASE WHEN i % 7 = 0 THEN 'unknown_tool' ELSE 'ok' END FROM range(?) t(i)",
        [SPANS],
    )
    con.execute(
        "INSERT INTO episodes (episode_id, agent, policy_version, trace_id, started_at, ended_at, duration_ms, "
        "status, tool_calls, tool_failures, llm_calls, input_tokens, output_tokens) "
        "SELECT 'e' || i, 'support', 0, 't' || i, now(), now(), 1.0, 'ok', 10, 1, 1, 100, 20 FROM range(?) t(i)",
        [SPANS // 10],
    )
    con.close()


def timed(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        build_home(home)
        env = {**os.environ, "AGENTGYM_HOME": str(home)}
        cli = [sys.executable, "-m", "agentgym_runtime.cli"]
        cold: list[float] = []
        series: dict[str, list[float]] = {"python -c pass": [], "--version": [], "status": [], "status (live)": []}
        for _ in range(3):
            (home / ".status-counts.json").unlink(missing_ok=True)
            cold.append(timed([*cli, "status"], env))
        for _ in range(RUNS):
            series["python -c pass"].append(timed([sys.executable, "-c", "pass"], env))
            series["--version"].append(timed([*cli, "--version"], env))
            series["status"].append(timed([*cli, "status"], env))
        (home / "status.json").write_text(
            json.dumps({"pid": os.getpid(), "service_name": "bench", "updated_at": time.time(), "stats": {}})
        )
        for _ in range(RUNS):
            series["status (live)"].append(timed([*cli, "status"], env))
        print(f"spans: {SPANS:,}; runs: {RUNS} (fresh process each, alternating)")
        print(f"status, first call after a change (opens DuckDB): {statistics.median(cold) * 1000:.0f} ms median of 3")
        for name, samples in series.items():
            print(f"{name}: {statistics.median(samples) * 1000:.0f} ms median (min {min(samples) * 1000:.0f})")
        ratio = statistics.median(series["status"]) / statistics.median(series["--version"])
        print(f"status / --version: {ratio:.2f}x")


if __name__ == "__main__":
    main()
