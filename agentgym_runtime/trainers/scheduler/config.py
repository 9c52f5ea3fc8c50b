"""What one agent's training is: :class:`TrainingConfig`, its validation, and the process-wide registry.

``@agentgym.train_online(schedule="6h", min_new_episodes=50, trainer="demos", gpu="auto")``
builds a :class:`TrainingConfig` with :func:`training_config` and registers it; a scheduler
started later (or the running one, through the registration listener) picks it up.

Example:
    >>> config = TrainingConfig(agent="support", schedule="6h", min_new_episodes=50)
    >>> parse_schedule(config.schedule), parse_schedule("0 3 * * *")
    (('interval', 21600.0), ('cron', '0 3 * * *'))
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Mapping
from datetime import UTC
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentgym_runtime.errors import ConfigurationError
from agentgym_runtime.trainers.base import TRAINERS

GpuMode = Literal["auto", "cpu", "local"]
GPU_MODES: tuple[str, ...] = ("auto", "cpu", "local")
#: How ``gpu=`` maps onto the job's device: ``local`` insists on this machine's CUDA.
_DEVICE: dict[str, Literal["cpu", "cuda", "auto"]] = {"auto": "auto", "cpu": "cpu", "local": "cuda"}
_GPU_ONLY_TRAINERS = frozenset({"verl"})
#: Trainers that score candidates by replaying episodes through the agent's own entrypoint.
REPLAYING_TRAINERS = frozenset({"demos", "apo", "verl"})
_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}

ProgressCallback = Callable[[float, str], None]
#: The policy metadata key naming the trainer (the stage) a scheduled job ran under: the next job
#: of a staged config reads it from the served version to run the stage after it.
STAGE_KEY = "trainer_stage"


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
        max_episodes: A run trains on at most this many of the new episodes, the most recent
            (a busy service records thousands between runs; training time stays bounded).
        trainer: ``"demos"``, ``"apo"``, ``"grpo"``, ``"sft"``, ``"verl"`` or a registered extra
            trainer; with ``stages``, the first stage.
        stages: Trainers run in turn (``["sft", "grpo"]``; empty: ``trainer`` alone): a job runs
            the stage after the one that trained the version it starts from (the first stage
            from the base model or from a version no stage trained; the last stage repeats), so
            a supervised start on the traces is followed by reinforcement from the live version's
            adapter. :func:`stage_for` picks it; :func:`stage_options` gives its options.
        teachers: Other agents whose episodes this agent's jobs also train on: distilling a large
            model's agent (recorded by its own ``train_online``) into this one's open model. Each
            job's snapshot holds, per teacher, its episodes that ended in the same window (at most
            ``max_episodes`` each), given to the trainer as ``extra_snapshots``; they count towards
            ``min_new_episodes``. Read by the ``sft`` and ``grpo`` trainers.
        gpu: ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` (hide GPUs), ``"local"`` (this
            machine's GPU, required).
        trainer_options: Passed to the trainer as ``TrainingJobSpec.options``. With ``stages``, an
            option named after a stage holds that stage's own options, over the shared ones
            (``{"model_path": ..., "grpo": {"steps": 20}}``).
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
        entrypoint: ``module:qualname`` of the agent (filled from the decorator; a script run as
            ``__main__`` is recorded by its path, ``/path/app.py:qualname``).
        scenario: Scenario name (filled from the decorator).
        backend: Where the job runs: ``local``, ``ssh``, ``ray``, ``runpod``, ``lambda`` or a registered
            name (:mod:`agentgym_runtime.trainers.backends.select`); ``None``: ``gpu`` decides.
        failure_backoff_s: After a failed run the schedule waits this long, doubled per further
            consecutive failure (at most ``max_failure_backoff_s``), so a broken training
            environment cannot crash-loop.
        max_failure_backoff_s: The longest wait between scheduled tries after failures.
        max_consecutive_failures: After this many failed runs in a row the agent's scheduled training
            pauses (the cause is recorded as a skipped run) until a run succeeds.

    Example:
        >>> TrainingConfig(agent="support", gpu="cpu").trainer
        'demos'
    """

    model_config = ConfigDict(extra="forbid")

    agent: str = Field(min_length=1)
    schedule: str | None = None
    min_new_episodes: int = Field(default=20, ge=1)
    max_episodes: int = Field(default=2000, ge=1)
    trainer: str = "demos"
    stages: list[str] = Field(default_factory=list)
    teachers: list[str] = Field(default_factory=list)
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
    failure_backoff_s: float = Field(default=60.0, gt=0)
    max_failure_backoff_s: float = Field(default=6 * 3600.0, gt=0)
    max_consecutive_failures: int = Field(default=5, ge=1)


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
    stages = _stages(options.get("trainer", "demos"), options.get("stages"))
    for name in stages if len(stages) > 1 else ():
        if name in trainer_options and not isinstance(trainer_options[name], Mapping):
            raise ConfigurationError(
                f"trainer_options[{name!r}] must be a mapping of the {name!r} stage's own options, "
                f"got {type(trainer_options[name]).__name__}"
            )
    _check_teachers(agent, options.get("teachers"), stages)
    known = set(TRAINERS) | set(extra_trainers())
    for name in stages:
        merged = _merged_options(trainer_options, stages, name)
        _check_trainer(agent, name, merged, known, gpu, options.get("entrypoint"))
    schedule = options.get("schedule")
    if schedule is not None:
        parse_schedule(schedule)
    fields = {**options, "trainer": stages[0], "stages": stages if len(stages) > 1 else []}
    try:
        return TrainingConfig(agent=agent, **{**fields, "trainer_options": dict(trainer_options)})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'training'}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise ConfigurationError(f"invalid training options for agent {agent!r}: {problems}") from None


def _stages(trainer: Any, stages: Any) -> list[str]:
    """The trainer names in turn: ``trainer`` is one name or a list of them.

    ``stages`` comes from a config read back (``model_dump``): it is the sequence again when
    ``trainer`` is still its first stage; a ``trainer`` changed since (an override) runs alone.

    Example:
        >>> _stages(["sft", "grpo"], None), _stages("demos", None), _stages("sft", ["sft", "grpo"])
        (['sft', 'grpo'], ['demos'], ['sft', 'grpo'])
        >>> _stages("apo", ["sft", "grpo"])
        ['apo']
    """
    if isinstance(trainer, str) and isinstance(stages, (list, tuple)) and stages and stages[0] == trainer:
        trainer = list(stages)
    if isinstance(trainer, str):
        return [trainer]
    if isinstance(trainer, (list, tuple)) and trainer and all(isinstance(t, str) and t for t in trainer):
        return list(trainer)
    raise ConfigurationError(
        f"trainer must be a trainer's name or a non-empty list of them (stages run in turn, "
        f"e.g. ['sft', 'grpo']), got {trainer!r}"
    )


def _check_teachers(agent: str, teachers: Any, stages: list[str]) -> None:
    """Refuse teachers that are not other agents' names, or stages that would ignore their traces."""
    if teachers is None:
        return
    if isinstance(teachers, str) or not isinstance(teachers, (list, tuple)):
        raise ConfigurationError(f"teachers must be a list of agent names, got {teachers!r}")
    for teacher in teachers:
        if not isinstance(teacher, str) or not teacher.strip():
            raise ConfigurationError(f"teachers must be agent names (non-empty strings), got {teacher!r}")
        if teacher == agent:
            raise ConfigurationError(f"agent {agent!r} cannot be its own teacher: its episodes are trained on already")
    if teachers:
        ignoring = [name for name in stages if name in REPLAYING_TRAINERS]
        if ignoring:
            raise ConfigurationError(
                f"the {ignoring[0]!r} trainer replays agent {agent!r}'s own entrypoint and would ignore its "
                "teachers' traces: teachers are read by the 'sft' and 'grpo' trainers"
            )


def _merged_options(trainer_options: Mapping[str, Any], stages: list[str], name: str) -> dict[str, Any]:
    if len(stages) < 2:
        return dict(trainer_options)
    shared = {key: value for key, value in trainer_options.items() if key not in stages}
    return {**shared, **dict(trainer_options.get(name) or {})}


def stage_options(config: TrainingConfig, name: str) -> dict[str, Any]:
    """The options a job of stage ``name`` gets: the shared ones, with the stage's own over them.

    Example:
        >>> options = {"model_path": "m", "grpo": {"steps": 20}}
        >>> config = training_config("a", trainer=["sft", "grpo"], trainer_options=options)
        >>> stage_options(config, "grpo"), stage_options(config, "sft")
        ({'model_path': 'm', 'steps': 20}, {'model_path': 'm'})
    """
    return _merged_options(config.trainer_options, config.stages or [config.trainer], name)


def alone(config: TrainingConfig, trainer: str) -> dict[str, Any]:
    """``config``'s fields (for :func:`training_config`) with ``trainer`` run alone, not the stages.

    A trainer a person names (``agentgym train --trainer``, ``run_now(trainer=...)``) runs as named;
    with stages it gets the options that stage would get.

    Example:
        >>> staged = training_config("a", trainer=["sft", "grpo"], trainer_options={"grpo": {"steps": 5}})
        >>> fields = alone(staged, "grpo")
        >>> fields["trainer"], fields["stages"], fields["trainer_options"]
        ('grpo', [], {'steps': 5})
    """
    fields = config.model_dump(exclude={"agent"})
    return {**fields, "trainer": trainer, "stages": [], "trainer_options": stage_options(config, trainer)}


def stage_for(config: TrainingConfig, trained_by: str | None) -> str:
    """The trainer of the next job, when it starts from a version the stage ``trained_by`` trained.

    ``trained_by`` is ``None`` for the base model and for a version no stage trained (a person's,
    or another config's): the first stage runs. After the last stage, the last stage repeats.

    Example:
        >>> config = training_config("a", trainer=["sft", "grpo"])
        >>> stage_for(config, None), stage_for(config, "sft"), stage_for(config, "grpo")
        ('sft', 'grpo', 'grpo')
    """
    stages = config.stages or [config.trainer]
    if trained_by not in stages:
        return stages[0]
    return stages[min(stages.index(trained_by) + 1, len(stages) - 1)]


def _check_trainer(
    agent: str, trainer: str, trainer_options: Mapping[str, Any], known: set[str], gpu: str, entrypoint: Any
) -> None:
    """Refuse a trainer (one stage) that cannot run with these options, naming why."""
    trainer_class = trainer_options.get("trainer_class")
    if trainer_class is not None and (not isinstance(trainer_class, str) or ":" not in trainer_class):
        raise ConfigurationError(f"trainer_class must be 'module:Class', got {trainer_class!r}")
    if trainer not in known and "trainer_class" not in trainer_options:
        raise ConfigurationError(
            f"unknown trainer {trainer!r}; choose one of: {', '.join(sorted(known))} "
            "(or pass trainer_options={'trainer_class': 'module:Class'} for your own)"
        )
    if trainer in _GPU_ONLY_TRAINERS and gpu == "cpu":
        raise ConfigurationError(f"trainer {trainer!r} needs a CUDA GPU; gpu='cpu' cannot work (use 'auto' or 'local')")
    if trainer == "verl" and "trainer_class" not in trainer_options:
        _check_verl_options(trainer_options)
    if trainer in REPLAYING_TRAINERS and "trainer_class" not in trainer_options and not trainer_options.get("replay"):
        _check_replayable(agent, entrypoint)


def _check_verl_options(trainer_options: Mapping[str, Any]) -> None:
    """Validate the VERL job's options now, with a message saying what to pass (not a raw pydantic error)."""
    from agentgym_runtime.trainers.verl import VERLConfig, verl_options

    try:
        VERLConfig.model_validate(verl_options(dict(trainer_options)))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg'].lower()}" for e in exc.errors(include_url=False)
        )
        raise ConfigurationError(
            f"trainer 'verl' needs its options ({problems}): pass at least the model, e.g. "
            "`agentgym train --trainer verl --option model_path=/path/to/model` or "
            "train_online(trainer='verl', trainer_options={'model_path': '/path/to/model'})"
        ) from None


def _check_replayable(agent: str, entrypoint: Any) -> None:
    """Refuse an entrypoint a training job cannot import again (a lambda, a closure, code from stdin).

    Example:
        >>> _check_replayable("a", "app:<lambda>")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        agentgym_runtime.errors.ConfigurationError: agent 'a' cannot be replayed by a training job: ...
    """
    if not isinstance(entrypoint, str):
        return
    module, _, qualname = entrypoint.partition(":")
    if "<lambda>" in qualname:
        why = "it is a lambda"
    elif "<locals>" in qualname:
        why = "it is defined inside another function"
    elif module == "__main__":
        why = "it was defined in code with no file (stdin, -c or an interactive session)"
    else:
        return
    raise ConfigurationError(
        f"agent {agent!r} cannot be replayed by a training job: {why} ({entrypoint}), so the job cannot import "
        "it again. Define it at module level in a file, or name a function that runs it: "
        "train_online(..., trainer_options={'replay': 'module:function'})"
    )


# --- process-wide registration (survives runtime reconfiguration) -------------------------

_registered: dict[str, TrainingConfig] = {}
_registered_lock = threading.Lock()


#: Called with ``(agent, config)`` on registration and ``(agent, None)`` on removal; the wiring
#: (services) sets it so a running scheduler follows registrations made after it started.
RegistrationListener = Callable[[str, "TrainingConfig | None"], None]
_listener: RegistrationListener | None = None


def set_registration_listener(listener: RegistrationListener | None) -> RegistrationListener | None:
    """Install the hook that forwards (un)registrations to the running scheduler; returns the previous one.

    Example:
        >>> seen = []
        >>> previous = set_registration_listener(lambda agent, config: seen.append((agent, config is None)))
        >>> register_training(TrainingConfig(agent="doc-agent")); unregister_training("doc-agent")
        >>> seen
        [('doc-agent', False), ('doc-agent', True)]
        >>> _ = set_registration_listener(previous)
    """
    global _listener
    with _registered_lock:
        previous, _listener = _listener, listener
    return previous


def register_training(config: TrainingConfig) -> None:
    """Remember ``config`` for this process and hand it to the running scheduler (through the listener).

    A scheduler started later picks registered configs up when it starts.

    Example:
        >>> register_training(TrainingConfig(agent="doc-agent"))
        >>> "doc-agent" in registered_training()
        True
        >>> unregister_training("doc-agent")
    """
    with _registered_lock:
        _registered[config.agent] = config
        listener = _listener
    if listener is not None:
        listener(config.agent, config)


def unregister_training(agent: str) -> None:
    """Forget ``agent``'s training config (and remove its scheduled job from the running scheduler)."""
    with _registered_lock:
        _registered.pop(agent, None)
        listener = _listener
    if listener is not None:
        listener(agent, None)


def registered_training() -> dict[str, TrainingConfig]:
    """The training configs registered in this process, by agent."""
    with _registered_lock:
        return dict(_registered)
