"""Where training jobs run: the :class:`Backend` interface and the :class:`LocalBackend`.

A backend takes a :class:`~agentgym_runtime.trainers.base.TrainingJobSpec` and
starts ``python -m agentgym_runtime.trainers.job --spec <output_dir>/spec.json``
somewhere; it returns a :class:`JobHandle` to poll, wait on, cancel, and read the
log tail and the progress of the job. Only files in ``output_dir`` cross the
boundary, so remote backends (SSH host, Ray cluster, provisioned GPU machine)
only need to move that directory and the snapshot.

:class:`LocalBackend` runs the job as a subprocess of the serving process, in a
process group of its own (a timeout or a cancel kills the whole group), with its
output in ``output_dir/job.log``. It uses the serving process's Python and import
path by default (so your own trainers import the same way), or a configured
interpreter. A spec with ``device="cpu"`` hides every GPU (``CUDA_VISIBLE_DEVICES=""``);
``"cuda"`` and ``"auto"`` leave CUDA visible.

Example:
    >>> backend = LocalBackend()
    >>> backend.name, backend.python == sys.executable
    ('local', True)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

from agentgym_runtime.trainers.base import TrainingJobSpec
from agentgym_runtime.trainers.job import LOG_NAME, PROGRESS_NAME, SPEC_NAME, read_progress

JOB_MODULE = "agentgym_runtime.trainers.job"


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


class LocalJobHandle:
    """A job running as a local subprocess (in its own process group).

    Example:
        >>> # handles come from LocalBackend.submit(spec)
    """

    def __init__(self, run_id: str, output_dir: Path, process: subprocess.Popen[bytes]) -> None:
        self.run_id = run_id
        self.output_dir = output_dir
        self.process = process
        self.cancelled = False

    @property
    def pid(self) -> int:
        """The job process's id (also its process group id)."""
        return self.process.pid

    def poll(self) -> int | None:
        """The exit code, or ``None`` while it runs."""
        return self.process.poll()

    def wait(self, timeout_s: float | None = None) -> int | None:
        """Wait up to ``timeout_s`` seconds for the exit code."""
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def cancel(self, grace_s: float = 5.0) -> None:
        """SIGTERM the job's process group, then SIGKILL it after ``grace_s`` seconds."""
        if self.process.poll() is not None:
            return
        self.cancelled = True
        self._signal(signal.SIGTERM)
        if self.wait(grace_s) is None:
            self._signal(signal.SIGKILL)
            self.process.wait()
        # Children left in the group (a trainer's workers) go too.
        self._signal(signal.SIGKILL)

    def _signal(self, signum: signal.Signals) -> None:
        try:
            os.killpg(self.process.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def log_tail(self, max_chars: int = 4000) -> str:
        """The end of ``job.log``."""
        return read_tail(self.output_dir / LOG_NAME, max_chars)

    def progress(self) -> tuple[float, str] | None:
        """The last line of ``progress.jsonl``."""
        return read_progress(self.output_dir / PROGRESS_NAME)


class LocalBackend:
    """Run training jobs as subprocesses of this machine.

    Args:
        python: Interpreter for the job (default: this process's). With the default, the
            job also gets this process's import path, so user trainers import as they do here.
        env: Extra environment variables for the job.

    Example:
        >>> LocalBackend(python="/usr/bin/python3", env={"HF_HUB_OFFLINE": "1"}).python
        '/usr/bin/python3'
    """

    name = "local"

    def __init__(self, python: str | None = None, env: Mapping[str, str] | None = None) -> None:
        self.python = python or sys.executable
        self.env = dict(env or {})

    def environment(self, spec: TrainingJobSpec) -> dict[str, str]:
        """The job's environment: ours, the import path, the device switch, then ``env``."""
        environ = dict(os.environ)
        environ["PYTHONUNBUFFERED"] = "1"
        if self.python == sys.executable:
            inherited = [p for p in sys.path if p and os.path.isdir(p)]
            if environ.get("PYTHONPATH"):
                inherited.append(environ["PYTHONPATH"])
            environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(inherited))
        if spec.device == "cpu":
            environ["CUDA_VISIBLE_DEVICES"] = ""
        environ.update(self.env)
        return environ

    def submit(self, spec: TrainingJobSpec) -> LocalJobHandle:
        """Write ``spec.json`` into ``output_dir`` and start the job process."""
        output_dir = Path(spec.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        spec_path = output_dir / SPEC_NAME
        spec_path.write_text(spec.model_dump_json(indent=2))
        with (output_dir / LOG_NAME).open("ab") as log:
            log.write(
                f"[backend] {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {self.python} -m {JOB_MODULE}\n".encode()
            )
            log.flush()
            process = subprocess.Popen(
                [self.python, "-m", JOB_MODULE, "--spec", str(spec_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(spec),
                start_new_session=True,  # its own process group: killed as a whole, deaf to our Ctrl-C
            )
        return LocalJobHandle(spec.run_id, output_dir, process)
