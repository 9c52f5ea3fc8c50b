"""The contract every backend keeps: :class:`Backend`, :class:`JobHandle`, :class:`RunInfo`.

A backend takes a :class:`~agentgym_runtime.trainers.base.TrainingJobSpec` and starts
``python -m agentgym_runtime.trainers.job --spec <output_dir>/spec.json`` somewhere; it
returns a :class:`JobHandle` to poll, wait on, cancel, and read the log tail and progress
of. Only the snapshot goes out and only ``output_dir`` comes back, so a remote backend
mirrors ``job.log``/``progress.jsonl`` into the local ``output_dir`` while the job runs and
fetches (and verifies) the rest when it ends. A backend that cannot even start the job
(host unreachable, key refused, budget exceeded) still returns a handle, which ends with
:data:`EXIT_BACKEND`, an ``error.json`` and ``failure_reason`` naming the reason, so the
scheduler records a failed run rather than an internal error.

Example:
    >>> info = RunInfo(backend="runpod", gpu_type="NVIDIA A40", hourly_usd=0.4, duration_s=900.0)
    >>> info.cost_usd, info.columns()["gpu_type"]
    (0.1, 'NVIDIA A40')
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from agentgym_runtime.recording.files import atomic_write_json
from agentgym_runtime.trainers.backends.manifest import ResultVerificationError, verify_manifest
from agentgym_runtime.trainers.base import TrainingJobSpec

JOB_MODULE = "agentgym_runtime.trainers.job"
RUNNER_MODULE = "agentgym_runtime.trainers.backends.runner"

#: The job's result did not match the sha256 manifest it wrote (or had none): never registered.
EXIT_UNVERIFIED = 4
#: The backend lost the job or never started it (refused key, dropped connection, budget, provider error).
EXIT_BACKEND = 5
#: The runner killed the job at its own deadline (the serving side was gone or late).
EXIT_DEADLINE = 124


@dataclass(slots=True)
class RunInfo:
    """Where and at what price a job ran: what ``training_runs`` records about the backend.

    Attributes:
        backend: The backend's name (``local``, ``ssh``, ``ray``, ``runpod``, ``lambda``).
        choice: Why this backend was chosen (``gpu="auto"`` records each step).
        host: Where the job ran (``user@host:port``, the Ray address, the instance id).
        gpu_type: The GPU the provider reported, if any.
        hourly_usd: The machine's price per hour, if rented.
        duration_s: How long the machine (or the job) ran.
        failure: Why the backend failed the job, when it did (unreachable host, budget, ...).

    Example:
        >>> RunInfo(backend="local").cost_usd is None
        True
    """

    backend: str
    choice: str | None = None
    host: str | None = None
    gpu_type: str | None = None
    hourly_usd: float | None = None
    duration_s: float | None = None
    failure: str | None = None

    @property
    def cost_usd(self) -> float | None:
        """``hourly_usd x duration``, rounded to the cent's hundredth; ``None`` when not rented."""
        if self.hourly_usd is None or self.duration_s is None:
            return None
        return round(self.hourly_usd * self.duration_s / 3600.0, 4)

    def columns(self) -> dict[str, Any]:
        """The ``training_runs`` columns this fills (see ``collectors/schema.py``)."""
        return {
            "backend": self.backend,
            "backend_choice": self.choice,
            "backend_host": self.host,
            "gpu_type": self.gpu_type,
            "hourly_usd": self.hourly_usd,
            "duration_s": self.duration_s,
            "cost_usd": self.cost_usd,
        }

    def as_dict(self) -> dict[str, Any]:
        """Every field plus the cost (for status files and the CLI)."""
        return {**asdict(self), "cost_usd": self.cost_usd}


@runtime_checkable
class JobHandle(Protocol):
    """A submitted training job."""

    run_id: str
    output_dir: Path

    def poll(self) -> int | None:
        """The job's exit code, or ``None`` while it runs."""
        ...

    def wait(self, timeout_s: float | None = None) -> int | None:
        """Wait up to ``timeout_s`` seconds; the exit code, or ``None`` if it still runs."""
        ...

    def cancel(self, grace_s: float = 5.0) -> None:
        """Stop the job (politely, then forcibly after ``grace_s``); no-op once it ended."""
        ...

    def log_tail(self, max_chars: int = 4000) -> str:
        """The end of the job's combined stdout/stderr."""
        ...

    def progress(self) -> tuple[float, str] | None:
        """The job's last progress report ``(fraction, message)``, if any."""
        ...

    def info(self) -> RunInfo:
        """Where the job ran, at what price, and why the backend failed it (if it did)."""
        ...


@runtime_checkable
class Backend(Protocol):
    """Starts training jobs somewhere."""

    name: str

    def submit(self, spec: TrainingJobSpec) -> JobHandle:
        """Start the job ``spec`` describes and return its handle."""
        ...


def read_tail(path: str | Path, max_chars: int = 4000) -> str:
    """The last ``max_chars`` characters of a text file ('' if it does not exist).

    Example:
        >>> read_tail("/nonexistent.log")
        ''
    """
    try:
        with Path(path).open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_chars * 4))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return text[-max_chars:]


def write_error(output_dir: str | Path, kind: str, message: str, error_type: str = "BackendError") -> None:
    """Write ``error.json`` the way the job does, so the scheduler reports a backend failure alike.

    Example:
        >>> import tempfile
        >>> out = tempfile.mkdtemp()
        >>> write_error(out, "backend", "ssh: key refused")
        >>> import json
        >>> json.loads((Path(out) / "error.json").read_text())["message"]
        'ssh: key refused'
    """
    from agentgym_runtime.trainers.job import ERROR_NAME

    directory = Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_json(directory / ERROR_NAME, {"kind": kind, "type": error_type, "message": message})


def append_log(output_dir: str | Path, line: str) -> None:
    """Add one ``[backend]`` line to the local ``job.log`` (what the backend did, for the log tail)."""
    from agentgym_runtime.trainers.job import LOG_NAME

    directory = Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / LOG_NAME).open("a", encoding="utf-8") as log:
        log.write(f"[backend] {line.rstrip()}\n")


def job_environment(spec: TrainingJobSpec, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The variables every backend sets for the job: unbuffered output, GPUs hidden for ``device="cpu"``.

    Example:
        >>> spec = TrainingJobSpec(run_id="r", agent="a", trainer="demos", snapshot_dir="s",
        ...                        output_dir="o", device="cpu")
        >>> job_environment(spec)["CUDA_VISIBLE_DEVICES"]
        ''
    """
    environ = {"PYTHONUNBUFFERED": "1"}
    if spec.device == "cpu":
        environ["CUDA_VISIBLE_DEVICES"] = ""
    environ.update(extra or {})
    return environ


class BackendJobHandle:
    """What the handles of the backends that run a job away from this process share (ssh, ray, cloud).

    The outcome is set once by :meth:`_finish_with`; :meth:`poll`/:meth:`wait` read it, and a
    backend failure is written the same way everywhere (``error.json`` plus a ``[backend]`` log
    line). Subclasses set ``_started`` when the job (or the rented machine) starts.

    Example:
        >>> # handles come from a backend's submit(spec)
    """

    def __init__(self, spec: TrainingJobSpec) -> None:
        self.spec = spec
        self.run_id = spec.run_id
        self.output_dir = Path(spec.output_dir)
        self.failure: str | None = None
        self.cancelled = False
        self._code: int | None = None
        self._done = threading.Event()
        self._started: float | None = None
        self._ended: float | None = None

    # --- the JobHandle contract ------------------------------------------------------------
    def poll(self) -> int | None:
        """The exit code once the job ended and the backend is done with it (outputs fetched and verified)."""
        return self._code if self._done.is_set() else None

    def wait(self, timeout_s: float | None = None) -> int | None:
        """Wait up to ``timeout_s`` seconds for :meth:`poll` to have a code."""
        self._done.wait(timeout_s)
        return self.poll()

    def log_tail(self, max_chars: int = 4000) -> str:
        """The end of the local ``job.log`` (the backend's own lines and the job's mirrored log)."""
        from agentgym_runtime.trainers.job import LOG_NAME

        return read_tail(self.output_dir / LOG_NAME, max_chars)

    def progress(self) -> tuple[float, str] | None:
        """The job's last progress report (mirrored into the local ``progress.jsonl``)."""
        from agentgym_runtime.trainers.job import PROGRESS_NAME, read_progress

        return read_progress(self.output_dir / PROGRESS_NAME)

    @property
    def failure_reason(self) -> str | None:
        """Why the backend (not the trainer) failed the job, if it did."""
        return self.failure

    # --- shared by the lifecycles -------------------------------------------------------------
    def _stopping(self) -> bool:
        """Whether :meth:`cancel` (another thread) asked to stop."""
        return self.cancelled

    def _elapsed_s(self) -> float | None:
        """How long the job (or machine) ran so far, or in all once ended; ``None`` before it started."""
        if self._started is None:
            return None
        end = self._ended if self._ended is not None else time.monotonic()
        return round(end - self._started, 3)

    def _record_failure(self, failure: str) -> None:
        """Keep the backend's reason, in ``error.json`` and the log as the job would."""
        self.failure = failure
        write_error(self.output_dir, "backend", failure)
        append_log(self.output_dir, failure)

    def _finish_with(self, code: int, failure: str | None = None) -> None:
        """Record the outcome (and the backend's reason) and release the waiters."""
        if failure is not None:
            self._record_failure(failure)
        self._code = code
        if self._ended is None:  # a backend may have ended the clock earlier (the machine's termination)
            self._ended = time.monotonic()
        self._done.set()

    def _verify_outputs(self, code: int) -> int:
        """A successful job's outputs checked against its sha256 manifest; ``EXIT_UNVERIFIED`` if they differ."""
        if code != 0:
            return code
        try:
            checked = verify_manifest(self.output_dir)
        except ResultVerificationError as exc:
            self.failure = f"result rejected: {exc}"
            write_error(self.output_dir, "unverified", self.failure, "ResultVerificationError")
            append_log(self.output_dir, self.failure)
            return EXIT_UNVERIFIED
        append_log(self.output_dir, f"sha256 of {checked} output files verified against the job's manifest")
        return code
