"""The ssh backend against a real asyncssh server on loopback: jobs, cancel, refused keys, drops."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentgym_runtime.recording.runtime import Runtime
from agentgym_runtime.trainers.backends import EXIT_BACKEND
from agentgym_runtime.trainers.backends.select import register_backend, unregister_backend
from agentgym_runtime.trainers.backends.ssh import SSHBackend
from tests.trainers.backends.helpers import (
    REMOTE_ENV,
    alive,
    hang_spec,
    kill_groups,
    run_row,
    runner_file,
    training,
    wait_for,
)
from tests.trainers.backends.sshd import LoopbackSSH


def ssh_backend(sshd: LoopbackSSH, remote: Path, **overrides: object) -> SSHBackend:
    options: dict[str, object] = {
        "port": sshd.port,
        "key_path": str(sshd.client_key),
        "known_hosts": str(sshd.known_hosts),
        "python": sys.executable,
        "workdir": str(remote),
        "env": REMOTE_ENV,
        "poll_interval_s": 0.1,
    }
    options.update(overrides)
    return SSHBackend("127.0.0.1", **options)  # type: ignore[arg-type]


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "remote"
    yield root
    for path in root.glob("*/out/runner.json"):  # never leave a job behind
        info = json.loads(path.read_text())
        kill_groups(info["runner_pgid"], info["job_pgid"])


@pytest.mark.slow  # a real demos job (replay scoring): ~15 s alone on 2 cores
def test_demos_job_runs_over_ssh_and_its_verified_candidate_registers(
    episodes: Runtime, sshd: LoopbackSSH, remote: Path
) -> None:
    register_backend("loopback-ssh", ssh_backend(sshd, remote, choice="test: the loopback host"))
    try:
        run = episodes.scheduler.run_now("support", config=training("loopback-ssh"))
    finally:
        unregister_backend("loopback-ssh")
    assert run.status == "succeeded", (run.reason, run.error, run.log_tail)
    assert run.candidate_version == 1
    policy = episodes.policies.load("support", 1)
    # The job replayed the recorded episodes through the agent on the host to score candidates.
    assert (policy.trainer, policy.metrics["scored_by"], policy.metrics["heldout_tasks"]) == ("demos", "replay", 2)
    assert policy.metadata["training_run"] == run.run_id
    log = (Path(run.output_dir or "") / "job.log").read_text()
    assert f"[backend] connecting to {SSHBackend('127.0.0.1').user}@127.0.0.1:{sshd.port}" in log
    assert "[progress] 100% trainer 'demos' finished" in log  # the remote log, mirrored while it ran
    assert "output files verified against the job's manifest" in (run.log_tail or "")
    row = run_row(episodes, run.run_id)
    assert (row["backend"], row["backend_host"], row["backend_choice"]) == (
        "ssh",
        f"{SSHBackend('127.0.0.1').user}@127.0.0.1:{sshd.port}",
        "test: the loopback host",
    )
    assert row["duration_s"] > 0 and row["cost_usd"] is None
    assert list(remote.iterdir()) == []  # the remote job directory was removed
    local = Path(run.output_dir or "")
    assert json.loads((local / "outputs.sha256.json").read_text())["files"]["result.json"]["sha256"]


def test_teachers_episodes_travel_to_the_host_inside_the_snapshot(
    episodes: Runtime, sshd: LoopbackSSH, remote: Path
) -> None:
    import agentgym_runtime as agentgym

    @agentgym.train_online(name="big-model")
    def teacher(question: str) -> str:
        return question

    for k in range(2):
        with agentgym.episode(session_id=f"taught-{k}"):
            teacher(f"question {k}")
    register_backend("loopback-ssh", ssh_backend(sshd, remote))
    try:
        config = training("loopback-ssh", trainer_class="SnapshotsTrainer", teachers=["big-model"])
        run = episodes.scheduler.run_now("support", config=config)
    finally:
        unregister_backend("loopback-ssh")
    assert run.status == "succeeded", (run.reason, run.error, run.log_tail)
    read = json.loads(run_row(episodes, run.run_id)["metrics"])["read"]
    # Read on the host, from the copy of the snapshot: its own 6 episodes and its teacher's 2.
    assert (len(read["."]), read["teachers/big-model"]) == (6, ["taught-0", "taught-1"])


def test_cancel_kills_the_remote_process_groups(tmp_path: Path, sshd: LoopbackSSH, remote: Path) -> None:
    handle = ssh_backend(sshd, remote).submit(hang_spec(tmp_path))
    info = json.loads(wait_for(lambda: runner_file(remote), what="the remote runner").read_text())
    wait_for(lambda: handle.progress(), what="mirrored progress")
    assert handle.progress() == (0.1, "hanging forever")
    assert alive(info["runner_pid"]) and alive(info["job_pgid"])
    handle.cancel(grace_s=1.0)
    assert handle.poll() == -15
    assert not alive(info["runner_pid"]) and not alive(info["job_pgid"])
    assert "SIGTERM, then SIGKILL" in handle.log_tail()
    assert not (remote / "run-hangingtrainer").exists()


def test_timeout_kills_the_remote_job_and_fails_the_run(episodes: Runtime, sshd: LoopbackSSH, remote: Path) -> None:
    register_backend("loopback-ssh", ssh_backend(sshd, remote))
    pids: list[dict[str, int]] = []
    watcher = threading.Thread(
        target=lambda: pids.append(json.loads(wait_for(lambda: runner_file(remote), what="runner").read_text()))
    )
    watcher.start()
    try:
        run = episodes.scheduler.run_now(
            "support", config=training("loopback-ssh", trainer_class="HangingTrainer", timeout_s=3.0)
        )
    finally:
        unregister_backend("loopback-ssh")
    watcher.join(5)
    assert run.status == "failed" and run.reason == "timeout"
    assert not alive(pids[0]["runner_pid"]) and not alive(pids[0]["job_pgid"])


def test_a_host_that_refuses_the_key_fails_the_run_with_the_reason(
    episodes: Runtime, sshd: LoopbackSSH, remote: Path
) -> None:
    register_backend("loopback-ssh", ssh_backend(sshd, remote, key_path=str(sshd.other_key)))
    try:
        run = episodes.scheduler.run_now("support", config=training("loopback-ssh"))
    finally:
        unregister_backend("loopback-ssh")
    assert (run.status, run.reason, run.exit_code) == ("failed", "backend failed", EXIT_BACKEND)
    assert f"ssh {SSHBackend('127.0.0.1').user}@127.0.0.1:{sshd.port}: cannot connect: the host refused the key" in (
        run.error or ""
    )
    assert run_row(episodes, run.run_id)["error"] == run.error


def test_an_unknown_host_key_is_refused_by_default(tmp_path: Path, sshd: LoopbackSSH, remote: Path) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    handle = ssh_backend(sshd, remote, known_hosts=str(empty)).submit(hang_spec(tmp_path))
    assert handle.wait(30) == EXIT_BACKEND
    assert "host key could not be verified" in (handle.failure or "")
    assert not remote.exists()


def test_a_connection_dropped_midway_fails_the_run_with_the_reason(
    episodes: Runtime, sshd: LoopbackSSH, remote: Path
) -> None:
    register_backend("loopback-ssh", ssh_backend(sshd, remote))
    threading.Thread(
        target=lambda: (wait_for(lambda: runner_file(remote), what="runner"), sshd.drop()), daemon=True
    ).start()
    try:
        run = episodes.scheduler.run_now(
            "support", config=training("loopback-ssh", trainer_class="HangingTrainer", timeout_s=60.0)
        )
    finally:
        unregister_backend("loopback-ssh")
    assert (run.status, run.reason) == ("failed", "backend failed")
    assert "the connection dropped while the job ran" in (run.error or "")
    assert "reconnecting failed" in (run.error or "")
