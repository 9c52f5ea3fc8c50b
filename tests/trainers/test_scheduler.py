"""The retraining scheduler: real job subprocesses, training_runs bookkeeping, locks, faults."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import agentgym_runtime as agentgym
from agentgym_runtime.errors import ConfigurationError
from agentgym_runtime.policy.registry import PolicyRegistry
from agentgym_runtime.recording.runtime import Runtime
from agentgym_runtime.testing import Recorded
from agentgym_runtime.trainers.scheduler import (
    TrainingConfig,
    TrainLock,
    last_success_until,
    list_runs,
    parse_schedule,
    registered_training,
    request_status,
    submit_request,
    unregister_training,
)

FAKES = "tests.trainers.fake_trainers"


@agentgym.tool
def get_order(order_id: int) -> dict[str, Any]:
    """Look up an order."""
    return {"id": order_id, "status": "shipped"}


def support_agent(session: str | None = None) -> Any:
    @agentgym.train_online(name="support", session_id=session)
    def support(question: str, order_id: int) -> str:
        return f"order {order_id} is {get_order(order_id=order_id)['status']}"

    return support


def serve(count: int, start: int = 0) -> None:
    agents = [support_agent(f"s{k}") for k in range(3)]
    for i in range(start, start + count):
        agents[i % 3](f"where is order {i}?", i)


def config(trainer_class: str, **overrides: Any) -> TrainingConfig:
    values: dict[str, Any] = {
        "agent": "support",
        "trainer": "fake",
        "min_new_episodes": 3,
        "gpu": "cpu",
        "timeout_s": 60.0,
        "trainer_options": {"trainer_class": f"{FAKES}:{trainer_class}"},
    }
    values.update(overrides)
    return TrainingConfig(**values)


def answer(question: str) -> str:
    """An agent a training job can import again (module level; a closure is refused for replaying trainers)."""
    return question


def run_row(runtime: Runtime, run_id: str) -> dict[str, Any]:
    rows = runtime.store.query_dicts("SELECT * FROM training_runs WHERE run_id = ?", [run_id])
    assert len(rows) == 1
    return rows[0]


def test_scheduled_run_trains_in_a_subprocess_and_registers_the_candidate(
    agentgym_runtime: Runtime, recorded: Recorded
) -> None:
    serve(6)
    scheduler = agentgym_runtime.scheduler
    scheduler.add_agent(config("PromptTrainer", schedule="1s", min_new_episodes=5))
    assert scheduler.jobs() == ["train:support"]
    deadline = time.monotonic() + 30
    succeeded: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not succeeded:
        time.sleep(0.2)
        succeeded = [r for r in list_runs(agentgym_runtime.store, "support") if r["status"] == "succeeded"]
    scheduler.remove_agent("support")
    assert scheduler.jobs() == []
    assert len(succeeded) == 1
    row = succeeded[0]
    assert row["trainer"] == "fake"
    assert row["episodes"] == 6
    assert row["candidate_version"] == 1
    assert row["reason"] is None and row["error"] is None
    assert row["started_at"] <= row["ended_at"]
    metrics = json.loads(row["metrics"])
    # 3 sessions, 20% held out -> one session of 2 episodes.
    assert metrics["train_tasks"] == 4
    assert metrics["heldout_tasks"] == 2
    assert metrics["heldout_reward_before"] == 1.0
    assert metrics["device"] == "cpu"
    assert metrics["cuda_visible_devices"] == ""  # gpu="cpu" hides every GPU from the job
    assert Path(row["snapshot_path"], "manifest.json").is_file()
    assert "trainer 'fake' finished" in row["log_tail"]

    policy = PolicyRegistry(agentgym_runtime.settings.policies_dir).load("support", 1)
    assert policy.system_prompt == "Always call get_order first. (trained on 4 tasks)"
    assert policy.tool_descriptions == {"get_order": "Look up an order by its numeric id."}
    assert policy.trainer == "fake-prompt"
    assert policy.metrics == metrics
    assert policy.parent_version == 0
    assert policy.metadata["training_run"] == row["run_id"]
    events = [e for e in PolicyRegistry(agentgym_runtime.settings.policies_dir).events("support") if e.version == 1]
    assert [(e.to_status, e.actor, e.reason) for e in events] == [
        ("candidate", "training", f"training run {row['run_id']} (fake)")
    ]
    assert last_success_until(agentgym_runtime.store, "support") == row["started_at"]
    # Runs that fired after the success found no new episodes.
    for later in list_runs(agentgym_runtime.store, "support"):
        if later["run_id"] != row["run_id"]:
            assert later["status"] == "skipped"
            assert later["reason"].startswith("too few new episodes: 0 since the last successful run")


def test_too_few_episodes_skips_the_run_with_the_reason(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    serve(2)
    run = agentgym_runtime.scheduler.run_now("support", config=config("PromptTrainer", min_new_episodes=5))
    assert run.status == "skipped"
    row = run_row(agentgym_runtime, run.run_id)
    assert row["status"] == "skipped"
    assert row["reason"] == "too few new episodes: 2 recorded so far, at least 5 needed"
    assert row["episodes"] == 2
    assert row["snapshot_path"] is None
    assert row["ended_at"] is not None
    assert not (agentgym_runtime.settings.home / "snapshots").exists()
    empty = agentgym_runtime.scheduler.run_now("nobody", config=config("PromptTrainer", agent="nobody"))
    assert empty.status == "skipped"
    assert empty.reason == "too few new episodes: 0 recorded so far, at least 3 needed"


def test_crashing_job_fails_with_log_tail_releases_lock_and_next_run_works(
    agentgym_runtime: Runtime, recorded: Recorded
) -> None:
    serve(4)
    scheduler = agentgym_runtime.scheduler
    crashed = scheduler.run_now("support", config=config("CrashingTrainer"))

    row = run_row(agentgym_runtime, crashed.run_id)
    assert row["status"] == "failed"
    assert row["reason"] == "job crashed"
    assert row["error"] == "RuntimeError: boom: the fake trainer crashed on purpose"
    assert "Traceback (most recent call last)" in row["log_tail"]
    assert "RuntimeError: boom: the fake trainer crashed on purpose" in row["log_tail"]
    assert crashed.exit_code == 1
    lock_path = agentgym_runtime.settings.home / "locks" / "train-support.lock"
    assert lock_path.read_text() == ""
    assert scheduler.active_runs() == {}

    retried = scheduler.run_now("support", config=config("PromptTrainer"))
    assert retried.status == "succeeded"
    assert retried.episodes == 4  # a failed run does not consume its episodes
    assert retried.candidate_version == 1


def test_hanging_job_is_killed_at_the_timeout(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    serve(3)
    started = time.monotonic()
    run = agentgym_runtime.scheduler.run_now("support", config=config("HangingTrainer", timeout_s=2.0))
    elapsed = time.monotonic() - started

    assert elapsed < 15
    row = run_row(agentgym_runtime, run.run_id)
    assert row["status"] == "failed"
    assert row["reason"] == "timeout"
    assert row["error"] == "the job ran longer than its timeout of 2s and was killed"
    assert "hanging forever" in row["log_tail"]
    assert run.exit_code is not None and run.exit_code < 0  # ended by a signal
    assert TrainLock(agentgym_runtime.settings.home / "locks" / "train-support.lock").acquire("next")


def test_unavailable_trainer_fails_with_its_message(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    serve(3)
    run = agentgym_runtime.scheduler.run_now("support", config=config("UnavailableTrainer"))
    row = run_row(agentgym_runtime, run.run_id)
    assert run.exit_code == 3
    assert row["status"] == "failed"
    assert row["reason"] == "trainer unavailable"
    assert row["error"] == (
        "TrainerUnavailable: the fake trainer needs the 'fake-extra' package: pip install 'agentgym-runtime[fake]'"
    )
    missing = agentgym_runtime.scheduler.run_now(
        "support", config=config("PromptTrainer", trainer_options={"trainer_class": "no_such_pkg.mod:Trainer"})
    )
    assert missing.status == "failed"
    assert missing.reason == "trainer unavailable"
    assert missing.error is not None
    assert "importing 'no_such_pkg.mod' failed (missing module 'no_such_pkg')" in missing.error


def test_service_keeps_answering_while_a_job_runs(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    serve(3)
    agent = support_agent("live")
    stop = threading.Event()
    answers: list[str] = []

    def keep_serving() -> None:
        i = 1000
        while not stop.is_set():
            answers.append(agent("still there?", i))
            i += 1
            time.sleep(0.01)

    first: list[Any] = []
    job = threading.Thread(
        target=lambda: first.append(
            agentgym_runtime.scheduler.run_now(
                "support",
                config=config(
                    "PromptTrainer",
                    trainer_options={
                        "trainer_class": f"{FAKES}:PromptTrainer",
                        "delay_s": 2.0,
                    },
                ),
            )
        )
    )
    job.start()
    while not agentgym_runtime.scheduler.active_runs():
        time.sleep(0.01)
    server = threading.Thread(target=keep_serving)
    server.start()
    job.join(timeout=60)
    stop.set()
    server.join()

    assert first[0].status == "succeeded"
    assert first[0].episodes == 3
    served = len(answers)
    assert served >= 10  # the agent answered throughout the ~2 s job
    assert answers[0] == "order 1000 is shipped"
    assert len(recorded.episodes("support")) == 3 + served  # nothing recorded during training was lost
    second = agentgym_runtime.scheduler.run_now("support", config=config("PromptTrainer"), force=True)
    assert second.status == "succeeded"
    assert second.episodes == served  # the episodes recorded during training feed the next run
    assert second.candidate_version == 2


def test_one_run_per_agent_and_stale_lock_is_taken_over(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    serve(3)
    lock_path = agentgym_runtime.settings.home / "locks" / "train-support.lock"
    holder = TrainLock(lock_path)
    assert holder.acquire("other-run")
    blocked = agentgym_runtime.scheduler.run_now("support", config=config("PromptTrainer"))
    assert blocked.status == "skipped"
    assert blocked.reason is not None
    assert blocked.reason.startswith(
        f"another training run of 'support' is in progress (run other-run, pid {os.getpid()}, since "
    )
    holder.release()

    # A holder that died leaves its file behind but not its flock.
    lock_path.write_text(json.dumps({"pid": 999999, "run_id": "dead-run", "started_at": "2020-01-01T00:00:00"}))
    taken = TrainLock(lock_path)
    assert taken.acquire("new-run")
    assert taken.stale_holder == {"pid": 999999, "run_id": "dead-run", "started_at": "2020-01-01T00:00:00"}
    assert json.loads(lock_path.read_text())["run_id"] == "new-run"
    taken.release()
    run = agentgym_runtime.scheduler.run_now("support", config=config("PromptTrainer"))
    assert run.status == "succeeded"


def test_decorator_validates_training_options_and_schedules_the_agent(
    agentgym_runtime: Runtime, no_registered_training: None
) -> None:
    cases = [
        ({"schedule": "every day"}, "schedule 'every day' is neither a duration"),
        ({"schedule": "61 * * * *"}, "schedule '61 \\* \\* \\* \\*' is not a valid cron string"),
        ({"gpu": "tpu"}, "gpu must be one of 'auto', 'cpu', 'local', got 'tpu'"),
        ({"min_new_episodes": 0}, "min_new_episodes must be an integer >= 1, got 0"),
        ({"trainer": "magic"}, "unknown trainer 'magic'; choose one of: apo, demos, grpo, sft, verl"),
        ({"trainer": "verl", "gpu": "cpu"}, "trainer 'verl' needs a CUDA GPU; gpu='cpu' cannot work"),
        ({"trainer_options": {"x": object()}}, "trainer_options must be JSON-serialisable"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ConfigurationError, match=message):
            agentgym.train_online(name="support", **kwargs)(answer)
    assert registered_training() == {}

    wrapped = agentgym.train_online(name="support", schedule="0 3 * * *", min_new_episodes=50, trainer="apo")(answer)
    assert wrapped("hi") == "hi"
    registered = registered_training()["support"]
    assert (registered.schedule, registered.min_new_episodes, registered.trainer, registered.gpu) == (
        "0 3 * * *",
        50,
        "apo",
        "auto",
    )
    assert registered.entrypoint is not None and registered.entrypoint.endswith("answer")
    assert agentgym_runtime.scheduler.jobs() == ["train:support"]
    next_run = agentgym_runtime.scheduler.next_run_time("support")
    assert next_run is not None and (next_run.hour, next_run.minute) == (3, 0)
    # A runtime configured later picks the schedule up too.
    runtime = agentgym.configure(home=agentgym_runtime.settings.home / "second", strict=True)
    assert runtime.scheduler.jobs() == ["train:support"]
    unregister_training("support")
    assert runtime.scheduler.jobs() == []


def test_parse_schedule_forms() -> None:
    assert parse_schedule("6h") == ("interval", 21600.0)
    assert parse_schedule("30m") == ("interval", 1800.0)
    assert parse_schedule("1d") == ("interval", 86400.0)
    assert parse_schedule("*/15 * * * *") == ("cron", "*/15 * * * *")
    with pytest.raises(ConfigurationError, match="must be a positive duration"):
        parse_schedule("0h")


def _job_pid(output_dir: Path, timeout_s: float = 20.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        log = output_dir / "job.log"
        if log.exists() and "hanging forever" in log.read_text():
            line = next(ln for ln in log.read_text().splitlines() if ln.startswith("[job] run "))
            return int(line.rsplit("(pid ", 1)[1].rstrip(")"))
        time.sleep(0.05)
    raise AssertionError("the job never started")


def test_job_killed_from_outside_marks_the_run_failed(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    import signal

    serve(3)
    runs: list[Any] = []
    thread = threading.Thread(
        target=lambda: runs.append(agentgym_runtime.scheduler.run_now("support", config=config("HangingTrainer")))
    )
    thread.start()
    while not agentgym_runtime.scheduler.active_runs():
        time.sleep(0.01)
    run_id = agentgym_runtime.scheduler.active_runs()["support"]
    os.kill(_job_pid(agentgym_runtime.settings.home / "training" / "support" / run_id), signal.SIGKILL)
    thread.join(timeout=30)

    row = run_row(agentgym_runtime, run_id)
    assert row["status"] == "failed"
    assert row["reason"] == "job killed by signal 9"
    assert row["error"] == "the job exited with code -9"
    assert "hanging forever" in row["log_tail"]
    assert agentgym_runtime.scheduler.active_runs() == {}


def test_shutdown_stops_a_running_job_and_records_it(agentgym_runtime: Runtime) -> None:
    serve(3)
    runs: list[Any] = []
    thread = threading.Thread(
        target=lambda: runs.append(agentgym_runtime.scheduler.run_now("support", config=config("HangingTrainer")))
    )
    thread.start()
    while not agentgym_runtime.scheduler.active_runs():
        time.sleep(0.01)
    run_id = agentgym_runtime.scheduler.active_runs()["support"]
    _job_pid(agentgym_runtime.settings.home / "training" / "support" / run_id)
    agentgym_runtime.shutdown()
    thread.join(timeout=30)

    assert runs[0].status == "cancelled"  # issue 16: a run stopped by shutdown is cancelled, not failed
    assert runs[0].reason == "cancelled: the service is shutting down"
    store = agentgym_runtime.store
    assert store.query("SELECT status, reason FROM training_runs WHERE run_id = ?", [run_id]) == [
        ("cancelled", "cancelled: the service is shutting down")
    ]
    store.close()


def test_shutdown_with_a_reason_records_it_on_the_cancelled_run(agentgym_runtime: Runtime) -> None:
    serve(3)
    runs: list[Any] = []
    scheduler = agentgym_runtime.scheduler
    thread = threading.Thread(target=lambda: runs.append(scheduler.run_now("support", config=config("HangingTrainer"))))
    thread.start()
    while not scheduler.active_runs():
        time.sleep(0.01)
    run_id = scheduler.active_runs()["support"]
    _job_pid(agentgym_runtime.settings.home / "training" / "support" / run_id)
    scheduler.shutdown(wait=False, reason="the demo ended before the run finished")  # what the demo does
    thread.join(timeout=30)

    assert (runs[0].status, runs[0].reason) == ("cancelled", "cancelled: the demo ended before the run finished")
    assert agentgym_runtime.store.query("SELECT status, reason FROM training_runs WHERE run_id = ?", [run_id]) == [
        ("cancelled", "cancelled: the demo ended before the run finished")
    ]
    assert scheduler.active_runs() == {}


def test_cli_train_and_runs(agentgym_runtime: Runtime) -> None:
    from typer.testing import CliRunner

    from agentgym_runtime.cli.app import build_app

    serve(4)
    home = str(agentgym_runtime.settings.home)
    agentgym.shutdown()  # the CLI opens the store itself; a running service would hold it
    runner = CliRunner()
    app = build_app()
    fake = ["--trainer", "fake", "--gpu", "cpu", "--option", f"trainer_class={FAKES}:PromptTrainer", "--home", home]

    unavailable = f"trainer_class={FAKES}:UnavailableTrainer"
    broken = runner.invoke(
        app,
        ["train", "--agent", "support", "--now", "--trainer", "fake", "--home", home, "--option", unavailable],
    )
    assert broken.exit_code == 1
    assert "failed" in broken.output
    assert "TrainerUnavailable: the fake trainer needs the 'fake-extra' package" in broken.output

    trained = runner.invoke(app, ["train", "--agent", "support", "--now", *fake])
    assert trained.exit_code == 0, trained.output
    assert "succeeded" in trained.output
    assert "candidate policy: v1" in trained.output
    assert "train_tasks=2, heldout_tasks=2" in trained.output  # session s0 (2 episodes) held out

    again = runner.invoke(app, ["train", "--agent", "support", *fake])
    assert again.exit_code == 0, again.output
    assert "skipped" in again.output
    assert "too few new episodes: 0 since the last successful run" in again.output

    listed = runner.invoke(app, ["runs", "--agent", "support", "--json", "--home", home])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert [r["status"] for r in rows] == ["skipped", "succeeded", "failed"]
    assert rows[1]["candidate_version"] == 1
    assert rows[2]["reason"] == "trainer unavailable"
    table = runner.invoke(app, ["runs", "--home", home])
    assert table.exit_code == 0
    assert rows[1]["run_id"] in table.output
    bad = runner.invoke(app, ["train", "--agent", "support", "--gpu", "tpu", "--home", home])
    assert bad.exit_code == 2
    assert "gpu must be one of 'auto', 'cpu', 'local', got 'tpu'" in bad.output


def test_cli_train_hands_the_run_to_the_service_holding_the_store(agentgym_runtime: Runtime) -> None:
    import subprocess
    import sys

    serve(4)
    scheduler = agentgym_runtime.scheduler
    # A request may name code to import only as the service itself configured it (issue 18).
    scheduler.add_agent(config("PromptTrainer"))
    scheduler.serve_requests(interval_s=0.2)
    assert scheduler.serves_requests()
    assert agentgym.flush()
    home = str(agentgym_runtime.settings.home)
    cli = [sys.executable, "-m", "agentgym_runtime.cli", "train", "--agent", "support", "--home", home]
    fake = ["--now", "--trainer", "fake", "--gpu", "cpu", "--option", f"trainer_class={FAKES}:PromptTrainer"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "COLUMNS": "200"}

    done = subprocess.run([*cli, *fake], capture_output=True, text=True, timeout=120, env=env, check=False)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "a running service holds the store: asked it to train 'support'" in done.stderr
    assert "succeeded" in done.stdout
    assert "candidate policy: v1" in done.stdout
    rows = list_runs(agentgym_runtime.store, "support")
    assert [(r["status"], r["episodes"], r["candidate_version"]) for r in rows] == [("succeeded", 4, 1)]
    assert list((agentgym_runtime.settings.home / "requests").glob("*.request.json")) == []

    rejected = subprocess.run(
        [*cli, "--now", "--trainer", "fake", "--option", "trainer_class=not-a-path"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert rejected.returncode == 2, rejected.stdout + rejected.stderr
    assert "trainer_class must be 'module:Class', got 'not-a-path'" in rejected.stderr
    # What only the service can judge (its own config merged with the request) is rejected there.
    request_id = submit_request(home, "support", overrides={"min_new_episodes": 0})
    scheduler.process_requests()  # or the background request job claims it first: either way it is judged once
    deadline = time.monotonic() + 10
    while (request_status(home, request_id) or {}).get("state") != "done" and time.monotonic() < deadline:
        time.sleep(0.05)
    report = request_status(home, request_id)
    assert report is not None
    assert report["status"] == "rejected"
    assert report["error"] == "min_new_episodes must be an integer >= 1, got 0"

    scheduler.shutdown()
    ignored = subprocess.run(
        [*cli, *fake, "--pickup-timeout", "1"], capture_output=True, text=True, timeout=120, env=env, check=False
    )
    assert ignored.returncode == 2
    assert "no service took the request within 1s" in ignored.stderr
    assert list((agentgym_runtime.settings.home / "requests").glob("*.request.json")) == []


@pytest.mark.slow
def test_end_to_end_with_the_demos_trainer(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    # Episodes without an importable entrypoint: demos scores its sets by its offline proxy (no replay).
    for i in range(8):
        with agentgym.episode(agent="shop", session_id=f"s{i % 4}"):
            get_order(order_id=i)
    run = agentgym_runtime.scheduler.run_now(
        "shop",
        config=TrainingConfig(
            agent="shop", trainer="demos", min_new_episodes=5, gpu="cpu", trainer_options={"embedder": "lexical"}
        ),
    )
    assert run.status == "succeeded", run.log_tail
    assert run.candidate_version == 1
    assert run.metrics["scored_by"] == "proxy"
    assert run.metrics["heldout_tasks"] == 2  # one of four sessions, two episodes each
    policy = agentgym_runtime.policies.load("shop", 1)
    assert policy.trainer == "demos"
    assert len(policy.demonstrations) == run.metrics["selected"] >= 1
    assert policy.demonstrations[0].tool_calls[0].name == "get_order"
    assert policy.metrics == run.metrics


def test_the_job_derives_from_the_served_policy_and_waits_while_a_canary_is_decided(
    agentgym_runtime: Runtime, recorded: Recorded, tmp_path: Path
) -> None:
    registry = agentgym_runtime.policies
    trained = tmp_path / "lora"
    trained.mkdir()
    (trained / "adapter_config.json").write_text("{}")
    (trained / "adapter_model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    # An artifact holds its adapter (issue 18): the served adapter is the artifact's copy.
    registry.register("support", adapter_dir=trained, trainer="manual")
    adapter = registry.artifact_path("support", 1) / "adapter"
    registry.promote("support", 1, actor="test")
    serve(4)
    first = agentgym_runtime.scheduler.run_now("support", config=config("SpecEchoTrainer"))
    assert first.status == "succeeded", first.error
    assert json.loads(run_row(agentgym_runtime, first.run_id)["metrics"]) == {
        "base_policy_version": 1,
        "base_adapter": str(adapter),
    }
    assert registry.load("support", 2).parent_version == 1

    registry.start_canary("support", 2, 0.5, actor="test")
    serve(4, start=4)
    waiting = agentgym_runtime.scheduler.run_now("support", config=config("SpecEchoTrainer"))
    assert waiting.status == "skipped"
    assert waiting.reason == "candidate v2 is still in canary; the next run waits for the gate's decision"
    assert run_row(agentgym_runtime, waiting.run_id)["snapshot_path"] is None
    forced = agentgym_runtime.scheduler.run_now("support", config=config("SpecEchoTrainer"), force=True)
    assert forced.status == "succeeded", forced.error
    # The canary does not serve the non-canary episodes: the job still derives from live v1.
    assert json.loads(run_row(agentgym_runtime, forced.run_id)["metrics"])["base_policy_version"] == 1


def test_a_candidate_its_trainer_measured_worse_is_registered_but_not_canaried(
    agentgym_runtime: Runtime, recorded: Recorded
) -> None:
    serve(6)  # every episode's reward is 1.0: the held-out reward before training is 1.0
    worse = config(
        "PromptTrainer",
        canary_share=0.5,
        trainer_options={"trainer_class": f"{FAKES}:PromptTrainer", "heldout_reward_after": 0.9},
    )
    run = agentgym_runtime.scheduler.run_now("support", config=worse)
    assert run.status == "succeeded", run.error
    assert run.candidate_version == 1
    assert run.reason == (
        "held-out reward fell from 1.000 to 0.900 on the snapshot: candidate registered, not canaried"
    )
    assert run_row(agentgym_runtime, run.run_id)["reason"] == run.reason
    state = agentgym_runtime.policies.read_state("support")
    assert state is not None and state.canary is None and state.live == 0
    assert [e.to_status for e in agentgym_runtime.policies.events("support")] == ["candidate"]

    # Within the tolerance (the evaluation's noise), or with the check off, the canary starts.
    serve(6, start=6)
    noisy = worse.model_copy(
        update={"trainer_options": {"trainer_class": f"{FAKES}:PromptTrainer", "heldout_reward_after": 0.99}}
    )
    kept = agentgym_runtime.scheduler.run_now("support", config=noisy)
    assert kept.reason is None and kept.candidate_version == 2
    assert agentgym_runtime.policies.read_state("support").canary == 2


def test_the_offline_gate_reasons() -> None:
    from agentgym_runtime.trainers.scheduler import _heldout_drop

    fell = {"heldout_reward_before": 0.70, "heldout_reward_after": 0.63}
    assert _heldout_drop(fell, 0.02) == (
        "held-out reward fell from 0.700 to 0.630 on the snapshot: candidate registered, not canaried"
    )
    assert _heldout_drop(fell, 0.10) is None
    assert _heldout_drop(fell, None) is None
    kept_start = {"heldout_reward_before": 0.7, "heldout_reward_after": 0.7, "best_step": 0}
    assert _heldout_drop(kept_start, 0.02) == (
        "no round beat the starting held-out reward (0.700): candidate registered, not canaried"
    )
    assert _heldout_drop({**kept_start, "best_step": 40}, 0.02) is None
    assert _heldout_drop({"heldout_reward_after": 0.5}, 0.02) is None  # a trainer without held-out numbers
