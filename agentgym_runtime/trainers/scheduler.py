"""Background retraining inside the serving process: schedule, snapshot, run a job, register.

``@agentgym.train_online(schedule="6h", min_new_episodes=50, trainer="demos", gpu="auto")``
registers a :class:`TrainingConfig`; the runtime's :class:`TrainingScheduler` (created
lazily as ``runtime.scheduler``) runs it on an APScheduler ``BackgroundScheduler``
thread, so the agent's own threads never wait on training. Each run:

1. inserts a ``training_runs`` row (``queued``) and takes the agent's lock
   ``<home>/locks/train-<agent>.lock`` (``fcntl.flock``: one run per agent at a time,
   across threads, processes and restarts; a crashed holder's lock is released by the
   OS and its stale file is taken over);
2. counts the agent's episodes ended since the last *successful* run's snapshot
   (``training_runs.started_at`` of that run is its snapshot's ``until``) and skips
   the run, with the reason recorded, when there are fewer than ``min_new_episodes``;
3. writes the snapshot (:func:`~agentgym_runtime.trainers.dataset.write_snapshot`) to
   ``<home>/snapshots/<agent>/<run_id>/`` and submits the job to a
   :class:`~agentgym_runtime.trainers.backends.Backend` (``LocalBackend`` by default)
   with a timeout, recording its progress in the row;
4. on success registers the candidate policy with the policy registry and records its
   version and metrics; on a crash, a hang (killed at the timeout) or an unavailable
   trainer, marks the run ``failed`` with the error and the job's log tail. The lock is
   released in every case, so the next scheduled run goes ahead.

Example:
    >>> config = TrainingConfig(agent="support", schedule="6h", min_new_episodes=50)
    >>> parse_schedule(config.schedule), parse_schedule("0 3 * * *")
    (('interval', 21600.0), ('cron', '0 3 * * *'))
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentgym_runtime.errors import ConfigurationError
from agentgym_runtime.policy.model import Policy, resolve_adapter_path
from agentgym_runtime.trainers.base import TRAINERS, TrainingJobSpec, TrainingResult

if TYPE_CHECKING:
    from agentgym_runtime.collectors.store import TraceStore
    from agentgym_runtime.recording.runtime import Runtime
    from agentgym_runtime.trainers.backends import Backend, JobHandle

logger = logging.getLogger("agentgym_runtime.trainers")

GpuMode = Literal["auto", "cpu", "local"]
GPU_MODES: tuple[str, ...] = ("auto", "cpu", "local")
#: How ``gpu=`` maps onto the job's device: ``local`` insists on this machine's CUDA.
_DEVICE: dict[str, Literal["cpu", "cuda", "auto"]] = {"auto": "auto", "cpu": "cpu", "local": "cuda"}
_GPU_ONLY_TRAINERS = frozenset({"verl"})
_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}

ProgressCallback = Callable[[float, str], None]


class RunStatus:
    """Values of ``training_runs.status``."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


def parse_schedule(schedule: str) -> tuple[Literal["interval", "cron"], float | str]:
    """Read ``"30m"``/``"6h"``/``"1d"`` as an interval in seconds, or a 5-field cron string.

    Raises:
        ConfigurationError: Neither form (the message shows both).

    Example:
        >>> parse_schedule("90s")
        ('interval', 90.0)
    """
    if not isinstance(schedule, str) or not schedule.strip():
        raise ConfigurationError(f"schedule must be a duration like '6h' or a cron string, got {schedule!r}")
    match = _INTERVAL.match(schedule)
    if match:
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
        if seconds <= 0:
            raise ConfigurationError(f"schedule {schedule!r} must be a positive duration")
        return "interval", seconds
    fields = schedule.split()
    if len(fields) != 5:
        raise ConfigurationError(
            f"schedule {schedule!r} is neither a duration ('30m', '6h', '1d') nor a 5-field cron string "
            "('minute hour day month weekday', e.g. '0 3 * * *')"
        )
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(schedule, timezone=UTC)
    except ValueError as exc:
        raise ConfigurationError(f"schedule {schedule!r} is not a valid cron string: {exc}") from None
    return "cron", schedule.strip()


def _trigger(schedule: str) -> Any:
    kind, value = parse_schedule(schedule)
    if kind == "interval":
        from apscheduler.triggers.interval import IntervalTrigger

        return IntervalTrigger(seconds=float(value), timezone=UTC)
    from apscheduler.triggers.cron import CronTrigger

    return CronTrigger.from_crontab(str(value), timezone=UTC)


class TrainingConfig(BaseModel):
    """How (and whether on a schedule) one agent is retrained.

    Attributes:
        agent: The agent's name.
        schedule: ``"6h"``-style interval or cron string; ``None``: only on request (``run_now``, CLI).
        min_new_episodes: Episodes needed since the last successful run; fewer skips the run.
        trainer: ``"demos"``, ``"apo"``, ``"grpo"``, ``"verl"`` or a registered extra trainer.
        gpu: ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` (hide GPUs), ``"local"`` (this
            machine's GPU, required).
        trainer_options: Passed to the trainer as ``TrainingJobSpec.options``.
        timeout_s: The job is killed and the run failed after this long.
        heldout_fraction: Share of sessions the trainer should hold out (``options["heldout_fraction"]``).
        python: Interpreter for the job (default: the serving process's).
        canary_share: Serve each new candidate to this share of episodes right away (sticky per
            session); the router's gate then promotes or rolls it back. ``None``: stays a candidate.
        max_heldout_drop: The offline gate before the canary: a candidate whose reward on the
            snapshot's held-out split (``heldout_reward_before``/``_after`` in the trainer's metrics)
            fell by more than this is registered but not canaried, with the reason recorded, so
            live traffic never sees a version its own trainer measured worse (nor one that kept its
            starting point: ``best_step`` 0). ``None``: no check.
            The default tolerates the seeded evaluation's noise (about 0.02 on the demo).
        entrypoint: ``module:qualname`` of the agent (filled from the decorator).
        scenario: Scenario name (filled from the decorator).
        backend: Where the job runs: ``local``, ``ssh``, ``ray``, ``runpod``, ``lambda`` or a registered
            name (:mod:`agentgym_runtime.trainers.backends.select`); ``None``: ``gpu`` decides.

    Example:
        >>> TrainingConfig(agent="support", gpu="cpu").trainer
        'demos'
    """

    model_config = ConfigDict(extra="forbid")

    agent: str = Field(min_length=1)
    schedule: str | None = None
    min_new_episodes: int = Field(default=20, ge=1)
    trainer: str = "demos"
    gpu: GpuMode = "auto"
    trainer_options: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float = Field(default=3600.0, gt=0)
    heldout_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)
    python: str | None = None
    canary_share: float | None = Field(default=None, gt=0.0, le=1.0)
    max_heldout_drop: float | None = Field(default=0.02, ge=0.0)
    entrypoint: str | None = None
    scenario: str | None = None
    backend: str | None = None


def training_config(agent: str, **options: Any) -> TrainingConfig:
    """Build and validate a :class:`TrainingConfig`; every problem is a clear ``ConfigurationError``.

    Raises:
        ConfigurationError: A bad schedule, trainer, gpu mode, threshold or option (names it).

    Example:
        >>> training_config("support", schedule="6h", trainer="apo").schedule
        '6h'
        >>> training_config("support", gpu="tpu")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ConfigurationError: gpu must be one of 'auto', 'cpu', 'local', got 'tpu'
    """
    from agentgym_runtime.trainers.job import extra_trainers

    gpu = options.get("gpu", "auto")
    if gpu not in GPU_MODES:
        raise ConfigurationError(f"gpu must be one of {', '.join(map(repr, GPU_MODES))}, got {gpu!r}")
    minimum = options.get("min_new_episodes", 20)
    if isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 1:
        raise ConfigurationError(f"min_new_episodes must be an integer >= 1, got {minimum!r}")
    trainer_options = options.get("trainer_options") or {}
    if not isinstance(trainer_options, Mapping):
        raise ConfigurationError(f"trainer_options must be a mapping, got {type(trainer_options).__name__}")
    try:
        json.dumps(dict(trainer_options))
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"trainer_options must be JSON-serialisable (they go to the job): {exc}") from None
    trainer_class = trainer_options.get("trainer_class")
    if trainer_class is not None and (not isinstance(trainer_class, str) or ":" not in trainer_class):
        raise ConfigurationError(f"trainer_class must be 'module:Class', got {trainer_class!r}")
    trainer = options.get("trainer", "demos")
    known = set(TRAINERS) | set(extra_trainers())
    if not isinstance(trainer, str) or (trainer not in known and "trainer_class" not in trainer_options):
        raise ConfigurationError(
            f"unknown trainer {trainer!r}; choose one of: {', '.join(sorted(known))} "
            "(or pass trainer_options={'trainer_class': 'module:Class'} for your own)"
        )
    if trainer in _GPU_ONLY_TRAINERS and gpu == "cpu":
        raise ConfigurationError(f"trainer {trainer!r} needs a CUDA GPU; gpu='cpu' cannot work (use 'auto' or 'local')")
    schedule = options.get("schedule")
    if schedule is not None:
        parse_schedule(schedule)
    try:
        return TrainingConfig(agent=agent, **{**options, "trainer_options": dict(trainer_options)})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'training'}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise ConfigurationError(f"invalid training options for agent {agent!r}: {problems}") from None


# --- process-wide registration (survives runtime reconfiguration) -------------------------

_registered: dict[str, TrainingConfig] = {}
_registered_lock = threading.Lock()


class _SkipOverlapFilter(logging.Filter):
    """Drop APScheduler's warning for a tick that finds the previous run still going.

    One run per agent at a time is the design (the lock), so that skip is expected, not news.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


_OVERLAP_FILTER = _SkipOverlapFilter()


def _quiet_overlap_warnings() -> None:
    logger = logging.getLogger("apscheduler.scheduler")
    if _OVERLAP_FILTER not in logger.filters:
        logger.addFilter(_OVERLAP_FILTER)


def register_training(config: TrainingConfig) -> None:
    """Remember ``config`` for this process and hand it to the running runtime's scheduler.

    A runtime configured later picks registered configs up when it starts.

    Example:
        >>> register_training(TrainingConfig(agent="doc-agent"))
        >>> "doc-agent" in registered_training()
        True
        >>> unregister_training("doc-agent")
    """
    with _registered_lock:
        _registered[config.agent] = config
    from agentgym_runtime.recording.runtime import peek_runtime

    runtime = peek_runtime()
    if runtime is not None and runtime.started:
        runtime.scheduler.add_agent(config)


def unregister_training(agent: str) -> None:
    """Forget ``agent``'s training config (and remove its scheduled job from the running runtime)."""
    with _registered_lock:
        _registered.pop(agent, None)
    from agentgym_runtime.recording.runtime import peek_runtime

    runtime = peek_runtime()
    if runtime is not None and runtime.has_scheduler:
        runtime.scheduler.remove_agent(agent)


def registered_training() -> dict[str, TrainingConfig]:
    """The training configs registered in this process, by agent."""
    with _registered_lock:
        return dict(_registered)


# --- the per-agent lock ---------------------------------------------------------------------


class TrainLock:
    """``<home>/locks/train-<agent>.lock``: held (``fcntl.flock``) while a run of the agent is active.

    The file holds the holder's pid, run id and start time. The OS drops a dead process's
    lock, so a file with content whose lock is free is stale: it is taken over (and
    :attr:`stale_holder` says whose it was). The file is truncated, never deleted, on release
    (deleting a lock file races with a concurrent opener).

    Example:
        >>> import tempfile
        >>> lock = TrainLock(Path(tempfile.mkdtemp()) / "train-a.lock")
        >>> lock.acquire("r1"), TrainLock(lock.path).acquire("r2")
        (True, False)
        >>> lock.release()
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.stale_holder: dict[str, Any] | None = None
        self._fd: int | None = None

    def acquire(self, run_id: str) -> bool:
        """Take the lock without waiting; ``False`` if another run holds it."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        previous = _parse_holder(os.pread(fd, 4096, 0))
        if previous is not None:
            self.stale_holder = previous
            logger.warning(
                "agentgym: taking over the stale training lock %s of %s (no longer running)", self.path, previous
            )
        payload = json.dumps({"pid": os.getpid(), "run_id": run_id, "started_at": datetime.now(UTC).isoformat()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, payload.encode(), 0)
        self._fd = fd
        return True

    def holder(self) -> dict[str, Any] | None:
        """Who holds (or last held, if stale) the lock, from the file."""
        try:
            return _parse_holder(self.path.read_bytes())
        except OSError:
            return None

    def release(self) -> None:
        """Clear the file and drop the lock (no-op if not held)."""
        import fcntl

        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _parse_holder(data: bytes) -> dict[str, Any] | None:
    if not data.strip():
        return None
    try:
        holder = json.loads(data.decode("utf-8", "replace"))
    except ValueError:
        return {"raw": data.decode("utf-8", "replace")[:200]}
    return holder if isinstance(holder, dict) else {"raw": str(holder)[:200]}


# --- requests from other processes (agentgym train while a service holds the store) ----------

REQUESTS_DIR = "requests"
_REQUESTS_JOB = "train-requests"


def _write_json_file(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, default=str))
    os.replace(tmp, path)


def submit_request(
    home: str | Path, agent: str, *, force: bool = False, overrides: Mapping[str, Any] | None = None
) -> str:
    """Ask the service that holds ``home``'s store to run one training of ``agent``; returns the request id.

    The service's scheduler claims ``<home>/requests/<id>.request.json`` and reports in
    ``<id>.status.json`` (see :func:`request_status`).

    Example:
        >>> import tempfile
        >>> home = tempfile.mkdtemp()
        >>> request_id = submit_request(home, "support", force=True, overrides={"trainer": "apo"})
        >>> request_status(home, request_id) is None, withdraw_request(home, request_id)
        (True, True)
    """
    directory = Path(home) / REQUESTS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    request_id = f"{new_run_id()}-{_safe(agent)}"
    payload = {"agent": agent, "force": force, "overrides": dict(overrides or {}), "pid": os.getpid()}
    _write_json_file(directory / f"{request_id}.request.json", payload)
    return request_id


def request_status(home: str | Path, request_id: str) -> dict[str, Any] | None:
    """The service's report on a request: ``None`` until claimed, then ``{"state": "running"|"done", ...}``."""
    try:
        payload = json.loads((Path(home) / REQUESTS_DIR / f"{request_id}.status.json").read_text())
    except (OSError, ValueError):
        return None
    return payload if isinstance(payload, dict) else None


def withdraw_request(home: str | Path, request_id: str) -> bool:
    """Remove a request nobody claimed yet; ``False`` if a service already took it."""
    try:
        (Path(home) / REQUESTS_DIR / f"{request_id}.request.json").unlink()
    except FileNotFoundError:
        return False
    return True


# --- runs -----------------------------------------------------------------------------------


@dataclass(slots=True)
class TrainingRun:
    """The outcome of one training run (also written to ``training_runs``).

    Example:
        >>> TrainingRun(run_id="r1", agent="a", trainer="demos").status
        'queued'
    """

    run_id: str
    agent: str
    trainer: str
    status: str = RunStatus.QUEUED
    reason: str | None = None
    episodes: int | None = None
    snapshot_path: str | None = None
    output_dir: str | None = None
    candidate_version: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    log_tail: str | None = None
    exit_code: int | None = None


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "_"


def new_run_id() -> str:
    """A sortable unique run id: ``<UTC time>-<random>``."""
    return f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"


def last_success_until(store: TraceStore, agent: str) -> datetime | None:
    """The snapshot ``until`` of ``agent``'s last successful run (its ``started_at``), if any."""
    rows = store.query(
        "SELECT max(started_at) FROM training_runs WHERE agent = ? AND status = ?", [agent, RunStatus.SUCCEEDED]
    )
    return rows[0][0] if rows and rows[0][0] is not None else None


def list_runs(store: TraceStore, agent: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Rows of ``training_runs``, newest first.

    Example:
        >>> from agentgym_runtime.collectors.store import TraceStore
        >>> list_runs(TraceStore(":memory:"))
        []
    """
    where = " WHERE agent = ?" if agent is not None else ""
    params: list[Any] = [agent] if agent is not None else []
    return store.query_dicts(
        f"SELECT * FROM training_runs{where} ORDER BY scheduled_at DESC, run_id DESC LIMIT {int(limit)}", params
    )


class TrainingScheduler:
    """Runs training for the agents of one runtime, on schedule or on request.

    Args:
        runtime: The serving runtime (its store holds ``training_runs``; its home the snapshots).
        backend_factory: ``config -> Backend``; default: a :class:`LocalBackend` with the
            config's ``python``.
        poll_interval_s: How often a running job's progress and deadline are checked.

    Example:
        >>> import agentgym_runtime as agentgym
        >>> rt = agentgym.configure(store=":memory:")
        >>> rt.scheduler.add_agent(TrainingConfig(agent="support", schedule="6h"))
        >>> rt.scheduler.jobs()
        ['train:support']
        >>> agentgym.shutdown()
    """

    def __init__(
        self,
        runtime: Runtime,
        backend_factory: Callable[[TrainingConfig], Backend] | None = None,
        poll_interval_s: float = 0.1,
    ) -> None:
        self.runtime = runtime
        self.backend_factory = backend_factory or (lambda config: _configured_backend(config, runtime))
        self.poll_interval_s = poll_interval_s
        self.configs: dict[str, TrainingConfig] = {}
        self._aps: Any = None
        self._lock = threading.RLock()
        self._active: dict[str, JobHandle] = {}
        self._closing = False

    # --- configuration ----------------------------------------------------------------------
    @property
    def home(self) -> Path:
        """The runtime's home directory (snapshots, job outputs, locks)."""
        return Path(self.runtime.settings.home)

    def add_agent(self, config: TrainingConfig) -> None:
        """Use ``config`` for its agent; with a ``schedule``, start the background job for it."""
        with self._lock:
            self.configs[config.agent] = config
            if config.schedule is None:
                self._remove_job(config.agent)
                return
            aps = self._scheduler()
            aps.add_job(
                self._scheduled_run,
                _trigger(config.schedule),
                args=[config.agent],
                id=f"train:{config.agent}",
                name=f"retrain {config.agent}",
                replace_existing=True,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
            )
            self.serve_requests()

    def remove_agent(self, agent: str) -> None:
        """Stop training ``agent`` on a schedule."""
        with self._lock:
            self.configs.pop(agent, None)
            self._remove_job(agent)

    def _remove_job(self, agent: str) -> None:
        if self._aps is not None and self._aps.get_job(f"train:{agent}") is not None:
            self._aps.remove_job(f"train:{agent}")

    def jobs(self) -> list[str]:
        """Ids of the scheduled training jobs (``train:<agent>``)."""
        if self._aps is None:
            return []
        return sorted(job.id for job in self._aps.get_jobs() if job.id.startswith("train:"))

    def serves_requests(self) -> bool:
        """Whether this scheduler picks up ``agentgym train`` requests from ``<home>/requests``."""
        return self._aps is not None and self._aps.get_job(_REQUESTS_JOB) is not None

    def next_run_time(self, agent: str) -> datetime | None:
        """When ``agent``'s next scheduled run fires, if it has a schedule."""
        job = None if self._aps is None else self._aps.get_job(f"train:{agent}")
        return None if job is None else job.next_run_time

    def start(self) -> TrainingScheduler:
        """Pick up the configs registered in this process (``@train_online(schedule=...)``)."""
        for config in registered_training().values():
            if config.agent not in self.configs:
                self.add_agent(config)
        self.serve_requests()
        return self

    def serve_requests(self, interval_s: float = 1.0) -> None:
        """Run the ``agentgym train`` requests other processes leave in ``<home>/requests``.

        ``agentgym train`` cannot open a store this process holds; it leaves a request instead,
        and follows the run through the request's status file. Started with the schedules.
        """
        with self._lock:
            if self._closing:
                return
            from apscheduler.triggers.interval import IntervalTrigger

            self._scheduler().add_job(
                self.process_requests,
                IntervalTrigger(seconds=interval_s, timezone=UTC),
                id=_REQUESTS_JOB,
                name="agentgym train requests",
                replace_existing=True,
                max_instances=1,
                coalesce=True,
            )

    def process_requests(self) -> int:
        """Claim and run every pending request (oldest first); returns how many were run."""
        directory = self.home / REQUESTS_DIR
        if not directory.is_dir():
            return 0
        done = 0
        for path in sorted(directory.glob("*.request.json")):
            claimed = path.with_name(path.name.replace(".request.json", ".claimed.json"))
            try:
                os.replace(path, claimed)  # atomic: one replica claims it
            except FileNotFoundError:
                continue
            # Its own thread: a run takes long, and the poller must stay free for other agents.
            threading.Thread(
                target=self._run_request_guarded, args=(claimed,), name=f"agentgym-train-{path.name}", daemon=True
            ).start()
            done += 1
        return done

    def _run_request_guarded(self, claimed: Path) -> None:
        try:
            self._run_request(claimed)
        except Exception as exc:
            try:
                self.runtime.internal_error("training request", exc)
            except Exception:
                logger.exception("agentgym: training request %s failed", claimed)

    def _run_request(self, claimed: Path) -> None:
        request_id = claimed.name.replace(".claimed.json", "")
        status_path = claimed.with_name(f"{request_id}.status.json")
        try:
            request = json.loads(claimed.read_text())
            agent = str(request["agent"])
            overrides = dict(request.get("overrides") or {})
            base = self.config_for(agent).model_dump(exclude={"agent"})
            options = {**base.get("trainer_options", {}), **dict(overrides.pop("trainer_options", None) or {})}
            config = training_config(agent, **{**base, **overrides, "trainer_options": options})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            _write_json_file(status_path, {"state": "done", "status": "rejected", "error": str(exc)})
            return
        finally:
            claimed.unlink(missing_ok=True)
        last_write = 0.0
        state: dict[str, Any] = {"state": "running", "pid": os.getpid(), "fraction": 0.0, "message": "queued"}
        _write_json_file(status_path, state)

        def progress(fraction: float, message: str) -> None:
            nonlocal last_write
            state.update(fraction=fraction, message=message, run_id=self.active_runs().get(agent))
            if time.monotonic() - last_write >= 0.2:
                last_write = time.monotonic()
                _write_json_file(status_path, state)

        run = self.run_now(agent, config=config, force=bool(request.get("force")), progress=progress)
        _write_json_file(
            status_path,
            {
                "state": "done",
                "run_id": run.run_id,
                "status": run.status,
                "reason": run.reason,
                "error": run.error,
                "candidate_version": run.candidate_version,
                "metrics": run.metrics,
                "log_tail": run.log_tail,
            },
        )

    def _scheduler(self) -> Any:
        if self._aps is None:
            from apscheduler.schedulers.background import BackgroundScheduler

            _quiet_overlap_warnings()
            self._aps = BackgroundScheduler(daemon=True, timezone=UTC)
            self._aps.start()
        return self._aps

    def shutdown(self, wait: bool = True) -> None:
        """Stop scheduling, kill running jobs (their runs are marked failed) and stop the thread."""
        with self._lock:
            self._closing = True
            handles = list(self._active.values())
        for handle in handles:
            handle.cancel(grace_s=2.0)
        # Let the runs record their outcome (runs started by run_now on other threads too).
        deadline = time.monotonic() + 10.0
        while self._active and time.monotonic() < deadline:
            time.sleep(0.02)
        if self._aps is not None:
            try:
                self._aps.shutdown(wait=wait)
            except Exception:  # already stopped
                logger.debug("agentgym: scheduler shutdown", exc_info=True)
            self._aps = None

    def active_runs(self) -> dict[str, str]:
        """Agents with a job running now, mapped to the run id."""
        with self._lock:
            return {agent: handle.run_id for agent, handle in self._active.items()}

    def _scheduled_run(self, agent: str) -> None:
        try:
            self.run_now(agent)
        except Exception as exc:  # a failing run must never stop the scheduler thread
            try:
                self.runtime.internal_error("scheduled training run", exc)
            except Exception:
                logger.exception("agentgym: scheduled training of %s failed", agent)

    # --- one run ----------------------------------------------------------------------------
    def config_for(self, agent: str) -> TrainingConfig:
        """The config for ``agent``: added here, else registered in the process, else the defaults."""
        return self.configs.get(agent) or registered_training().get(agent) or TrainingConfig(agent=agent)

    def run_now(
        self,
        agent: str,
        *,
        trainer: str | None = None,
        force: bool = False,
        progress: ProgressCallback | None = None,
        config: TrainingConfig | None = None,
    ) -> TrainingRun:
        """Run one training of ``agent`` now, in the calling thread, and return its outcome.

        Args:
            agent: The agent's name.
            trainer: Override the config's trainer.
            force: Run with any number (>= 1) of new episodes, ignoring ``min_new_episodes``.
            progress: Called with ``(fraction, message)`` as the job reports progress.
            config: Use this config instead of the agent's.

        Returns:
            The run (also recorded in ``training_runs``).
        """
        config = config or self.config_for(agent)
        if trainer is not None and trainer != config.trainer:
            config = training_config(agent, **{**config.model_dump(exclude={"agent"}), "trainer": trainer})
        run = TrainingRun(run_id=new_run_id(), agent=agent, trainer=config.trainer)
        store = self.runtime.store
        self._insert(store, run)
        lock = TrainLock(self.home / "locks" / f"train-{_safe(agent)}.lock")
        if not lock.acquire(run.run_id):
            holder = lock.holder() or {}
            run.status = RunStatus.SKIPPED
            run.reason = (
                f"another training run of {agent!r} is in progress (run {holder.get('run_id', '?')}, "
                f"pid {holder.get('pid', '?')}, since {holder.get('started_at', '?')})"
            )
            self._update(store, run, ended=True)
            return run
        try:
            self._execute(store, run, config, force, progress)
        except Exception as exc:
            run.status = RunStatus.FAILED
            run.reason = run.reason or "internal error in the training scheduler"
            run.error = f"{type(exc).__name__}: {exc}"
            try:
                self._update(store, run, ended=True)
            finally:
                self.runtime.internal_error("training run", exc)
        finally:
            with self._lock:
                self._active.pop(agent, None)
            lock.release()
        return run

    def _execute(
        self,
        store: TraceStore,
        run: TrainingRun,
        config: TrainingConfig,
        force: bool,
        progress: ProgressCallback | None,
    ) -> None:
        from agentgym_runtime.trainers.dataset import count_new_episodes, write_snapshot

        agent = run.agent
        canary = self._canary_version(agent)
        if canary is not None and not force:
            # A candidate trained now would derive from the live policy while the gate is still
            # deciding on the last one; wait for its decision (promotion makes it the new base).
            run.status = RunStatus.SKIPPED
            run.reason = f"candidate v{canary} is still in canary; the next run waits for the gate's decision"
            self._update(store, run, ended=True)
            return
        since = last_success_until(store, agent)
        until = datetime.now(UTC)
        self.runtime.flush()  # episodes that ended before `until` reach the store first
        new = count_new_episodes(store, agent, since, until)
        needed = 1 if force else config.min_new_episodes
        window = f"since the last successful run ({since.isoformat()})" if since else "recorded so far"
        if new < needed:
            run.status = RunStatus.SKIPPED
            run.episodes = new
            run.reason = f"too few new episodes: {new} {window}, at least {needed} needed"
            self._update(store, run, ended=True)
            return
        run.status = RunStatus.RUNNING
        run.episodes = new
        self._update(store, run, started_at=until)
        if progress is not None:
            progress(0.0, f"snapshot of {new} episodes")
        snapshot_dir = self.home / "snapshots" / _safe(agent) / run.run_id
        manifest = write_snapshot(store, agent, snapshot_dir, run_id=run.run_id, since=since, until=until)
        run.episodes = manifest.counts["episodes"]
        run.snapshot_path = str(snapshot_dir)
        output_dir = self.home / "training" / _safe(agent) / run.run_id
        run.output_dir = str(output_dir)
        self._update(store, run)
        latest = store.query(
            "SELECT entrypoint, scenario FROM episodes WHERE agent = ? ORDER BY ended_at DESC LIMIT 1", [agent]
        )
        entrypoint, scenario = latest[0] if latest else (None, None)
        base = self._served_policy(agent)
        base_adapter = resolve_adapter_path(base, self.runtime.settings.home) if base.version else None
        spec = TrainingJobSpec(
            run_id=run.run_id,
            agent=agent,
            trainer=config.trainer,
            snapshot_dir=str(snapshot_dir),
            output_dir=str(output_dir),
            base_policy_version=base.version,
            base_adapter=str(base_adapter) if base_adapter is not None and base_adapter.is_dir() else None,
            entrypoint=config.entrypoint or entrypoint,
            scenario=config.scenario or scenario,
            device=_DEVICE[config.gpu],
            options={"heldout_fraction": config.heldout_fraction, **config.trainer_options},
        )
        try:
            backend = self.backend_factory(config)
        except ConfigurationError as exc:
            run.status = RunStatus.FAILED
            run.reason = "backend misconfigured"
            run.error = str(exc)
            self._update(store, run, ended=True)
            return
        with self._lock:
            if self._closing:
                run.status = RunStatus.FAILED
                run.reason = "cancelled: the service is shutting down"
                self._update(store, run, ended=True)
                return
            handle = backend.submit(spec)
            self._active[agent] = handle
        code, timed_out = self._watch(store, run, handle, config.timeout_s, progress)
        run.exit_code = code
        self._finish(store, run, spec, handle, code, timed_out, config)
        _record_backend(store, run.run_id, handle)

    def _watch(
        self,
        store: TraceStore,
        run: TrainingRun,
        handle: JobHandle,
        timeout_s: float,
        progress: ProgressCallback | None,
    ) -> tuple[int | None, bool]:
        deadline = time.monotonic() + timeout_s
        last: tuple[float, str] | None = None
        recorded_at = 0.0
        while True:
            code = handle.wait(self.poll_interval_s)
            report = handle.progress()
            if report is not None and report != last:
                last = report
                if progress is not None:
                    progress(*report)
                now = time.monotonic()
                if now - recorded_at >= 1.0 or code is not None:
                    recorded_at = now
                    run.metrics = {"progress": report[0], "progress_message": report[1]}
                    self._update(store, run)
            if code is not None:
                return code, False
            if time.monotonic() >= deadline:
                handle.cancel()
                return handle.poll(), True

    def _finish(
        self,
        store: TraceStore,
        run: TrainingRun,
        spec: TrainingJobSpec,
        handle: JobHandle,
        code: int | None,
        timed_out: bool,
        config: TrainingConfig,
    ) -> None:
        from agentgym_runtime.trainers.backends.base import EXIT_UNVERIFIED
        from agentgym_runtime.trainers.job import (
            ERROR_NAME,
            EXIT_BAD_SPEC,
            EXIT_OK,
            EXIT_UNAVAILABLE,
            RESULT_NAME,
        )

        output_dir = Path(spec.output_dir)
        run.log_tail = handle.log_tail()
        error = _read_error(output_dir / ERROR_NAME)
        run.status = RunStatus.FAILED
        if timed_out:
            run.reason = "timeout"
            run.error = f"the job ran longer than its timeout of {config.timeout_s:g}s and was killed"
        elif self._closing and code != EXIT_OK:
            run.reason = "cancelled: the service is shutting down"
            run.error = f"the job was stopped (exit code {code})"
        elif code == EXIT_UNAVAILABLE:
            run.reason = "trainer unavailable"
            run.error = error or f"trainer {spec.trainer!r} is unavailable (no details in {ERROR_NAME})"
        elif code == EXIT_BAD_SPEC:
            run.reason = "invalid job"
            run.error = error or "the job rejected its spec"
        elif code != EXIT_OK and getattr(handle, "failure_reason", None):
            run.reason = "result failed verification" if code == EXIT_UNVERIFIED else "backend failed"
            run.error = handle.failure_reason  # type: ignore[attr-defined]
        elif code != EXIT_OK:
            run.reason = f"job killed by signal {-code}" if code is not None and code < 0 else "job crashed"
            run.error = error or f"the job exited with code {code}"
        else:
            try:
                result = TrainingResult.model_validate_json((output_dir / RESULT_NAME).read_text())
            except (OSError, ValueError) as exc:
                run.reason = "invalid result"
                run.error = f"the job exited 0 but {RESULT_NAME} is missing or invalid: {exc}"
            else:
                run.metrics = dict(result.metrics)
                run.candidate_version = _register_candidate(self.runtime, spec, result, run)
                run.status = RunStatus.SUCCEEDED
                if run.candidate_version is None:
                    run.reason = (
                        f"candidate not registered (no policy registry in this installation); "
                        f"its result is {output_dir / RESULT_NAME}"
                    )
                else:
                    run.reason = _heldout_drop(run.metrics, config.max_heldout_drop)
                    if run.reason is None:
                        self._start_canary(config, run)
        self._update(store, run, ended=True)

    def _served_policy(self, agent: str) -> Policy:
        """The policy every non-canary episode of ``agent`` gets now: the pinned one, else the live one."""
        state = self.runtime.policies.read_state(agent) if agent in self.runtime.policies.agents() else None
        if state is None:
            return Policy.baseline(agent)
        return self.runtime.policies.load(agent, state.pinned if state.pinned is not None else state.live)

    def _canary_version(self, agent: str) -> int | None:
        if agent not in self.runtime.policies.agents():
            return None
        state = self.runtime.policies.read_state(agent)
        return None if state is None else state.canary

    def _start_canary(self, config: TrainingConfig, run: TrainingRun) -> None:
        """Serve the new candidate to ``canary_share`` of episodes; the router's gate decides after."""
        if config.canary_share is None or run.candidate_version is None:
            return
        try:
            self.runtime.policies.start_canary(
                config.agent,
                run.candidate_version,
                config.canary_share,
                actor="training",
                reason=f"candidate of training run {run.run_id}",
            )
        except Exception as exc:  # the candidate stays registered; a person can canary it by hand
            run.reason = f"candidate registered, canary not started: {exc}"
            self.runtime.internal_error("start canary", exc)

    # --- training_runs rows -----------------------------------------------------------------
    def _insert(self, store: TraceStore, run: TrainingRun) -> None:
        store.write(
            lambda con: con.execute(
                "INSERT INTO training_runs (run_id, agent, trainer, status, scheduled_at) VALUES (?, ?, ?, ?, ?)",
                [run.run_id, run.agent, run.trainer, run.status, datetime.now(UTC)],
            )
        )

    def _update(
        self, store: TraceStore, run: TrainingRun, *, started_at: datetime | None = None, ended: bool = False
    ) -> None:
        assignments = [
            "status = ?",
            "reason = ?",
            "episodes = ?",
            "snapshot_path = ?",
            "candidate_version = ?",
            "metrics = ?",
            "error = ?",
            "log_tail = ?",
        ]
        params: list[Any] = [
            run.status,
            run.reason,
            run.episodes,
            run.snapshot_path,
            run.candidate_version,
            json.dumps(run.metrics, default=str) if run.metrics else None,
            run.error,
            run.log_tail,
        ]
        if started_at is not None:
            assignments.append("started_at = ?")
            params.append(started_at)
        if ended:
            assignments.append("ended_at = ?")
            params.append(datetime.now(UTC))
        params.append(run.run_id)
        store.write(
            lambda con: con.execute(f"UPDATE training_runs SET {', '.join(assignments)} WHERE run_id = ?", params)
        )


def _read_error(path: Path) -> str | None:
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(payload, dict):
        return None
    message = payload.get("message")
    kind = payload.get("type")
    return f"{kind}: {message}" if kind and message else (str(message) if message else None)


def _configured_backend(config: TrainingConfig, runtime: Runtime) -> Backend:
    from agentgym_runtime.trainers.backends.select import backend_for

    return backend_for(config, runtime.settings)


def _record_backend(store: TraceStore, run_id: str, handle: JobHandle) -> None:
    """Where and at what price the job ran (``RunInfo``) into the run's backend columns."""
    info = getattr(handle, "info", None)
    if not callable(info):
        return
    columns = info().columns()
    assignments = ", ".join(f"{name} = ?" for name in columns)
    params = [*columns.values(), run_id]
    store.write(lambda con: con.execute(f"UPDATE training_runs SET {assignments} WHERE run_id = ?", params))


def _heldout_drop(metrics: Mapping[str, Any], tolerance: float | None) -> str | None:
    """Why a candidate must not be canaried: its held-out reward fell by more than ``tolerance``.

    Example:
        >>> _heldout_drop({"heldout_reward_before": 0.70, "heldout_reward_after": 0.63}, 0.02)
        'held-out reward fell from 0.700 to 0.630 on the snapshot: candidate registered, not canaried'
        >>> _heldout_drop({"heldout_reward_before": 0.70, "heldout_reward_after": 0.69}, 0.02) is None
        True
        >>> _heldout_drop({"heldout_reward_before": 0.7, "heldout_reward_after": 0.7, "best_step": 0}, 0.02)
        'no round beat the starting held-out reward (0.700): candidate registered, not canaried'
    """
    before, after = metrics.get("heldout_reward_before"), metrics.get("heldout_reward_after")
    if tolerance is None or not isinstance(before, int | float) or not isinstance(after, int | float):
        return None
    if metrics.get("best_step") == 0:  # the trainer kept its starting point: nothing new to serve
        return f"no round beat the starting held-out reward ({before:.3f}): candidate registered, not canaried"
    if after >= before - tolerance:
        return None
    return f"held-out reward fell from {before:.3f} to {after:.3f} on the snapshot: candidate registered, not canaried"


def _register_candidate(
    runtime: Runtime, spec: TrainingJobSpec, result: TrainingResult, run: TrainingRun
) -> int | None:
    """Hand the job's candidate to the policy registry; its version, or ``None`` without a registry.

    The one place where training meets the registry. It uses, in order: the runtime's own
    registry (``runtime.policies``), the public ``agentgym.register_policy``, or a
    :class:`~agentgym_runtime.policy.registry.PolicyRegistry` on ``<home>/policies`` (the
    filesystem is the registry's source of truth, shared by every process).
    """
    register: Callable[..., Any] | None = None
    runtime_registry = getattr(runtime, "policies", None) or getattr(runtime, "registry", None)
    if runtime_registry is not None and callable(getattr(runtime_registry, "register", None)):
        register = functools.partial(
            runtime_registry.register, actor="training", reason=f"training run {run.run_id} ({spec.trainer})"
        )
    if register is None:
        import agentgym_runtime

        register = getattr(agentgym_runtime, "register_policy", None)
    if register is None:
        try:
            from agentgym_runtime.policy.registry import PolicyRegistry
        except ImportError:
            return None
        register = PolicyRegistry(
            runtime.settings.policies_dir, store=runtime.store, on_error=runtime.internal_error
        ).register
    adapter_dir = Path(spec.output_dir) / result.adapter if result.adapter else None
    policy = register(
        spec.agent,
        system_prompt=result.system_prompt,
        tool_descriptions=dict(result.tool_descriptions),
        demonstrations=list(result.demonstrations),
        llm=result.llm,
        metadata={
            "training_run": run.run_id,
            "snapshot": spec.snapshot_dir,
            "episodes": run.episodes,
            **({"notes": result.notes} if result.notes else {}),
        },
        trainer=result.trainer,
        metrics=dict(result.metrics),
        parent_version=spec.base_policy_version,
        adapter_dir=adapter_dir,
    )
    return int(policy.version)
