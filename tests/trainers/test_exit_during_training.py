"""A script or service that stops while its background training job runs exits at once, the run ``cancelled``.

At interpreter exit ``concurrent.futures`` joins its pool threads before ``atexit`` runs; a
scheduled run's thread waits for its job, so such a process used to hang until the job ended (up
to ``timeout_s``) while APScheduler printed a traceback per tick. Real processes
(``apps/exiting_app.py``), a job that would run for ten minutes.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import agentgym_runtime as agentgym

APP = Path(__file__).parent / "apps" / "exiting_app.py"
ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def runs(home: Path) -> list[tuple[str, str | None]]:
    runtime = agentgym.configure(home=home)
    try:
        return [tuple(row) for row in runtime.store.query("SELECT status, reason FROM training_runs")]  # type: ignore[misc]
    finally:
        agentgym.shutdown()


def test_a_script_that_ends_while_its_job_runs_exits_and_records_the_run_cancelled(tmp_path: Path) -> None:
    home = tmp_path / "home"
    # Before the fix this never returned on its own: the timeout is the failure.
    done = subprocess.run(
        [sys.executable, str(APP), str(home), "end"], capture_output=True, text=True, timeout=90, env=ENV
    )
    assert done.stdout.strip() == "training"
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert runs(home) == [("cancelled", "cancelled: the service is shutting down")]


def test_sigterm_while_the_job_runs_stops_the_service_and_records_the_run_cancelled(tmp_path: Path) -> None:
    home = tmp_path / "home"
    service = subprocess.Popen(
        [sys.executable, str(APP), str(home), "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        assert service.stdout is not None
        assert service.stdout.readline().strip() == "training"
        time.sleep(random.uniform(0.0, 1.5))  # anywhere in the job's life, while calls are served
        service.send_signal(signal.SIGTERM)
        _, stderr = service.communicate(timeout=90)
    finally:
        if service.poll() is None:
            service.kill()
            service.communicate()
    assert service.returncode == 143, stderr
    assert "Traceback" not in stderr, stderr
    assert runs(home) == [("cancelled", "cancelled: the service is shutting down")]
