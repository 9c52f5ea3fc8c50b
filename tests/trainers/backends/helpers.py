"""Shared pieces of the backend tests: process checks, specs, configs, recorded episodes."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentgym_runtime.services import Services as Runtime
from agentgym_runtime.trainers.base import TrainingJobSpec
from agentgym_runtime.trainers.scheduler import TrainingConfig

REPO = Path(__file__).resolve().parents[3]
FAKES = "tests.trainers.fake_trainers"
#: The "remote" job imports the test trainers like a user's own package on the host.
REMOTE_ENV = {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_for(condition: Callable[[], Any], timeout_s: float = 30.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it is truthy; its value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def runner_file(remote_root: Path) -> Path | None:
    """The ``runner.json`` of the (single) job running under a remote workdir."""
    found = sorted(remote_root.glob("*/out/runner.json"))
    return found[0] if found else None


def kill_groups(*pgids: int) -> None:
    """Best-effort SIGKILL (test cleanup of a job the test left running on purpose)."""
    for pgid in pgids:
        try:
            os.killpg(pgid, 9)
        except (ProcessLookupError, PermissionError):
            pass


def hang_spec(tmp_path: Path, trainer_class: str = "HangingTrainer", **options: Any) -> TrainingJobSpec:
    """A job spec with a tiny snapshot, running one of the fake trainers."""
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir(parents=True, exist_ok=True)
    (snapshot / "manifest.json").write_text("{}")
    return TrainingJobSpec(
        run_id=f"run-{trainer_class.lower()}",
        agent="support",
        trainer="fake",
        snapshot_dir=str(snapshot),
        output_dir=str(tmp_path / "out"),
        device="cpu",
        options={"trainer_class": f"{FAKES}:{trainer_class}", "heldout_fraction": 0.2, **options},
    )


def training(
    backend: str | None, trainer: str = "demos", trainer_class: str | None = None, **overrides: Any
) -> TrainingConfig:
    """A config for agent ``support`` on ``backend``."""
    options: dict[str, Any] = {}
    if trainer_class is not None:
        trainer, options = "fake", {"trainer_class": f"{FAKES}:{trainer_class}"}
    values: dict[str, Any] = {
        "agent": "support",
        "trainer": trainer,
        "min_new_episodes": 3,
        "gpu": "cpu",
        "timeout_s": 60.0,
        "trainer_options": options,
        "backend": backend,
    }
    values.update(overrides)
    return TrainingConfig(**values)


def run_row(runtime: Runtime, run_id: str) -> dict[str, Any]:
    rows = runtime.store.query_dicts("SELECT * FROM training_runs WHERE run_id = ?", [run_id])
    assert len(rows) == 1
    return rows[0]


import agentgym_runtime as agentgym  # noqa: E402


@agentgym.tool
def get_order(order_id: int) -> dict[str, Any]:
    """Look up an order."""
    return {"id": order_id, "status": "shipped"}


@agentgym.train_online(name="support")
def support(question: str, order_id: int) -> str:
    """A module-level agent, so a job on another host can import it for replay."""
    return f"order {order_id} is {get_order(order_id=order_id)['status']}"


def serve(count: int) -> None:
    """Record ``count`` episodes of ``support``."""
    for i in range(count):
        support(f"where is order {i}?", i)
