"""Background retraining: config, the per-agent lock, requests from other processes, run rows, the scheduler.

The modules, each one concern:

- :mod:`.config`: :class:`TrainingConfig`, :func:`training_config`, schedules, and the
  process-wide registration (``train_online(schedule=...)``);
- :mod:`.lock`: :class:`TrainLock`, one run of an agent at a time;
- :mod:`.requests`: ``agentgym train`` requests left in ``<home>/requests`` (and the trust rules
  they pass before a service acts on them);
- :mod:`.runs`: :class:`TrainingRun` and the ``training_runs`` rows;
- :mod:`.scheduler`: :class:`TrainingScheduler`, which runs jobs on schedule or on request and
  hands candidates to the policy registry.

Example:
    >>> from agentgym_runtime.trainers.scheduler import TrainingConfig, parse_schedule
    >>> parse_schedule(TrainingConfig(agent="support", schedule="6h").schedule)
    ('interval', 21600.0)
"""

from agentgym_runtime.trainers.scheduler.config import (
    GPU_MODES,
    GpuMode,
    RegistrationListener,
    TrainingConfig,
    alone,
    parse_schedule,
    register_training,
    registered_training,
    set_registration_listener,
    stage_for,
    stage_options,
    training_config,
    unregister_training,
)
from agentgym_runtime.trainers.scheduler.lock import TrainLock
from agentgym_runtime.trainers.scheduler.requests import (
    CODE_OPTIONS,
    REQUEST_OPTIONS,
    REQUESTS_DIR,
    RequestRejected,
    TrainingRequest,
    check_trusted,
    read_request_file,
    request_status,
    submit_request,
    withdraw_request,
)
from agentgym_runtime.trainers.scheduler.runs import (
    RunStatus,
    TrainingRun,
    consecutive_failures,
    last_success_until,
    list_runs,
    new_run_id,
)
from agentgym_runtime.trainers.scheduler.scheduler import (
    ProgressCallback,
    TrainingScheduler,
    _heldout_drop,
    learned_nothing,
)

__all__ = [
    "CODE_OPTIONS",
    "GPU_MODES",
    "REQUESTS_DIR",
    "REQUEST_OPTIONS",
    "GpuMode",
    "ProgressCallback",
    "RegistrationListener",
    "RequestRejected",
    "RunStatus",
    "TrainLock",
    "TrainingConfig",
    "TrainingRequest",
    "alone",
    "TrainingRun",
    "TrainingScheduler",
    "_heldout_drop",
    "check_trusted",
    "consecutive_failures",
    "last_success_until",
    "learned_nothing",
    "list_runs",
    "new_run_id",
    "parse_schedule",
    "read_request_file",
    "register_training",
    "registered_training",
    "request_status",
    "set_registration_listener",
    "stage_for",
    "stage_options",
    "submit_request",
    "training_config",
    "unregister_training",
    "withdraw_request",
]
