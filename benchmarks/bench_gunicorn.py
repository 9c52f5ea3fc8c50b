"""The 20,000-request runs of issue 13: gunicorn with 4 uvicorn workers, exact counts.

Runs the three scenarios of ``tests/collectors/test_collector_processes.py`` (the same code,
:mod:`tests.collectors.gunicorn_e2e`) at a size the test suite cannot afford: the workers
share a home (elected owner); the same with the owner killed with SIGKILL midway; the workers
sending to ``agentgym collect``, killed with SIGKILL and restarted while they serve. For each:
requests acknowledged, episodes stored (by request number), duplicates, lost, wall time,
requests/s, spans/s and load average. Exits 1 if any acknowledged episode is lost or anything
is stored twice (in the owner-kill run, episodes the owner recorded but could not answer
before it died may be stored: at most one per client thread, reported, not a failure).

Every subprocess imports the ``agentgym_runtime`` of this checkout (``PYTHONPATH`` is pinned).

Run: ``flock /tmp/agentgym-bench.lock env PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_gunicorn.py
[--requests 20000] [--only shared|killed|collector]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

TREE = Path(__file__).resolve().parents[1]
# The scenarios live with the tests; the servers they start must import this checkout.
sys.path.insert(0, str(TREE))
os.environ["PYTHONPATH"] = str(TREE)

from benchmarks._util import machine  # noqa: E402
from tests.collectors.gunicorn_e2e import (  # noqa: E402
    CONCURRENCY,
    SPANS_PER_EPISODE,
    RunResult,
    run_collector_bounce,
    run_owner_killed,
    run_shared_home,
)

SCENARIOS: dict[str, Callable[[Path, int], RunResult]] = {
    "shared": run_shared_home,
    "killed": run_owner_killed,
    "collector": run_collector_bounce,
}


def report(result: RunResult) -> list[str]:
    """Print one scenario's line; the problems found in it (empty: exact)."""
    stored_spans = result.spans
    print(
        f"{result.scenario}: {result.requests:,} requests, acknowledged {len(result.acknowledged):,}; "
        f"episodes stored {len(result.stored):,} ({len(set(result.stored)):,} distinct request ids); "
        f"duplicates: {result.duplicate_episodes} episodes, {result.duplicate_spans} spans; "
        f"lost {len(result.lost)}; stored but unacknowledged {len(result.unacknowledged_stored)}; "
        f"wall {result.drive_s:.1f} s driving, {result.total_s:.1f} s until stored; "
        f"{len(result.acknowledged) / result.drive_s:,.0f} requests/s, "
        f"{stored_spans / result.total_s:,.0f} spans/s ({stored_spans:,} spans, {result.orphan_spans} of requests "
        "that never ended); "
        f"load average {result.load[0]:.2f} -> {result.load[1]:.2f}"
        + (f"; killed pid {result.killed_pid}" if result.killed_pid else "")
        + (
            f" (it acknowledged {result.by_killed:,} itself), owner after: {result.owner_after}"
            if result.by_killed
            else ""
        ),
        flush=True,
    )
    problems = []
    if result.lost:
        problems.append(f"{len(result.lost)} acknowledged episodes lost, e.g. {sorted(result.lost)[:10]}")
    if result.duplicate_episodes or result.duplicate_spans:
        problems.append(f"stored twice: {result.duplicate_episodes} episodes, {result.duplicate_spans} spans")
    if len(result.unacknowledged_stored) > CONCURRENCY:
        problems.append(
            f"{len(result.unacknowledged_stored)} unacknowledged episodes stored (> {CONCURRENCY} in flight)"
        )
    if result.spans_per_episode - {SPANS_PER_EPISODE}:
        problems.append(f"incomplete episodes: spans per episode {sorted(result.spans_per_episode)}")
    if result.spooled_left or result.journal_left:
        problems.append(f"left on disk: {result.spooled_left} spool files, {result.journal_left} journals")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append")
    args = parser.parse_args()
    print(machine(), f"load average {os.getloadavg()[0]:.2f}; {CONCURRENCY} client threads", flush=True)
    failed: list[str] = []
    for name in args.only or list(SCENARIOS):
        with tempfile.TemporaryDirectory(prefix=f"agentgym-{name}-") as home:
            problems = report(SCENARIOS[name](Path(home), args.requests))
        failed += [f"{name}: {problem}" for problem in problems]
    for problem in failed:
        print("FAILED", problem, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
