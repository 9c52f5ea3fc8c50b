"""The :class:`LocalBackend`: training jobs as subprocesses of the serving machine.

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

from agentgym_runtime.trainers.backends.base import JOB_MODULE, RunInfo, job_environment, read_tail
from agentgym_runtime.trainers.base import TrainingJobSpec
from agentgym_runtime.trainers.job import LOG_NAME, PROGRESS_NAME, SPEC_NAME, read_progress


class LocalJobHandle:
    """A job running as a local subprocess (in its own process group).

    Example:
        >>> # handles come from LocalBackend.submit(spec)
    """

    def __init__(
        self, run_id: str, output_dir: Path, process: subprocess.Popen[bytes], choice: str | None = None
    ) -> None:
        self.run_id = run_id
        self.output_dir = output_dir
        self.process = process
        self.cancelled = False
        self.choice = choice
        self.started = time.monotonic()
        self.ended: float | None = None

    @property
    def pid(self) -> int:
        """The job process's id (also its process group id)."""
        return self.process.pid

    def poll(self) -> int | None:
        """The exit code, or ``None`` while it runs."""
        return self._ended(self.process.poll())

    def wait(self, timeout_s: float | None = None) -> int | None:
        """Wait up to ``timeout_s`` seconds for the exit code."""
        try:
            return self._ended(self.process.wait(timeout_s))
        except subprocess.TimeoutExpired:
            return None

    def _ended(self, code: int | None) -> int | None:
        if code is not None and self.ended is None:
            self.ended = time.monotonic()
        return code

    def info(self) -> RunInfo:
        """This machine, and how long the job ran."""
        end = self.ended if self.ended is not None else time.monotonic()
        return RunInfo(backend="local", choice=self.choice, host="localhost", duration_s=round(end - self.started, 3))

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

    def __init__(
        self, python: str | None = None, env: Mapping[str, str] | None = None, choice: str | None = None
    ) -> None:
        self.python = python or sys.executable
        self.env = dict(env or {})
        self.choice = choice

    def environment(self, spec: TrainingJobSpec) -> dict[str, str]:
        """The job's environment: ours, the import path, the device switch, then ``env``."""
        environ = dict(os.environ)
        environ.update(job_environment(spec))
        if self.python == sys.executable:
            inherited = [p for p in sys.path if p and os.path.isdir(p)]
            if environ.get("PYTHONPATH"):
                inherited.append(environ["PYTHONPATH"])
            environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(inherited))
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
        return LocalJobHandle(spec.run_id, output_dir, process, choice=self.choice)
