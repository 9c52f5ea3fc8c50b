"""Several processes, one store: gunicorn with 4 uvicorn workers sharing a home, and a collector
killed with SIGKILL while workers serve. Exact counts of acknowledged requests against the store.

The scenarios live in :mod:`tests.collectors.gunicorn_e2e` (``benchmarks/bench_gunicorn.py`` runs
them at 20,000 requests); ``AGENTGYM_E2E_REQUESTS`` runs these tests at another size by hand.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.collectors.gunicorn_e2e import (
    CONCURRENCY,
    SPANS_PER_EPISODE,
    run_collector_bounce,
    run_owner_killed,
    run_shared_home,
)

pytestmark = pytest.mark.slow

#: Requests per run: sized so each test stays well under a minute on 2 shared cores.
REQUESTS = int(os.environ.get("AGENTGYM_E2E_REQUESTS", "3000"))


def test_gunicorn_four_workers_share_a_home_and_every_acknowledged_episode_is_stored(tmp_path: Path) -> None:
    result = run_shared_home(tmp_path, REQUESTS)
    assert result.acknowledged == set(range(REQUESTS))
    assert sorted(result.stored) == list(range(REQUESTS))  # each exactly once
    assert result.duplicate_spans == 0
    assert result.spans_per_episode == {SPANS_PER_EPISODE}


def test_owner_killed_midway_then_another_worker_takes_over(tmp_path: Path) -> None:
    result = run_owner_killed(tmp_path, REQUESTS)
    assert result.killed_pid is not None
    assert result.owner_after not in (None, result.killed_pid)  # another process took the home over
    assert result.duplicate_episodes == 0  # nothing written twice
    assert result.duplicate_spans == 0
    # Nothing acknowledged is lost, whoever served it, the killed owner included: the followers'
    # batches that the dead owner never acknowledged waited in the spool, and the owner's own
    # episodes still in its in-memory queue were in its journal, replayed by the next owner.
    assert not result.lost, f"{len(result.lost)} acknowledged episodes lost ({result.by_killed} by the owner)"
    # Besides those, only requests the owner recorded but could not answer before it died (at
    # most one per client thread in flight) may be stored; every stored episode is complete.
    assert set(result.stored) <= set(range(REQUESTS))
    assert len(result.unacknowledged_stored) <= CONCURRENCY
    assert result.spans_per_episode == {SPANS_PER_EPISODE}
    assert result.journal_left == 0  # replayed, then deleted
    replayed = [line for line in result.log.splitlines() if "journaled by dead processes" in line]
    print(f"acknowledged {len(result.acknowledged)} ({result.by_killed} by the killed owner); {replayed}")


def test_collector_killed_and_restarted_while_workers_serve(tmp_path: Path) -> None:
    result = run_collector_bounce(tmp_path, REQUESTS)
    assert result.killed_pid is not None
    assert result.acknowledged == set(range(REQUESTS))
    assert sorted(result.stored) == list(range(REQUESTS))  # each exactly once
    assert result.duplicate_spans == 0
    assert result.spans_per_episode == {SPANS_PER_EPISODE}
