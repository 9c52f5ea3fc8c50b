"""The collector runs the deployment's one training scheduler, for the agents workers register.

Real processes: ``agentgym collect`` on a loopback port, and two workers (``scheduled_worker``)
that record through it with ``AGENTGYM_COLLECTOR_ENDPOINT`` and register a ``schedule="1s"``
training. The workers start no scheduler; their registrations travel as spans into the store,
the collector's scheduler reads them there and runs a real training job subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(home: Path, **extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "AGENTGYM_HOME": str(home), "PYTHONPATH": path, **extra}


def _sql(endpoint: str, query: str) -> list[list[Any]]:
    response = httpx.post(f"{endpoint}/v1/sql", json={"sql": query}, timeout=10)
    assert response.status_code == 200, response.text
    rows: list[list[Any]] = response.json()["rows"]
    return rows


def _wait_for(what: str, check: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = check()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_collector_runs_the_schedule_its_workers_registered(tmp_path: Path) -> None:
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    collector = subprocess.Popen(
        [str(BIN / "agentgym"), "collect", "--home", str(tmp_path), "--port", str(port)],
        env=_env(tmp_path),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for("the collector", lambda: httpx.get(f"{endpoint}/v1/status", timeout=2).status_code == 200, 30)
        workers = [
            subprocess.run(
                [sys.executable, "-m", "tests.collectors.scheduled_worker", "3"],
                env=_env(tmp_path, AGENTGYM_COLLECTOR_ENDPOINT=endpoint),
                cwd=ROOT,
                capture_output=True,
                timeout=60,
                check=False,
            )
            for _ in range(2)
        ]
        for worker in workers:
            assert worker.returncode == 0, worker.stderr.decode()
            # A worker that sends to a collector never runs a scheduler of its own.
            assert b"retrain" not in worker.stderr
        assert _sql(endpoint, "SELECT count(*) FROM episodes WHERE agent = 'scheduled'") == [[6]]
        registrations = _sql(endpoint, "SELECT count(*) FROM spans WHERE name = 'agentgym.training.register'")
        assert registrations == [[2]]  # one per worker start
        succeeded = _wait_for(
            "a succeeded training run",
            lambda: _sql(
                endpoint,
                "SELECT trainer, episodes, candidate_version, metrics FROM training_runs "
                "WHERE agent = 'scheduled' AND status = 'succeeded'",
            ),
            45,
        )
    finally:
        collector.send_signal(signal.SIGTERM)
        try:
            _, stderr = collector.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            collector.kill()  # never leave the collector behind
            _, stderr = collector.communicate()
    assert collector.returncode == 0, stderr.decode()
    trainer, episodes, candidate, metrics = succeeded[0]
    assert (trainer, episodes, candidate) == ("fake", 6, 1)
    assert json.loads(metrics)["train_tasks"] + json.loads(metrics)["heldout_tasks"] == 6
    assert (tmp_path / "policies").is_dir()
