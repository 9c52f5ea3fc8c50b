"""A broken training environment must not crash-loop; a file in the home must not run programs.

Issue 18 (trainer side), 16 (cancelled runs) and 19 (runs that learned nothing, retraining on
chosen episodes, unknown agents). Real job subprocesses, a real DuckDB file, real request files.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agentgym_runtime.errors import ConfigurationError
from agentgym_runtime.recording.runtime import Runtime
from agentgym_runtime.trainers.scheduler import (
    RequestRejected,
    check_trusted,
    list_runs,
    request_status,
    submit_request,
    training_config,
)
from tests.trainers.test_scheduler import FAKES, config, serve


def _wait_done(home: str, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = request_status(home, request_id)
        if status is not None and status.get("state") == "done":
            return status
        time.sleep(0.05)
    raise AssertionError(f"request {request_id} never finished")


def _plant(home: Path, name: str, payload: dict[str, Any], mode: int = 0o600) -> Path:
    directory = home / "requests"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"{name}.request.json"
    path.write_text(json.dumps(payload))
    path.chmod(mode)
    return path


def test_planted_requests_never_run_programs_or_foreign_code(agentgym_runtime: Runtime, tmp_path: Path) -> None:
    serve(3)
    scheduler = agentgym_runtime.scheduler
    scheduler.add_agent(config("PromptTrainer"))
    home = agentgym_runtime.settings.home
    marker = tmp_path / "pwned"
    script = tmp_path / "evil.sh"
    script.write_text(f"#!/bin/sh\ntouch {marker}\n")
    script.chmod(0o755)
    evil_module = tmp_path / "evil_trainer.py"
    evil_module.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\nclass T: pass\n")
    sys.path.insert(0, str(tmp_path))
    try:
        attacks = {
            "python": {"agent": "support", "force": True, "overrides": {"python": str(script)}},
            "trainer_class": {
                "agent": "support",
                "force": True,
                "overrides": {"trainer_options": {"trainer_class": "evil_trainer:T"}},
            },
            "reward": {"agent": "support", "overrides": {"trainer_options": {"reward": "evil_trainer:T"}}},
            "replay": {"agent": "support", "overrides": {"trainer_options": {"replay": f"{evil_module}:T"}}},
        }
        for name, payload in attacks.items():
            _plant(home, name, payload)
        writable = _plant(home, "writable", {"agent": "support", "force": True}, mode=0o622)
        assert scheduler.process_requests() == 5
        statuses = {name: _wait_done(str(home), name) for name in [*attacks, "writable"]}
    finally:
        sys.path.remove(str(tmp_path))

    assert not marker.exists()  # nothing planted ran
    assert {s["status"] for s in statuses.values()} == {"rejected"}
    assert statuses["python"]["error"].startswith("a request may not set 'python'; it may set: gpu, min_new_episodes")
    assert "may not set trainer option 'trainer_class' (it names code to import)" in statuses["trainer_class"]["error"]
    assert "may not set trainer option 'reward'" in statuses["reward"]["error"]
    assert "may not set trainer option 'replay'" in statuses["replay"]["error"]
    assert (
        statuses["writable"]["error"]
        == f"refusing request file {writable.with_suffix('').with_suffix('.claimed.json')}: "
        "it is writable by group or others (mode 622)"
    )
    assert list_runs(agentgym_runtime.store, "support") == []  # no run was even started
    # What the service configured itself is accepted from a request, and runs.
    accepted = submit_request(
        str(home), "support", force=True, overrides={"trainer_options": {"trainer_class": f"{FAKES}:PromptTrainer"}}
    )
    assert scheduler.process_requests() == 1
    assert _wait_done(str(home), accepted)["status"] == "succeeded"


def test_untrusted_request_files_and_directories_are_refused(tmp_path: Path) -> None:
    target = tmp_path / "real.json"
    target.write_text("{}")
    target.chmod(0o600)
    link = tmp_path / "link.json"
    link.symlink_to(target)
    with pytest.raises(RequestRejected, match="is a symbolic link"):
        check_trusted(link)
    with pytest.raises(RequestRejected, match=r"owned by uid \d+, not the service's user"):
        check_trusted(target, uid=os.geteuid() + 1)
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    with pytest.raises(RequestRejected, match=r"writable by group or others \(mode 777\)"):
        check_trusted(open_dir)
    assert stat.S_IMODE(check_trusted(target).st_mode) == 0o600


def test_crashing_jobs_back_off_then_pause_with_the_cause(agentgym_runtime: Runtime) -> None:
    serve(3)
    scheduler = agentgym_runtime.scheduler
    crash = config("CrashingTrainer", failure_backoff_s=0.5, max_consecutive_failures=2)
    scheduler.add_agent(crash)
    store = agentgym_runtime.store

    scheduler._scheduled_run("support")  # the first failure
    assert [r["status"] for r in list_runs(store, "support")] == ["failed"]
    hold = scheduler.hold("support")
    assert hold is not None and hold.startswith(
        "backing off after 1 failed run(s) (last: job crashed; RuntimeError: boom"
    )
    for _ in range(5):  # the schedule ticks on: no job, no row, while backing off
        scheduler._scheduled_run("support")
    assert len(list_runs(store, "support")) == 1
    time.sleep(0.6)
    scheduler._scheduled_run("support")  # the backoff passed: the second failure
    assert [r["status"] for r in list_runs(store, "support")] == ["failed", "failed"]
    for _ in range(3):
        scheduler._scheduled_run("support")
    rows = list_runs(store, "support")
    assert [r["status"] for r in rows] == ["skipped", "failed", "failed"]  # the pause is recorded once
    assert rows[0]["reason"].startswith(
        "training paused after 2 consecutive failed runs (last: job crashed; RuntimeError: boom: the fake trainer "
        "crashed on purpose); fix the cause, then run `agentgym train --agent support --now`"
    )
    status = json.loads((agentgym_runtime.settings.home / "training" / "status.json").read_text())
    assert status["agents"]["support"]["consecutive_failures"] == 2
    assert status["agents"]["support"]["held"] == rows[0]["reason"]
    # `agentgym status` shows the pause and its cause, as an alarm.
    from agentgym_runtime.cli import status as status_command

    document = status_command.collect(str(agentgym_runtime.settings.home), agentgym_runtime.settings.store_path)
    assert ("training support", rows[0]["reason"], True) in status_command.rows(document, time.time())
    # A manual run still goes ahead; its success resumes the schedule.
    fixed = scheduler.run_now("support", config=config("PromptTrainer"), force=True)
    assert fixed.status == "succeeded"
    assert scheduler.hold("support") is None


def test_a_run_that_learned_nothing_fails_and_keeps_its_episodes(agentgym_runtime: Runtime) -> None:
    serve(4)
    scheduler = agentgym_runtime.scheduler
    zero = scheduler.run_now("support", config=config("ZeroScoreTrainer"))
    assert zero.status == "failed"
    assert zero.candidate_version is None
    assert zero.reason == "nothing learnt"
    assert zero.error == (
        "every replay of the held-out episodes scored 0 (before 0.000, after 0.000): 6 of 6 replays raised, the "
        "first: AttributeError: module '__main__' has no attribute 'support'"
    )
    assert agentgym_runtime.policies.agents() == []  # never a candidate
    again = scheduler.run_now("support", config=config("PromptTrainer"))
    assert again.status == "succeeded"
    assert again.episodes == 4  # the failed run did not use them up
    # Retrain on chosen episodes: all of them again, although the last run consumed them.
    skipped = scheduler.run_now("support", config=config("PromptTrainer"), force=True)
    assert skipped.status == "skipped"
    retrained = scheduler.run_now(
        "support", config=config("PromptTrainer"), force=True, since=datetime(2000, 1, 1, tzinfo=UTC)
    )
    assert retrained.status == "succeeded"
    assert retrained.episodes == 4


def test_cli_refuses_unknown_agents_without_a_run_row_and_explains_verl(agentgym_runtime: Runtime) -> None:
    from typer.testing import CliRunner

    from agentgym_runtime.api import shutdown
    from agentgym_runtime.cli.app import build_app

    serve(3)
    home = str(agentgym_runtime.settings.home)
    shutdown()
    runner = CliRunner()
    app = build_app()
    nosuch = runner.invoke(app, ["train", "--agent", "nosuch", "--now", "--home", home])
    assert nosuch.exit_code == 2, nosuch.output
    assert "unknown agent 'nosuch'; known agents: support" in nosuch.output
    verl = runner.invoke(app, ["train", "--agent", "support", "--trainer", "verl", "--now", "--home", home])
    assert verl.exit_code == 2, verl.output
    assert "trainer 'verl' needs its options (model_path: field required)" in " ".join(verl.output.split())
    assert "validation error" not in verl.output
    listed = runner.invoke(app, ["runs", "--json", "--home", home])
    assert listed.output.strip() == ""  # neither left a run row


def test_entrypoints_a_job_cannot_import_again_are_refused_with_the_fix() -> None:
    with pytest.raises(ConfigurationError) as lambda_error:
        training_config("bot", trainer="demos", entrypoint="app:<lambda>")
    assert str(lambda_error.value) == (
        "agent 'bot' cannot be replayed by a training job: it is a lambda (app:<lambda>), so the job cannot import "
        "it again. Define it at module level in a file, or name a function that runs it: "
        "train_online(..., trainer_options={'replay': 'module:function'})"
    )
    with pytest.raises(ConfigurationError, match="it is defined inside another function"):
        training_config("bot", trainer="apo", entrypoint="app:make.<locals>.agent")
    with pytest.raises(ConfigurationError, match=r"it was defined in code with no file \(stdin"):
        training_config("bot", entrypoint="__main__:agent")
    named = training_config("bot", entrypoint="app:<lambda>", trainer_options={"replay": "app:run"})
    assert named.trainer_options == {"replay": "app:run"}


def test_train_online_refuses_a_lambda_naming_the_option() -> None:
    import agentgym_runtime as agentgym

    with pytest.raises(ConfigurationError, match=r"it is a lambda .*trainer_options=\{'replay': 'module:function'\}"):
        agentgym.train_online(name="lambda-bot", trainer="demos")(lambda question: question)


def test_an_import_error_inside_agent_lightning_is_reported_as_itself(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import importlib

    from agentgym_runtime.errors import MissingExtraError
    from agentgym_runtime.trainers import lightning
    from agentgym_runtime.trainers.base import TrainerUnavailable, TrainingJobSpec
    from agentgym_runtime.trainers.job import load_trainer

    real = importlib.import_module

    def broken(name: str, *args: Any) -> Any:
        if name == "agentlightning":
            raise ImportError("cannot import name 'Thing' from 'litellm'", name="litellm")
        return real(name, *args)

    monkeypatch.setattr(lightning.importlib, "import_module", broken)
    with pytest.raises(ImportError, match="cannot import name 'Thing' from 'litellm'") as raised:
        lightning.import_agentlightning()
    assert not isinstance(raised.value, MissingExtraError)
    monkeypatch.undo()

    package = tmp_path / "brokentrainer"
    package.mkdir()
    (package / "__init__.py").write_text("from json import no_such_name\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = TrainingJobSpec(
        run_id="r",
        agent="a",
        trainer="mine",
        snapshot_dir=str(tmp_path),
        output_dir=str(tmp_path),
        options={"trainer_class": "brokentrainer:Trainer"},
    )
    with pytest.raises(TrainerUnavailable) as unavailable:
        load_trainer(spec)
    message = str(unavailable.value)
    assert "ImportError: cannot import name 'no_such_name' from 'json'" in message
    assert "the package 'json' is installed; an import inside it is broken" in message
    assert "pip install" not in message
