"""The ray backend against a real local Ray head (started by the test on loopback, one CPU)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentgym_runtime.recording.runtime import Runtime
from agentgym_runtime.trainers.backends.ray import RayBackend
from agentgym_runtime.trainers.backends.select import register_backend, unregister_backend
from tests.trainers.backends.helpers import REMOTE_ENV, hang_spec, run_row, training, wait_for

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def ray_head() -> Iterator[str]:
    """``ray start --head --block`` on 127.0.0.1 with 1 CPU, in its own process group; killed afterwards."""
    ray = Path(sys.executable).with_name("ray")
    port, dashboard = _free_port(), _free_port()
    temp = Path(f"/tmp/ray-{uuid.uuid4().hex[:6]}")  # short: Ray's socket paths have a length limit
    head = subprocess.Popen(
        [
            str(ray),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            "--num-cpus=1",
            "--num-gpus=0",
            "--include-dashboard=true",
            "--disable-usage-stats",
            f"--temp-dir={temp}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )
    address = f"http://127.0.0.1:{dashboard}"
    try:
        backend = RayBackend(address)

        def ready() -> bool:
            try:
                backend.check()
            except ConnectionError:
                return False
            return True

        wait_for(ready, 90, "the Ray head's Jobs API")
        yield address
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(8)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        time.sleep(0.5)
        try:
            os.killpg(head.pid, signal.SIGKILL)  # raylets, GCS and workers share the group
        except ProcessLookupError:
            pass
        shutil.rmtree(temp, ignore_errors=True)


def test_a_job_runs_on_the_ray_cluster_and_its_candidate_registers(episodes: Runtime, ray_head: str) -> None:
    backend = RayBackend(
        ray_head, num_gpus=0, python=sys.executable, env=REMOTE_ENV, poll_interval_s=0.3, choice="test: local head"
    )
    register_backend("local-ray", backend)
    try:
        run = episodes.scheduler.run_now("support", config=training("local-ray", trainer_class="PromptTrainer"))
    finally:
        unregister_backend("local-ray")
    assert run.status == "succeeded", (run.reason, run.error, run.log_tail)
    assert episodes.policies.load("support", run.candidate_version or 0).system_prompt == (
        "Always call get_order first. (trained on 4 tasks)"
    )
    row = run_row(episodes, run.run_id)
    assert row["backend"] == "ray" and row["backend_host"] == f"{ray_head} job agentgym-{run.run_id}"
    assert "output files verified against the job's manifest" in (run.log_tail or "")
    assert "[progress] 100%" in (run.log_tail or "")
    assert "outputs begin" not in (run.log_tail or "")  # the packed outputs are not shown as log


def test_cancel_stops_the_ray_job(tmp_path: Path, ray_head: str) -> None:
    from ray.job_submission import JobSubmissionClient

    backend = RayBackend(ray_head, num_gpus=0, python=sys.executable, env=REMOTE_ENV, poll_interval_s=0.3)
    handle = backend.submit(hang_spec(tmp_path))
    wait_for(lambda: handle.progress(), 60, "the job's first progress line")
    assert handle.progress() == (0.1, "hanging forever")
    handle.cancel(grace_s=2.0)
    assert handle.poll() == -15
    info = JobSubmissionClient(ray_head).get_job_info(handle.job_id)
    assert str(info.status).endswith("STOPPED")
    assert info.metadata == {"agentgym_run": "run-hangingtrainer", "agent": "support"}
