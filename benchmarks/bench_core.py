"""Foundation benchmarks: recording overhead, store throughput, burst loss, query time, CLI start.

Run with ``make bench`` (all benchmarks) or ``python benchmarks/bench_core.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _util import interleaved, machine, median


def _warm_writer() -> float:
    """Wait for the writer's one-time background import of pyarrow; seconds waited.

    The per-call figures below are steady-state ones (like the 2,000 warm-up calls); the
    import runs once per process, right after the runtime starts, and is reported apart.
    """
    from agentgym_runtime.collectors.rows import arrow_ready

    start = time.perf_counter()
    arrow_ready(120)
    return time.perf_counter() - start


WARM_UP: list[float] = []


def overhead_per_tool_call() -> str:
    import agentgym_runtime as agentgym

    home = tempfile.mkdtemp(prefix="bench-core-")
    agentgym.configure(home=home)
    WARM_UP.append(_warm_writer())

    def bare(order_id: int) -> int:
        return order_id + 1

    recorded = agentgym.tool(bare)
    with agentgym.episode(agent="bench"):
        wrapped_call = lambda: recorded(order_id=7)  # noqa: E731
        bare_call = lambda: bare(order_id=7)  # noqa: E731
        for _ in range(2000):
            wrapped_call()
        agentgym.flush()
        bare_ns, wrapped_ns = interleaved(bare_call, wrapped_call, calls=2000, repeats=15)
    agentgym.flush()
    agentgym.shutdown()
    b, w = median(bare_ns), median(wrapped_ns)
    return (
        "| recorded tool call (validate + span + outcome), calling thread | "
        f"{w / 1000:.1f} µs vs bare {b / 1000:.2f} µs | overhead {(w - b) / 1000:.1f} µs, ratio {w / b:.0f}x | ≤ 40 µs |"
    )


def throughput_and_burst() -> list[str]:
    import agentgym_runtime as agentgym
    from agentgym_runtime.recording.capture import start_tool_call

    home = tempfile.mkdtemp(prefix="bench-core-")
    runtime = agentgym.configure(home=home)
    _warm_writer()
    n = 100_000
    start = time.perf_counter()
    with agentgym.episode(agent="burst"):
        for i in range(n):
            start_tool_call("ping", call_id=str(i)).succeed(None)
    produced = time.perf_counter() - start
    assert agentgym.flush(timeout_s=300)
    elapsed = time.perf_counter() - start
    stats = agentgym.stats()
    stored = runtime.store.query("SELECT count(*) FROM spans")[0][0]
    agentgym.shutdown()
    return [
        f"| spans/s into DuckDB, end to end (100k burst, produced in {produced:.1f} s) | {n / elapsed:,.0f} spans/s | "
        f"{elapsed:.2f} s for {n + 1:,} spans | ≥ 20,000 |",
        f"| spans lost in a 100k burst | {stats['spans_lost']} lost ({stored:,} stored of {stats['spans_enqueued']:,}) | "
        f"dropped {stats['rows_dropped']}, write failures {stats['write_failures']} | 0 |",
    ]


def reliability_query_1m() -> str:
    import duckdb

    from agentgym_runtime.collectors.schema import migrate

    path = os.path.join(tempfile.mkdtemp(prefix="bench-core-"), "q.duckdb")
    con = duckdb.connect(path)
    migrate(con)
    # 1M tool spans over 20 tools, 3 policy versions and 4 agents, ~12% failures.
    con.execute(
        """
        INSERT INTO spans (trace_id, span_id, name, kind, start_unix_nano, end_unix_nano,
                           status_code, episode_id, agent, policy_version, operation, tool_name,
                           tool_call_id, tool_outcome)
        SELECT lpad(CAST(i // 10 AS VARCHAR), 32, '0'), lpad(CAST(i AS VARCHAR), 16, '0'), 'execute_tool t',
               'INTERNAL', 1764000000000000000 + i, 1764000000000001000 + i, 'OK', CAST(i // 10 AS VARCHAR), 'agent' || (i % 4),
               i % 3, 'execute_tool', 'tool' || (i % 20), CAST(i AS VARCHAR),
               CASE WHEN i % 8 = 0 THEN 'invalid_arguments' ELSE 'ok' END
        FROM range(1000000) t(i)
        """
    )
    con.execute("CHECKPOINT")
    timings = []
    for _ in range(7):
        start = time.perf_counter()
        rows = con.execute("SELECT * FROM reliability").fetchall()
        timings.append(time.perf_counter() - start)
    con.close()
    assert len(rows) == 60, len(rows)  # 4 agents x 20 tools x 3 versions, grouped to 60 by construction
    return (
        f"| `SELECT * FROM reliability` over 1M tool spans | {median(timings) * 1000:.1f} ms median of 7 | "
        f"{len(rows)} groups | ≤ 50 ms |"
    )


def cli_version_start() -> str:
    exe = str(Path(sys.executable).with_name("agentgym"))
    timings = []
    baseline = []
    for _ in range(7):
        start = time.perf_counter()
        subprocess.run([exe, "--version"], check=True, capture_output=True)
        timings.append(time.perf_counter() - start)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True, capture_output=True)
        baseline.append(time.perf_counter() - start)
    return (
        f"| `agentgym --version` start | {median(timings) * 1000:.0f} ms median of 7 | "
        f"bare `python -c pass`: {median(baseline) * 1000:.0f} ms | ≤ 150 ms |"
    )


def main() -> None:
    print("## Foundation (issue 2)\n")
    print(f"Machine: {machine()}\n")
    print("| what | measured | context | target |")
    print("|---|---|---|---|")
    print(overhead_per_tool_call(), flush=True)
    for line in throughput_and_burst():
        print(line, flush=True)
    print(reliability_query_1m(), flush=True)
    print(cli_version_start(), flush=True)
    print(
        f"\nOne-time, after the runtime starts: the writer imports pyarrow in the background "
        f"(waited {WARM_UP[0]:.2f} s before measuring; until then batches use the appender).\n"
        "Load average (1, 5, 15 min) at the end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    )


if __name__ == "__main__":
    main()
