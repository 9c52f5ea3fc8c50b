"""RunPod and Lambda backends against local stand-ins of their APIs, the machine being loopback SSH.

Every path ends with the machine terminated at the provider: success, job crash, hang past the
timeout, cancel, provider errors, and a serving process killed with SIGKILL (the runner's
deadline stops the job, ``agentgym backends cleanup`` terminates the machine).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agentgym_runtime.cli.app import build_app
from agentgym_runtime.recording.runtime import Runtime
from agentgym_runtime.trainers.backends import EXIT_BACKEND
from agentgym_runtime.trainers.backends.cloud import CloudBackend, read_leases, spent_today
from agentgym_runtime.trainers.backends.lambda_cloud import LambdaProvider
from agentgym_runtime.trainers.backends.runpod import RunPodProvider
from agentgym_runtime.trainers.backends.select import register_backend, unregister_backend
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
from tests.trainers.backends.providers import LAMBDA_NO_CAPACITY, StandIn, provider_stand_in
from tests.trainers.backends.sshd import LoopbackSSH

TOKEN = "rp-planted-SECRET-token-4242"


@pytest.fixture
def stand(sshd: LoopbackSSH) -> Iterator[StandIn]:
    with provider_stand_in(TOKEN, sshd.port) as stand_in:
        yield stand_in


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "remote"
    yield root
    for path in root.glob("*/out/runner.json"):
        info = json.loads(path.read_text())
        kill_groups(info["runner_pgid"], info["job_pgid"])


def provider(kind: str, stand: StandIn, **options: Any) -> RunPodProvider | LambdaProvider:
    if kind == "runpod":
        return RunPodProvider(stand.url, TOKEN, gpu_type="NVIDIA A40", **options)
    return LambdaProvider(stand.url, TOKEN, ssh_key_name="ci-key", min_interval_s=0.0, **options)


def cloud(kind: str, stand: StandIn, sshd: LoopbackSSH, home: Path, remote: Path, **options: Any) -> CloudBackend:
    values: dict[str, Any] = {
        "home": home,
        "key_path": str(sshd.client_key),
        "python": sys.executable,
        "env": REMOTE_ENV,
        "max_runtime_s": 120.0,
        "poll_interval_s": 0.05,
        "ssh_poll_interval_s": 0.1,
        "workdir": str(remote),
        "on_deadline": "true",
    }
    values.update(options)
    return CloudBackend(provider(kind, stand), **values)


def run_on(runtime: Runtime, backend: CloudBackend, **config: Any) -> Any:
    register_backend("stand-in", backend)
    try:
        return runtime.scheduler.run_now("support", config=training("stand-in", **config))
    finally:
        unregister_backend("stand-in")


@pytest.mark.parametrize("kind", ["runpod", "lambda"])
def test_a_job_runs_end_to_end_on_a_rented_machine_which_is_then_terminated(
    kind: str, episodes: Runtime, sshd: LoopbackSSH, stand: StandIn, remote: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNPOD_API_KEY", TOKEN)  # planted: must appear nowhere we write
    monkeypatch.setenv("LAMBDA_API_KEY", TOKEN)
    launch = "/v2/pods" if kind == "runpod" else "/api/v1/instance-operations/launch"
    stand.rate_limit[launch] = 2  # the provider's 429s are waited out
    home = episodes.settings.home
    backend = cloud(kind, stand, sshd, home, remote)
    run = run_on(episodes, backend, trainer_class="PromptTrainer")
    assert run.status == "succeeded", (run.reason, run.error, run.log_tail)
    assert run.candidate_version == 1
    assert backend.provider.api.retries == 2  # type: ignore[attr-defined]
    (instance_id,) = stand.pods or stand.instances
    assert stand.state(instance_id) == ("TERMINATED" if kind == "runpod" else "terminated")
    assert read_leases(home) == []
    row = run_row(episodes, run.run_id)
    hourly = 0.44 if kind == "runpod" else 0.75
    assert (row["backend"], row["gpu_type"], row["hourly_usd"]) == (
        kind,
        "A40" if kind == "runpod" else "1x A10 (24 GB PCIe)",
        hourly,
    )
    assert row["duration_s"] > 0
    assert row["cost_usd"] == pytest.approx(round(hourly * row["duration_s"] / 3600, 4))
    assert spent_today(home) == pytest.approx(row["cost_usd"])
    assert row["backend_host"] == f"{kind}:{instance_id}"
    if kind == "runpod":  # the machine got our public key, nothing else secret
        assert stand.public_keys[0].startswith("ssh-ed25519 ")
    # The token is in no file we wrote: spec, logs, outputs, leases, ledger, the store.
    from agentgym_runtime.api import shutdown

    shutdown()
    written = [p for p in Path(home).rglob("*") if p.is_file()]
    assert any(p.name == "spec.json" for p in written) and any(p.suffix == ".duckdb" for p in written)
    assert [p for p in written if TOKEN.encode() in p.read_bytes()] == []


def test_a_crashing_job_fails_the_run_and_the_machine_is_terminated(
    episodes: Runtime, sshd: LoopbackSSH, stand: StandIn, remote: Path
) -> None:
    run = run_on(
        episodes, cloud("runpod", stand, sshd, episodes.settings.home, remote), trainer_class="CrashingTrainer"
    )
    assert (run.status, run.reason) == ("failed", "job crashed")
    assert "boom: the fake trainer crashed on purpose" in (run.error or "")
    assert [pod["status"] for pod in stand.pods.values()] == ["TERMINATED"]
    assert run_row(episodes, run.run_id)["cost_usd"] > 0


def test_a_job_hanging_past_the_timeout_is_killed_and_the_machine_terminated(
    episodes: Runtime, sshd: LoopbackSSH, stand: StandIn, remote: Path
) -> None:
    backend = cloud("lambda", stand, sshd, episodes.settings.home, remote)
    run = run_on(episodes, backend, trainer_class="HangingTrainer", timeout_s=4.0)
    assert (run.status, run.reason) == ("failed", "timeout")
    assert [i["status"] for i in stand.instances.values()] == ["terminated"]
    assert read_leases(episodes.settings.home) == []


def test_cancel_stops_the_job_and_terminates_the_machine(
    tmp_path: Path, sshd: LoopbackSSH, stand: StandIn, remote: Path
) -> None:
    handle = cloud("runpod", stand, sshd, tmp_path / "home", remote).submit(hang_spec(tmp_path))
    info = json.loads(wait_for(lambda: runner_file(remote), what="the job on the machine").read_text())
    handle.cancel(grace_s=1.0)
    assert handle.poll() == -15
    assert not alive(info["runner_pid"]) and not alive(info["job_pgid"])
    assert [pod["status"] for pod in stand.pods.values()] == ["TERMINATED"] and handle.terminated


def test_provider_errors_fail_the_run_with_the_providers_message(
    tmp_path: Path, sshd: LoopbackSSH, stand: StandIn, remote: Path
) -> None:
    stand.launch_error = (400, LAMBDA_NO_CAPACITY)
    handle = cloud("lambda", stand, sshd, tmp_path / "home", remote).submit(hang_spec(tmp_path))
    assert handle.wait(30) == EXIT_BACKEND
    assert handle.failure == (
        "lambda: lambda POST /api/v1/instance-operations/launch: HTTP 400: Not enough capacity to fulfill "
        "launch request. (Choose an instance type with more availability, or try your request again later.)"
    )
    stand.launch_error = None
    bad = CloudBackend(
        RunPodProvider(stand.url, "wrong-key"), home=tmp_path / "home", key_path=str(sshd.client_key)
    ).submit(hang_spec(tmp_path / "second"))
    assert bad.wait(30) == EXIT_BACKEND
    assert bad.failure == "runpod: runpod POST /v2/pods: HTTP 401: invalid or missing API key"
    assert stand.pods == {} and stand.instances == {}


def test_a_pricier_machine_than_allowed_is_terminated_unused(
    tmp_path: Path, sshd: LoopbackSSH, stand: StandIn, remote: Path
) -> None:
    stand.runpod_price = 2.5
    backend = CloudBackend(
        provider("runpod", stand, max_hourly_usd=1.0),
        home=tmp_path / "home",
        key_path=str(sshd.client_key),
        poll_interval_s=0.05,
        workdir=str(remote),
    )
    handle = backend.submit(hang_spec(tmp_path))
    assert handle.wait(30) == EXIT_BACKEND
    assert "costs $2.50/h, above your maximum of $1.00/h" in (handle.failure or "")
    assert [pod["status"] for pod in stand.pods.values()] == ["TERMINATED"]
    assert not remote.exists()


def test_budgets_refuse_a_run_that_would_pass_them(
    tmp_path: Path, sshd: LoopbackSSH, stand: StandIn, remote: Path
) -> None:
    home = tmp_path / "home"
    per_run = cloud("runpod", stand, sshd, home, remote, max_runtime_s=7200.0, budget_per_run_usd=1.0)
    handle = per_run.submit(hang_spec(tmp_path))
    assert handle.wait(10) == EXIT_BACKEND
    assert handle.failure == (
        "runpod: budget: this run may cost up to $2.00 ($1.00/h for at most 2.00h), over the per-run budget of $1.00"
    )
    (home / "backends").mkdir(parents=True, exist_ok=True)
    from datetime import UTC, datetime

    today = datetime.now(UTC).date().isoformat()
    (home / "backends" / "spend.jsonl").write_text(json.dumps({"run_id": "x", "day": today, "cost_usd": 4.5}) + "\n")
    per_day = cloud("runpod", stand, sshd, home, remote, max_runtime_s=3600.0, budget_per_day_usd=5.0)
    refused = per_day.submit(hang_spec(tmp_path / "second"))
    assert refused.wait(10) == EXIT_BACKEND
    assert "$4.50 spent today plus up to $1.00" in (refused.failure or "") and "per-day budget of $5.00" in (
        refused.failure or ""
    )
    assert stand.count("POST", "/v2/pods") == 0  # nothing was rented


SERVING = """
import sys, time
from pathlib import Path
from agentgym_runtime.trainers.backends.cloud import CloudBackend
from agentgym_runtime.trainers.backends.runpod import RunPodProvider
from tests.trainers.backends.helpers import REMOTE_ENV, hang_spec
url, token, home, key, remote, marker, tmp = sys.argv[1:8]
backend = CloudBackend(RunPodProvider(url, token), home=home, key_path=key, python=sys.executable, env=REMOTE_ENV,
                       max_runtime_s=6.0, poll_interval_s=0.05, workdir=remote, on_deadline=f"touch {marker}")
backend.submit(hang_spec(Path(tmp)))
time.sleep(600)
"""


def test_a_killed_serving_process_leaves_nothing_running_after_the_deadline_and_cleanup(
    tmp_path: Path, sshd: LoopbackSSH, stand: StandIn, remote: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, marker = tmp_path / "home", tmp_path / "machine-stopped"
    serving = subprocess.Popen(
        [
            sys.executable,
            "-c",
            SERVING,
            stand.url,
            TOKEN,
            str(home),
            str(sshd.client_key),
            str(remote),
            str(marker),
            str(tmp_path / "job"),
        ],
        env={**os.environ, "PYTHONPATH": REMOTE_ENV["PYTHONPATH"]},
    )
    try:
        info = json.loads(wait_for(lambda: runner_file(remote), 60, "the job on the machine").read_text())
        (pod_id,) = stand.pods
        assert len(read_leases(home)) == 1
        serving.send_signal(signal.SIGKILL)
        serving.wait(10)
        assert stand.state(pod_id) == "RUNNING"  # nobody terminated it: the process is gone
        # The machine's own deadline: the runner kills the job and runs the self-stop command.
        wait_for(marker.exists, 30, "the runner's deadline command")
        assert not alive(info["job_pgid"])
        # `agentgym backends cleanup` finds the leftover tagged as ours and terminates it.
        monkeypatch.setenv("RUNPOD_API_KEY", TOKEN)
        monkeypatch.setenv("AGENTGYM_RUNPOD_API_URL", stand.url)
        monkeypatch.delenv("LAMBDA_API_KEY", raising=False)
        result = CliRunner().invoke(build_app(), ["backends", "cleanup", "--home", str(home)])
        assert result.exit_code == 0, result.output
        assert f"runpod: terminated 1 machine(s): {pod_id}" in result.output
        assert "lambda: skipped: the lambda backend needs LAMBDA_API_KEY" in result.output
        assert stand.state(pod_id) == "TERMINATED" and read_leases(home) == []
    finally:
        if serving.poll() is None:
            serving.kill()
