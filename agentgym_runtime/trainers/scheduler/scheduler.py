"""Background retraining inside the serving process: schedule, snapshot, run a job, register.

``@agentgym.train_online(schedule="6h", min_new_episodes=50, trainer="demos", gpu="auto")``
registers a :class:`TrainingConfig`; the deployment's :class:`TrainingScheduler` (built by the
wiring with the store, the policy registry, an error sink and a flush) runs it on an APScheduler ``BackgroundScheduler``
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

A failed run backs the schedule off exponentially, and repeated failures pause the agent's
training with the cause recorded (:meth:`TrainingScheduler.hold`); a run stopped by the
service's shutdown is ``cancelled``, not ``failed``; a job whose replays all scored 0 is a
failed run (:func:`learned_nothing`), never a candidate, and leaves its episodes for the next.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentgym_runtime.errors import ConfigurationError
from agentgym_runtime.recording.files import atomic_write_json
from agentgym_runtime.recording.import_guard import refuse_while_importing
from agentgym_runtime.recording.policy import Policy, resolve_adapter_path
from agentgym_runtime.trainers.base import TrainingJobSpec, TrainingResult
from agentgym_runtime.trainers.scheduler.config import (
    _DEVICE,
    STAGE_KEY,
    TrainingConfig,
    _trigger,
    alone,
    registered_training,
    stage_for,
    stage_options,
    training_config,
)
from agentgym_runtime.trainers.scheduler.lock import TrainLock
from agentgym_runtime.trainers.scheduler.requests import REQUESTS_DIR, read_request_file, write_status
from agentgym_runtime.trainers.scheduler.runs import (
    RunStatus,
    TrainingRun,
    consecutive_failures,
    insert_run,
    last_success_until,
    new_run_id,
    safe_name,
    update_run,
)

if TYPE_CHECKING:
    from agentgym_runtime.collectors.store import TraceStore
    from agentgym_runtime.config import Settings
    from agentgym_runtime.policy.registry import PolicyRegistry
    from agentgym_runtime.policy.router import PolicyRouter
    from agentgym_runtime.trainers.backends import Backend, JobHandle

logger = logging.getLogger("agentgym_runtime.trainers")

ProgressCallback = Callable[[float, str], None]
_REQUESTS_JOB = "train-requests"
#: ``<home>/training/status.json``: each scheduled agent's failure streak and hold (for ``agentgym status``).
STATUS_NAME = "status.json"
#: Where a job's snapshot holds its teachers' episodes (``<snapshot>/teachers/<agent>/``).
TEACHERS_DIR = "teachers"


class _SkipOverlapFilter(logging.Filter):
    """Drop APScheduler's warning for a tick that finds the previous run still going.

    One run per agent at a time is the design (the lock), so that skip is expected, not news.
    Also drop the traceback of a tick that finds its thread pool closed by interpreter exit:
    scheduling is over then, and the exit hook below stops the scheduler.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if "maximum number of running instances reached" in record.getMessage():
            return False
        error = record.exc_info[1] if record.exc_info else None
        return not (isinstance(error, RuntimeError) and "cannot schedule new futures" in str(error))


_OVERLAP_FILTER = _SkipOverlapFilter()


def _quiet_overlap_warnings() -> None:
    logger = logging.getLogger("apscheduler.scheduler")
    if _OVERLAP_FILTER not in logger.filters:
        logger.addFilter(_OVERLAP_FILTER)


class TrainingScheduler:
    """Runs training for the agents of one deployment, on schedule or on request.

    Args:
        settings: The runtime's settings (its home holds snapshots, job outputs, locks, requests).
        store: The trace store (episodes to train on; ``training_runs`` rows).
        registry: Where candidates are registered and canaries started.
        on_error: The runtime's error sink (``where, exc``): logged once and counted.
        flush: Writes recorded spans to the store before a snapshot (``False``: not all written).
        router: The policy router serving the agents, if any (told about new canaries).
        backend_factory: ``config -> Backend``; default: the config's ``backend`` (or what
            ``gpu`` implies), chosen by :func:`agentgym_runtime.trainers.backends.select.backend_for`.
        poll_interval_s: How often a running job's progress and deadline are checked.

    Example:
        >>> import tempfile
        >>> from agentgym_runtime.collectors.store import TraceStore
        >>> from agentgym_runtime.config import Settings
        >>> from agentgym_runtime.policy.registry import PolicyRegistry
        >>> settings = Settings(home=tempfile.mkdtemp(), store=":memory:")
        >>> scheduler = TrainingScheduler(
        ...     settings, store=TraceStore(":memory:"), registry=PolicyRegistry(settings.policies_dir),
        ...     on_error=lambda where, exc: None, flush=lambda: True)
        >>> scheduler.add_agent(TrainingConfig(agent="support", schedule="6h"))
        >>> scheduler.jobs()
        ['train:support']
        >>> scheduler.shutdown()
    """

    def __init__(
        self,
        settings: Settings,
        *,
        store: TraceStore,
        registry: PolicyRegistry,
        on_error: Callable[[str, BaseException], None],
        flush: Callable[[], bool],
        router: PolicyRouter | None = None,
        backend_factory: Callable[[TrainingConfig], Backend] | None = None,
        poll_interval_s: float = 0.1,
    ) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry
        self.router = router
        self._on_error = on_error
        self._flush = flush
        self.backend_factory = backend_factory or (lambda config: _configured_backend(config, settings))
        self.poll_interval_s = poll_interval_s
        self.configs: dict[str, TrainingConfig] = {}
        self._aps: Any = None
        self._lock = threading.RLock()
        self._active: dict[str, JobHandle] = {}
        self._closing = False
        self._exit_hook = False
        self._in_flight = 0  # scheduled runs executing on APScheduler's threads
        self._idle = threading.Event()
        self._idle.set()
        self._closing_reason = "the service is shutting down"

    # --- configuration ----------------------------------------------------------------------
    @property
    def home(self) -> Path:
        """The runtime's home directory (snapshots, job outputs, locks)."""
        return Path(self.settings.home)

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

    @property
    def closing(self) -> bool:
        """Whether :meth:`shutdown` has begun (scheduled runs no longer start)."""
        return self._closing

    def next_run_time(self, agent: str) -> datetime | None:
        """When ``agent``'s next scheduled run fires, if it has a schedule."""
        job = None if self._aps is None or self._closing else self._aps.get_job(f"train:{agent}")
        return None if job is None else job.next_run_time

    def start(self) -> TrainingScheduler:
        """Pick up the configs registered in this process (``@train_online(schedule=...)``)."""
        refuse_while_importing("started the training scheduler")
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
                self._on_error("training request", exc)
            except Exception:
                logger.exception("agentgym: training request %s failed", claimed)

    def _run_request(self, claimed: Path) -> None:
        request_id = claimed.name.replace(".claimed.json", "")
        status_path = claimed.with_name(f"{request_id}.status.json")
        configured = {agent: dict(config.trainer_options) for agent, config in self._known_configs().items()}
        try:
            request = read_request_file(claimed, configured=configured)
            agent = request.agent
            known = self.known_agents()
            if agent not in known:
                raise ConfigurationError(
                    f"unknown agent {agent!r}; known agents: {', '.join(sorted(known)) or 'none yet'}"
                )
            overrides = dict(request.overrides)
            since = _parse_since(overrides.pop("since", None))
            config = self.config_for(agent)
            extra = dict(overrides.pop("trainer_options", None) or {})
            if overrides or extra:
                # A trainer named in the request runs alone, not the config's stages; the request's
                # options go over the ones that trainer would get.
                named = overrides.get("trainer")
                kept = alone(config, named) if isinstance(named, str) else config.model_dump(exclude={"agent"})
                options = {**kept["trainer_options"], **extra}
                config = training_config(agent, **{**kept, **overrides, "trainer_options": options})
        except (OSError, ValueError, ConfigurationError) as exc:
            logger.warning("agentgym: training request %s rejected: %s", request_id, exc)
            write_status(status_path, {"state": "done", "status": "rejected", "error": str(exc)})
            return
        finally:
            claimed.unlink(missing_ok=True)
        last_write = 0.0
        state: dict[str, Any] = {"state": "running", "pid": os.getpid(), "fraction": 0.0, "message": "queued"}
        write_status(status_path, state)

        def progress(fraction: float, message: str) -> None:
            nonlocal last_write
            state.update(fraction=fraction, message=message, run_id=self.active_runs().get(agent))
            if time.monotonic() - last_write >= 0.2:
                last_write = time.monotonic()
                write_status(status_path, state)

        run = self.run_now(agent, config=config, force=request.force, since=since, progress=progress)
        write_status(
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
            self._stop_before_executors_join()
        return self._aps

    def _stop_before_executors_join(self) -> None:
        """Stop this scheduler (killing its running jobs, recorded ``cancelled``) first thing at interpreter exit.

        At exit, ``concurrent.futures`` joins every pool thread before ``atexit`` handlers run, and a
        scheduled run's thread waits for its job: a script that ended, or a service stopped by
        SIGTERM, would hang until the job finished (up to ``timeout_s``) while APScheduler logged a
        traceback per tick. Hooks registered with ``threading._register_atexit`` run in reverse order
        before those joins; this one is registered after APScheduler imported ``concurrent.futures``,
        so it runs before its join. (A private hook, there since Python 3.9; plain ``atexit`` otherwise.)
        """
        if self._exit_hook:
            return
        self._exit_hook = True
        ref = weakref.ref(self)
        owner = os.getpid()  # a forked child inherits the hook, not the scheduler's thread or jobs

        def stop() -> None:
            alive = ref()
            if alive is not None and os.getpid() == owner:
                try:
                    alive.shutdown(wait=False)
                except Exception:  # interpreter exit must not become a traceback
                    logger.debug("agentgym: scheduler stop at exit failed", exc_info=True)

        register = getattr(threading, "_register_atexit", None)
        try:
            register(stop) if register is not None else atexit.register(stop)
        except RuntimeError:  # already exiting: the runtime's atexit handler stops it
            pass

    def shutdown(self, wait: bool = True, *, reason: str | None = None) -> None:
        """Stop scheduling, kill running jobs (their runs are marked cancelled) and stop the thread.

        Args:
            wait: Wait for the scheduler thread to stop.
            reason: Why (recorded on the cancelled runs as ``cancelled: <reason>``); default
                "the service is shutting down".
        """
        with self._lock:
            if reason is not None and not self._closing:
                self._closing_reason = reason
            self._closing = True
            handles = list(self._active.values())
        for handle in handles:
            handle.cancel(grace_s=2.0)
        # Let the runs record their outcome (runs started by run_now on other threads too).
        deadline = time.monotonic() + 10.0
        while self._active and time.monotonic() < deadline:
            time.sleep(0.02)
        if self._aps is not None:
            # Never APScheduler's shutdown(wait=True): it holds the job-store lock while it joins
            # the executor's threads, and a scheduled run that is still publishing its status
            # (next_run_time -> get_job) needs that lock: a deadlock that hung SIGTERM forever.
            # Stop scheduling first, then wait for the job threads here, holding no lock.
            try:
                self._aps.shutdown(wait=False)
            except Exception:  # already stopped
                logger.debug("agentgym: scheduler shutdown", exc_info=True)
            if wait:
                self._idle.wait(10.0)
            self._aps = None

    def active_runs(self) -> dict[str, str]:
        """Agents with a job running now, mapped to the run id."""
        with self._lock:
            return {agent: handle.run_id for agent, handle in self._active.items()}

    def _scheduled_run(self, agent: str) -> None:
        with self._lock:
            self._in_flight += 1
            self._idle.clear()
        try:
            self._scheduled_run_once(agent)
        finally:
            with self._lock:
                self._in_flight -= 1
                if self._in_flight == 0:
                    self._idle.set()

    def _scheduled_run_once(self, agent: str) -> None:
        try:
            if self.closing:
                return
            if self.hold(agent) is None:
                run = self.run_now(agent)
                if run.status == RunStatus.FAILED:  # the serving process says so, not only `agentgym runs`
                    logger.warning(
                        "agentgym: scheduled training of %r failed (run %s): %s: %s",
                        agent,
                        run.run_id,
                        run.reason,
                        run.error,
                    )
            self.publish_status()
        except Exception as exc:  # a failing run must never stop the scheduler thread
            try:
                self._on_error("scheduled training run", exc)
            except Exception:
                logger.exception("agentgym: scheduled training of %s failed", agent)

    # --- failures: back off, then pause -------------------------------------------------------
    def hold(self, agent: str, *, record: bool = True) -> str | None:
        """Why the next *scheduled* run of ``agent`` must not start now (``None``: it may).

        After a failed run the schedule backs off exponentially (``failure_backoff_s`` doubled per
        consecutive failure, at most ``max_failure_backoff_s``); after ``max_consecutive_failures``
        the agent's training is paused until a run succeeds (``agentgym train --agent A --now``
        runs regardless). Entering the pause is recorded once, as a ``skipped`` run whose reason
        names the cause, so ``agentgym runs`` and ``status`` show it. Cancelled and skipped runs
        do not count; the streak is read from ``training_runs``, so it survives restarts.
        """
        config = self.config_for(agent)
        streak, last = consecutive_failures(self.store, agent, limit=config.max_consecutive_failures)
        if streak == 0 or last is None:
            return None
        cause = "; ".join(str(part) for part in (last.get("reason"), last.get("error")) if part)
        if streak >= config.max_consecutive_failures:
            reason = (
                f"training paused after {streak} consecutive failed runs (last: {cause}); fix the cause, then run "
                f"`agentgym train --agent {agent} --now` (a successful run resumes the schedule)"
            )
            if record and not self._pause_recorded(agent):
                run = TrainingRun(run_id=new_run_id(), agent=agent, trainer=config.trainer)
                insert_run(self.store, run)
                run.status, run.reason = RunStatus.SKIPPED, reason
                update_run(self.store, run, ended=True)
                logger.warning("agentgym: %s", reason)
            return reason
        wait = min(config.failure_backoff_s * 2 ** (streak - 1), config.max_failure_backoff_s)
        ended = last.get("ended_at")
        if isinstance(ended, datetime):
            retry_at = (ended if ended.tzinfo else ended.replace(tzinfo=UTC)).timestamp() + wait
            if time.time() < retry_at:
                left = retry_at - time.time()
                return f"backing off after {streak} failed run(s) (last: {cause}); next try in {left:.0f}s"
        return None

    def _pause_recorded(self, agent: str) -> bool:
        rows = self.store.query(
            "SELECT status, reason FROM training_runs WHERE agent = ? ORDER BY scheduled_at DESC, run_id DESC LIMIT 1",
            [agent],
        )
        return bool(rows) and rows[0][0] == RunStatus.SKIPPED and str(rows[0][1] or "").startswith("training paused")

    def status(self) -> dict[str, Any]:
        """Per scheduled agent: its failure streak and why it is held (``None``: runs as scheduled).

        Example:
            >>> scheduler.status()  # doctest: +SKIP
            {'support': {'consecutive_failures': 0, 'held': None, 'next_run': '...'}}
        """
        report: dict[str, Any] = {}
        for agent, config in self._known_configs().items():
            streak, _ = consecutive_failures(self.store, agent, limit=config.max_consecutive_failures)
            next_run = self.next_run_time(agent)
            report[agent] = {
                "consecutive_failures": streak,
                "held": self.hold(agent, record=False),
                "next_run": None if next_run is None else next_run.isoformat(),
                "active_run": self.active_runs().get(agent),
            }
        return report

    def publish_status(self) -> None:
        """Write :meth:`status` to ``<home>/training/status.json`` for ``agentgym status``."""
        if self.settings.store_path == ":memory:":
            return
        try:
            path = self.home / "training" / STATUS_NAME
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, {"updated_at": time.time(), "agents": self.status()}, durable=False)
        except Exception as exc:
            self._on_error("training status", exc)

    def known_agents(self) -> set[str]:
        """Agents this scheduler can train: those with recorded episodes, or configured for training."""
        rows = self.store.query("SELECT DISTINCT agent FROM episodes WHERE agent IS NOT NULL")
        return {str(row[0]) for row in rows} | set(self._known_configs())

    def _known_configs(self) -> dict[str, TrainingConfig]:
        return {**registered_training(), **self.configs}

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
        since: datetime | None = None,
    ) -> TrainingRun:
        """Run one training of ``agent`` now, in the calling thread, and return its outcome.

        Args:
            agent: The agent's name.
            trainer: Override the config's trainer.
            force: Run with any number (>= 1) of new episodes, ignoring ``min_new_episodes``.
            progress: Called with ``(fraction, message)`` as the job reports progress.
            config: Use this config instead of the agent's.
            since: Train on the episodes ended since then (retrain on chosen episodes), instead of
                those since the last successful run.

        Returns:
            The run (also recorded in ``training_runs``).
        """
        config = config or self.config_for(agent)
        if trainer is not None and (trainer != config.trainer or config.stages):
            config = training_config(agent, **alone(config, trainer))
        elif config.stages:
            config = self.staged(config)
        run = TrainingRun(run_id=new_run_id(), agent=agent, trainer=config.trainer)
        store = self.store
        insert_run(store, run)
        lock = TrainLock(self.home / "locks" / f"train-{safe_name(agent)}.lock")
        if not lock.acquire(run.run_id):
            holder = lock.holder() or {}
            run.status = RunStatus.SKIPPED
            run.reason = (
                f"another training run of {agent!r} is in progress (run {holder.get('run_id', '?')}, "
                f"pid {holder.get('pid', '?')}, since {holder.get('started_at', '?')})"
            )
            update_run(store, run, ended=True)
            return run
        try:
            self._execute(store, run, config, force, progress, since)
        except Exception as exc:
            run.status = RunStatus.FAILED
            run.reason = run.reason or "internal error in the training scheduler"
            run.error = f"{type(exc).__name__}: {exc}"
            try:
                update_run(store, run, ended=True)
            finally:
                self._on_error("training run", exc)
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
        since: datetime | None = None,
    ) -> None:
        from agentgym_runtime.trainers.dataset import count_new_episodes, write_snapshot

        agent = run.agent
        canary = self._canary_version(agent)
        if canary is not None and not force:
            # A candidate trained now would derive from the live policy while the gate is still
            # deciding on the last one; wait for its decision (promotion makes it the new base).
            run.status = RunStatus.SKIPPED
            run.reason = f"candidate v{canary} is still in canary; the next run waits for the gate's decision"
            update_run(store, run, ended=True)
            return
        chosen = since is not None
        since = since if chosen else last_success_until(store, agent)
        until = datetime.now(UTC)
        self._flush()  # episodes that ended before `until` reach the store first
        taught = {t: count_new_episodes(store, t, since, until) for t in config.teachers}
        new = count_new_episodes(store, agent, since, until) + sum(taught.values())
        needed = 1 if force else config.min_new_episodes
        if since is None:
            window = "recorded so far"
        elif chosen:
            window = f"since {since.isoformat()}"
        else:
            window = f"since the last successful run ({since.isoformat()})"
        if new < needed:
            run.status = RunStatus.SKIPPED
            run.episodes = new
            teachers = f" (teachers' included: {_counts(taught)})" if taught else ""
            run.reason = f"too few new episodes: {new} {window}{teachers}, at least {needed} needed"
            update_run(store, run, ended=True)
            return
        run.status = RunStatus.RUNNING
        run.episodes = new
        update_run(store, run, started_at=until)
        if progress is not None:
            progress(0.0, f"snapshot of {new} episodes")
        snapshot_dir = self.home / "snapshots" / safe_name(agent) / run.run_id
        manifest = write_snapshot(
            store, agent, snapshot_dir, run_id=run.run_id, since=since, until=until, limit=config.max_episodes
        )
        extra = list(config.trainer_options.get("extra_snapshots") or [])
        run.episodes = manifest.counts["episodes"]
        for teacher, count in taught.items():
            if count:
                # Inside the job's snapshot, named relative to it, so that a remote backend that
                # copies the snapshot takes the teachers' traces along.
                relative = f"{TEACHERS_DIR}/{safe_name(teacher)}"
                written = write_snapshot(
                    store,
                    teacher,
                    snapshot_dir / relative,
                    run_id=run.run_id,
                    since=since,
                    until=until,
                    limit=config.max_episodes,
                )
                run.episodes += written.counts["episodes"]
                extra.append(relative)
        run.snapshot_path = str(snapshot_dir)
        output_dir = self.home / "training" / safe_name(agent) / run.run_id
        run.output_dir = str(output_dir)
        update_run(store, run)
        latest = store.query(
            "SELECT entrypoint, scenario FROM episodes WHERE agent = ? ORDER BY ended_at DESC LIMIT 1", [agent]
        )
        entrypoint, scenario = latest[0] if latest else (None, None)
        base = self._served_policy(agent)
        base_adapter = resolve_adapter_path(base, self.settings.home) if base.version else None
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
            options={
                "heldout_fraction": config.heldout_fraction,
                **config.trainer_options,
                **({"extra_snapshots": extra} if extra else {}),
            },
        )
        try:
            backend = self.backend_factory(config)
        except ConfigurationError as exc:
            run.status = RunStatus.FAILED
            run.reason = "backend misconfigured"
            run.error = str(exc)
            update_run(store, run, ended=True)
            return
        with self._lock:
            if self._closing:
                run.status = RunStatus.CANCELLED
                run.reason = f"cancelled: {self._closing_reason}"
                update_run(store, run, ended=True)
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
                    update_run(store, run)
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
            run.status = RunStatus.CANCELLED
            run.reason = f"cancelled: {self._closing_reason}"
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
                failure = learned_nothing(run.metrics)
                if failure is not None:  # never a candidate; the episodes stay new for the next run
                    run.reason = "nothing learnt"
                    run.error = failure
                    update_run(store, run, ended=True)
                    return
                run.candidate_version = _register_candidate(self.registry, spec, result, run)
                run.status = RunStatus.SUCCEEDED
                run.reason = _heldout_drop(run.metrics, config.max_heldout_drop)
                if run.reason is None:
                    self._start_canary(config, run)
        update_run(store, run, ended=True)

    def staged(self, config: TrainingConfig) -> TrainingConfig:
        """``config`` as its next job: the stage after the one that trained the served version.

        A config without stages comes back as it is. The result keeps ``stages``, so running it
        picks the same stage again (until the served version changes).

        Example:
            >>> scheduler.staged(training_config("support", trainer=["sft", "grpo"])).trainer  # doctest: +SKIP
            'sft'
        """
        if not config.stages:
            return config
        served = self._served_policy(config.agent)
        trained_by = served.metadata.get(STAGE_KEY) if served.version else None
        stage = stage_for(config, trained_by if isinstance(trained_by, str) else None)
        return config.model_copy(update={"trainer": stage, "trainer_options": stage_options(config, stage)})

    def _served_policy(self, agent: str) -> Policy:
        """The policy every non-canary episode of ``agent`` gets now: the pinned one, else the live one."""
        state = self.registry.read_state(agent) if agent in self.registry.agents() else None
        if state is None:
            return Policy.baseline(agent)
        return self.registry.load(agent, state.pinned if state.pinned is not None else state.live)

    def _canary_version(self, agent: str) -> int | None:
        if agent not in self.registry.agents():
            return None
        state = self.registry.read_state(agent)
        return None if state is None else state.canary

    def _start_canary(self, config: TrainingConfig, run: TrainingRun) -> None:
        """Serve the new candidate to ``canary_share`` of episodes; the router's gate decides after."""
        if config.canary_share is None or run.candidate_version is None:
            return
        try:
            self.registry.start_canary(
                config.agent,
                run.candidate_version,
                config.canary_share,
                actor="training",
                reason=f"candidate of training run {run.run_id}",
            )
        except Exception as exc:  # the candidate stays registered; a person can canary it by hand
            run.reason = f"candidate registered, canary not started: {exc}"
            self._on_error("start canary", exc)


def _counts(taught: Mapping[str, int]) -> str:
    """``{"big": 3, "other": 0}`` as ``big 3, other 0``."""
    return ", ".join(f"{teacher} {count}" for teacher, count in taught.items())


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


def _configured_backend(config: TrainingConfig, settings: Settings) -> Backend:
    from agentgym_runtime.trainers.backends.select import backend_for

    return backend_for(config, settings)


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
    registry: PolicyRegistry, spec: TrainingJobSpec, result: TrainingResult, run: TrainingRun
) -> int:
    """Hand the job's candidate to the policy registry; returns its version."""
    adapter_dir = Path(spec.output_dir) / result.adapter if result.adapter else None
    policy = registry.register(
        spec.agent,
        system_prompt=result.system_prompt,
        tool_descriptions=dict(result.tool_descriptions),
        demonstrations=list(result.demonstrations),
        llm=result.llm,
        metadata={
            "training_run": run.run_id,
            STAGE_KEY: spec.trainer,
            "snapshot": spec.snapshot_dir,
            "episodes": run.episodes,
            **({"notes": result.notes} if result.notes else {}),
        },
        trainer=result.trainer,
        metrics=dict(result.metrics),
        parent_version=spec.base_policy_version,
        adapter_dir=adapter_dir,
        actor="training",
        reason=f"training run {run.run_id} ({spec.trainer})",
    )
    return int(policy.version)


def learned_nothing(metrics: Mapping[str, Any]) -> str | None:
    """Why a job's result must not become a candidate: every replay it scored got 0, or raised.

    Example:
        >>> learned_nothing({"heldout_reward_before": 0.0, "heldout_reward_after": 0.0, "set_scores": {"k0": 0.0}})
        'every replay of the held-out episodes scored 0 (before 0.000, after 0.000): nothing was learnt'
        >>> learned_nothing({"heldout_reward_before": 0.0, "heldout_reward_after": 0.0, "replay_errors": 4,
        ...                  "replays": 4, "replay_error": "AttributeError: boom"})  # doctest: +ELLIPSIS
        'every replay ... scored 0 (before 0.000, after 0.000): 4 of 4 replays raised, the first: AttributeError: boom'
        >>> learned_nothing({"heldout_reward_before": 0.5, "heldout_reward_after": 0.75}) is None
        True
    """
    before, after = metrics.get("heldout_reward_before", "?"), metrics.get("heldout_reward_after", "?")
    scores = [before, after, *dict(metrics.get("set_scores") or {}).values()]
    if not all(isinstance(score, int | float) for score in scores) or any(float(s) != 0.0 for s in scores):
        return None
    summary = f"every replay of the held-out episodes scored 0 (before {float(before):.3f}, after {float(after):.3f})"
    errors = metrics.get("replay_errors")
    if isinstance(errors, int) and errors > 0:
        total, first = metrics.get("replays", "?"), metrics.get("replay_error")
        return f"{summary}: {errors} of {total} replays raised, the first: {first}"
    refused = metrics.get("replay_refused_tools")
    if refused:
        return f"{summary}: the sandbox refused the agent's tool calls ({refused}); were its tools recorded?"
    return f"{summary}: nothing was learnt"


def _parse_since(value: Any) -> datetime | None:
    """A request's ``since`` (ISO 8601; naive means UTC)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigurationError(f"since must be an ISO 8601 date/time, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigurationError(f"since must be an ISO 8601 date/time, got {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
