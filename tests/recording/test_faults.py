"""An unwritable, locked, corrupt or full store never changes the agent's results, and nothing
recorded is lost once the store is writable again (or at a clean exit)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb

import agentgym_runtime as agentgym

TOOLBOX_AGENT = """
import agentgym_runtime as agentgym

@agentgym.tool
def double(x: int) -> int:
    return 2 * x

@agentgym.train_online(name="worker")
def worker(x: int) -> int:
    return double(x=x) + 1
"""


def _agent():  # type: ignore[no-untyped-def]
    namespace: dict[str, object] = {}
    exec(TOOLBOX_AGENT, namespace)
    return namespace["worker"]


def _count(path: Path, table: str) -> int:
    con = duckdb.connect(str(path), read_only=True)
    try:
        row = con.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(row[0]) if row else 0
    finally:
        con.close()


def test_unwritable_location_then_recovery(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the store directory should be")
    store = blocker / "traces.duckdb"
    runtime = agentgym.configure(home=tmp_path / "home", store=str(store), reopen_backoff_s=0.0)
    try:
        worker = _agent()
        assert [worker(i) for i in range(5)] == [1, 3, 5, 7, 9]
        assert agentgym.flush() is False
        stats = agentgym.stats()
        assert stats["spans_written"] == 0
        assert stats["pending_rows"] == 10
        assert stats["write_failures"] >= 1
        assert "cannot create the store directory" in stats["last_error"]
        blocker.unlink()  # the location becomes writable
        assert agentgym.flush() is True
        assert agentgym.stats()["spans_written"] == 10
        assert agentgym.stats()["spans_lost"] == 0
        assert runtime.store.query("SELECT count(*) FROM episodes") == [(5,)]
    finally:
        agentgym.shutdown()


def test_store_locked_by_another_process_then_released(tmp_path: Path) -> None:
    path = tmp_path / "traces.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, sys; c = duckdb.connect({str(path)!r}); print('ready', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        agentgym.configure(home=tmp_path, reopen_backoff_s=0.0)
        worker = _agent()
        assert [worker(i) for i in range(3)] == [1, 3, 5]
        assert agentgym.flush() is False
        assert "Could not set lock" in agentgym.stats()["last_error"]
        assert agentgym.stats()["pending_rows"] == 6
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    try:
        assert agentgym.flush() is True
        assert agentgym.stats()["spans_written"] == 6
    finally:
        agentgym.shutdown()
    assert _count(path, "episodes") == 3


def test_corrupt_store_is_quarantined_and_replaced(tmp_path: Path) -> None:
    path = tmp_path / "traces.duckdb"
    path.write_bytes(os.urandom(50_000))
    runtime = agentgym.configure(home=tmp_path)
    try:
        assert _agent()(4) == 9
        assert agentgym.flush() is True
        (quarantined,) = runtime.store.quarantined
        assert Path(quarantined).exists()
        assert Path(quarantined).name.startswith("traces.duckdb.corrupt-")
        assert runtime.store.query("SELECT count(*) FROM episodes") == [(1,)]
    finally:
        agentgym.shutdown()


def _run(code: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)


def test_full_disk_keeps_agent_working_and_counts_failures(tmp_path: Path) -> None:
    """A file-size limit makes DuckDB's writes fail like a full disk does (EFBIG instead of ENOSPC)."""
    code = textwrap.dedent(
        f"""
        import json, resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        import agentgym_runtime as agentgym
        agentgym.configure(home={str(tmp_path)!r}, reopen_backoff_s=0.0)
        {TOOLBOX_AGENT.strip().replace(chr(10), chr(10) + "        ")}
        assert worker(1) == 3
        assert agentgym.flush()
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, resource.RLIM_INFINITY))
        results = [worker(i) for i in range(3000)]
        assert results == [2 * i + 1 for i in range(3000)]
        ok = agentgym.flush()
        print(json.dumps({{"flushed": ok, "stats": agentgym.stats()}}))
        """
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["flushed"] is False
    stats = report["stats"]
    assert stats["write_failures"] >= 1
    assert stats["pending_rows"] > 0
    assert stats["spans_enqueued"] == 2 + 6000
    assert stats["spans_written"] + stats["pending_rows"] == stats["spans_enqueued"]


def test_nothing_is_lost_at_process_exit_without_flush(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import agentgym_runtime as agentgym
        agentgym.configure(home={str(tmp_path)!r}, schedule_delay_ms=60000)
        {TOOLBOX_AGENT.strip().replace(chr(10), chr(10) + "        ")}
        for i in range(250):
            worker(i)
        """
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr[-2000:]
    path = tmp_path / "traces.duckdb"
    assert _count(path, "episodes") == 250
    assert _count(path, "spans") == 500


def test_internal_failure_never_changes_the_agent_result(tmp_path: Path) -> None:
    runtime = agentgym.configure(home=tmp_path, strict=False)
    try:

        def broken_resolver(agent: str, session_id: str | None) -> agentgym.Policy:
            raise RuntimeError("registry unreachable")

        runtime.policy_resolver = broken_resolver

        def bad_reward(episode: agentgym.Episode) -> float:
            raise ZeroDivisionError("bad reward function")

        @agentgym.train_online(name="robust", reward=bad_reward)
        def robust(x: int) -> int:
            return x * 3

        assert [robust(i) for i in range(3)] == [0, 3, 6]
        assert agentgym.flush()
        stats = agentgym.stats()
        assert stats["internal_errors"] == 6  # 3 resolver failures + 3 reward failures, counted
        rows = runtime.store.query("SELECT policy_version, reward, status FROM episodes")
        assert rows == [(0, None, "ok")] * 3
    finally:
        agentgym.shutdown()
