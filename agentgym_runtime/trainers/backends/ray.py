"""The ``ray`` backend: submit the job to an existing Ray cluster through the Ray Jobs API.

The snapshot and the spec go in the job's ``working_dir`` (Ray uploads it), the job's
dependencies in its runtime environment (``pip``, ``py_modules``), and the GPUs it needs are
requested with ``entrypoint_num_gpus``, so Ray places it on a node that has them. The log is
tailed with ``get_job_logs`` (progress parsed from it); because the Jobs API returns logs but
no files, the runner prints the outputs as a base64 tar between markers at the end, which is
unpacked locally and checked against the job's sha256 manifest. Cancel is ``stop_job``.

Example:
    >>> RayBackend("http://127.0.0.1:8265", num_gpus=1).name
    'ray'
"""

from __future__ import annotations

import base64
import io
import re
import shutil
import tarfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agentgym_runtime.errors import MissingExtraError
from agentgym_runtime.trainers.backends.base import (
    EXIT_BACKEND,
    RUNNER_MODULE,
    BackendJobHandle,
    RunInfo,
    append_log,
    job_environment,
    read_tail,
)
from agentgym_runtime.trainers.backends.runner import PACK_BEGIN, PACK_END
from agentgym_runtime.trainers.base import TrainingJobSpec
from agentgym_runtime.trainers.job import LOG_NAME, SPEC_NAME

_PROGRESS = re.compile(r"^\[progress\] (\d+)% (.*)$", re.MULTILINE)
_EXIT = re.compile(r"^\[runner\] exit code (-?\d+)$", re.MULTILINE)
_TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def _client(address: str) -> Any:
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as exc:  # pragma: no cover - ray is in the lock
        raise MissingExtraError("ray backend", "ray", "ray") from exc
    return JobSubmissionClient(address)


class RayBackend:
    """Run training jobs on a Ray cluster.

    Args:
        address: The cluster's dashboard/Jobs API address (``http://head:8265``).
        num_gpus: GPUs requested per job (``entrypoint_num_gpus``).
        num_cpus: CPUs requested per job.
        python: The interpreter on the cluster's nodes.
        pip: Packages installed into the job's runtime environment.
        py_modules: Local packages shipped with the job (e.g. your trainer's package).
        env: Variables for the job.
        max_runtime_s: The runner's deadline.
        poll_interval_s: How often status and logs are read.
        choice: Why this backend was chosen.
    """

    name = "ray"

    def __init__(
        self,
        address: str,
        *,
        num_gpus: float = 1.0,
        num_cpus: float = 1.0,
        python: str = "python",
        pip: Sequence[str] = (),
        py_modules: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        max_runtime_s: float = 6 * 3600.0,
        poll_interval_s: float = 1.0,
        choice: str | None = None,
    ) -> None:
        self.address = address
        self.num_gpus = num_gpus
        self.num_cpus = num_cpus
        self.python = python
        self.pip = list(pip)
        self.py_modules = list(py_modules)
        self.env = dict(env or {})
        self.max_runtime_s = max_runtime_s
        self.poll_interval_s = poll_interval_s
        self.choice = choice

    def check(self, timeout_s: float = 10.0) -> str:
        """Ask the cluster for its jobs; a sentence, or ``ConnectionError`` saying why not."""
        try:
            jobs = _client(self.address).list_jobs()
        except Exception as exc:
            raise ConnectionError(f"ray {self.address}: {type(exc).__name__}: {exc}") from None
        return f"ray {self.address}: reachable ({len(jobs)} job(s) known)"

    def runtime_env(self, working_dir: Path, spec: TrainingJobSpec) -> dict[str, Any]:
        """The job's runtime environment: working dir, variables, dependencies."""
        runtime_env: dict[str, Any] = {"working_dir": str(working_dir), "env_vars": job_environment(spec, self.env)}
        if self.pip:
            runtime_env["pip"] = list(self.pip)
        if self.py_modules:
            runtime_env["py_modules"] = list(self.py_modules)
        return runtime_env

    def submit(self, spec: TrainingJobSpec) -> RayJobHandle:
        """Stage the snapshot and spec, submit the job, and follow it in the background."""
        output_dir = Path(spec.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / SPEC_NAME).write_text(spec.model_dump_json(indent=2))
        staging = output_dir.parent / f".{spec.run_id}-ray"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(spec.snapshot_dir, staging / "snapshot")
        updates: dict[str, Any] = {"snapshot_dir": "snapshot", "output_dir": "out"}
        if spec.base_adapter:
            shutil.copytree(spec.base_adapter, staging / "base_adapter")
            updates["base_adapter"] = "base_adapter"
        (staging / "out").mkdir()
        (staging / "out" / SPEC_NAME).write_text(spec.model_copy(update=updates).model_dump_json(indent=2))
        deadline = time.time() + self.max_runtime_s
        entrypoint = f"{self.python} -m {RUNNER_MODULE} --spec out/{SPEC_NAME} --deadline {deadline:.0f} --pack"
        handle = RayJobHandle(self, spec, staging)
        try:
            client = _client(self.address)
            handle.job_id = client.submit_job(
                entrypoint=entrypoint,
                submission_id=f"agentgym-{spec.run_id}",
                runtime_env=self.runtime_env(staging, spec),
                entrypoint_num_gpus=self.num_gpus or None,
                entrypoint_num_cpus=self.num_cpus,
                metadata={"agentgym_run": spec.run_id, "agent": spec.agent},
            )
        except Exception as exc:
            handle.finish(EXIT_BACKEND, f"ray {self.address}: submit failed: {type(exc).__name__}: {exc}")
            return handle
        append_log(output_dir, f"submitted ray job {handle.job_id} to {self.address} ({self.num_gpus:g} GPU)")
        handle.client = client
        handle.start()
        return handle


class RayJobHandle(BackendJobHandle):
    """A job on a Ray cluster (see :class:`RayBackend`)."""

    def __init__(self, backend: RayBackend, spec: TrainingJobSpec, staging: Path) -> None:
        super().__init__(spec)
        self.backend = backend
        self.staging = staging
        self.job_id: str | None = None
        self.client: Any = None
        self._logs = ""
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._follow, name=f"agentgym-ray-{spec.run_id}", daemon=True)

    def start(self) -> None:
        """Follow the job on a thread."""
        self._thread.start()

    def cancel(self, grace_s: float = 5.0) -> None:
        """``stop_job``, then wait for Ray to report it stopped."""
        if self._done.is_set():
            return
        self.cancelled = True
        try:
            self.client.stop_job(self.job_id)
        except Exception as exc:
            append_log(self.output_dir, f"ray stop_job failed: {exc}")
        self._done.wait(grace_s + 30.0)

    def progress(self) -> tuple[float, str] | None:
        """The last ``[progress]`` line of the log (Ray returns the log, not the job's files)."""
        found = _PROGRESS.findall(self._logs)
        return (int(found[-1][0]) / 100.0, found[-1][1]) if found else None

    def info(self) -> RunInfo:
        """The cluster, the job id and how long it ran."""
        return RunInfo(
            backend="ray",
            choice=self.backend.choice,
            host=f"{self.backend.address} job {self.job_id}",
            duration_s=self._elapsed_s(),
            failure=self.failure,
        )

    def finish(self, code: int, failure: str | None = None) -> None:
        """Remove the staging copy, record the outcome (and the backend's reason) and release waiters."""
        shutil.rmtree(self.staging, ignore_errors=True)
        self._finish_with(code, failure)

    def _write_log(self) -> None:
        visible = self._logs
        if PACK_BEGIN in visible:
            head, _, rest = visible.partition(PACK_BEGIN)
            visible = head + rest.partition(PACK_END)[2]
        local = self.output_dir / LOG_NAME
        own = "".join(line for line in read_tail(local, 1 << 20).splitlines(True) if line.startswith("[backend]"))
        local.write_text(own + visible)

    def _follow(self) -> None:
        try:
            while True:
                status = str(self.client.get_job_status(self.job_id)).split(".")[-1]
                self._logs = str(self.client.get_job_logs(self.job_id))
                self._write_log()
                if status in _TERMINAL:
                    break
                time.sleep(self.backend.poll_interval_s)
        except Exception as exc:
            self.finish(EXIT_BACKEND, f"ray {self.backend.address}: lost the job: {type(exc).__name__}: {exc}")
            return
        if status == "STOPPED" or self.cancelled:
            self.finish(-15)
            return
        self.finish(self._unpack(status))

    def _unpack(self, status: str) -> int:
        if PACK_BEGIN not in self._logs:
            self._record_failure(f"ray job {self.job_id} ended {status} without its outputs (see the log)")
            return EXIT_BACKEND
        payload = self._logs.partition(PACK_BEGIN)[2].partition(PACK_END)[0].strip()
        with tarfile.open(fileobj=io.BytesIO(base64.b64decode(payload)), mode="r:gz") as archive:
            archive.extractall(self.output_dir, filter="data")  # refuses absolute paths, links out, devices
        found = _EXIT.findall(self._logs)
        code = int(found[-1]) if found else (0 if status == "SUCCEEDED" else 1)
        return self._verify_outputs(code)
