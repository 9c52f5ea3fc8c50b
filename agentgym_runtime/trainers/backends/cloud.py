"""Rented GPU machines: provision, run over SSH, and always terminate (shared by RunPod and Lambda).

A :class:`CloudBackend` job, on a thread of its own so ``submit`` returns at once:

1. refuses to start when the run could pass the per-run or per-day budget (the machine's
   maximum hourly price x the job's maximum runtime, plus today's spending in
   ``<home>/backends/spend.jsonl``);
2. launches an instance named ``agentgym-<run_id>`` (the tag ``agentgym backends cleanup`` looks
   for) and writes a lease ``<home>/backends/leases/<provider>-<id>.json``;
3. waits until the provider reports it running with an address, refuses it if its price is
   above the user's maximum, and waits until SSH answers;
4. runs the job there with the :mod:`.ssh` backend (same code: copy, runner, mirror, fetch,
   sha256 check), the runner's deadline set to stop the machine by itself;
5. **terminates the instance in every case** (success, failure, cancel, timeout, provider
   errors), confirms it, removes the lease, and records GPU type, hourly price, duration and
   cost on the run and in the spending ledger.

If the serving process dies (SIGKILL) mid-job, the runner on the machine kills the job at
its deadline and runs the provider's self-stop command, and ``agentgym backends cleanup``
terminates instances tagged ``agentgym-`` whose lease is not
held by a live process.

Example:
    >>> estimate_cost(hourly_usd=0.79, runtime_s=1800)
    0.395
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import httpx

from agentgym_runtime.errors import AgentGymError
from agentgym_runtime.recording.files import atomic_write_json
from agentgym_runtime.trainers.backends.base import EXIT_BACKEND, BackendJobHandle, RunInfo, append_log, write_error
from agentgym_runtime.trainers.base import TrainingJobSpec

INSTANCE_PREFIX = "agentgym-"


class ProviderError(AgentGymError, RuntimeError):
    """The provider's API refused or failed a request; the message carries its own error text."""


@dataclass(slots=True)
class Instance:
    """A provider's machine, in provider-neutral terms.

    ``status`` is one of ``pending``, ``running``, ``failed``, ``terminated``.
    """

    id: str
    name: str
    status: str
    host: str | None = None
    ssh_port: int = 22
    gpu_type: str | None = None
    hourly_usd: float | None = None


class Provider(Protocol):
    """One GPU cloud's API (see :mod:`.runpod` and :mod:`.lambda_cloud`)."""

    name: str
    ssh_user: str
    self_stop_command: str | None
    max_hourly_usd: float

    def launch(self, name: str, public_key: str) -> str:
        """Create a machine; its id."""
        ...

    def get(self, instance_id: str) -> Instance:
        """The machine's current state."""
        ...

    def terminate(self, instance_id: str) -> None:
        """Terminate it (no error if already gone)."""
        ...

    def list_instances(self) -> list[Instance]:
        """Every machine of the account."""
        ...


def estimate_cost(hourly_usd: float, runtime_s: float) -> float:
    """``hourly x hours``, rounded to 4 decimals."""
    return round(hourly_usd * runtime_s / 3600.0, 4)


def error_message(response: httpx.Response) -> str:
    """The provider's own error text from its body (``{"error": {"message", "suggestion"}}`` and kin).

    Example:
        >>> r = httpx.Response(400, json={"error": {"code": "x", "message": "no capacity", "suggestion": "retry"}})
        >>> error_message(r)
        'no capacity (retry)'
    """
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            message = str(error.get("message") or error.get("code") or error)
            suggestion = error.get("suggestion")
            return f"{message} ({suggestion})" if suggestion else message
        if error:
            return str(error)
    return str(body)[:300]


class ApiClient:
    """JSON over HTTPS with a bearer token, spacing requests and honouring ``429 Retry-After``.

    Args:
        provider: Name used in error messages.
        base_url: The API's root.
        token: The API key (from the environment or keyring; never logged).
        min_interval_s: Least time between two requests (Lambda allows 1 request/s).
        max_retries: Retries of a 429 or 5xx answer.

    Example:
        >>> ApiClient("lambda", "https://cloud.lambdalabs.com", "k").base_url
        'https://cloud.lambdalabs.com'
    """

    def __init__(
        self, provider: str, base_url: str, token: str, *, min_interval_s: float = 0.0, max_retries: int = 5
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.min_interval_s = min_interval_s
        self.max_retries = max_retries
        self._client = httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30.0)
        self._last = 0.0
        self._lock = threading.Lock()
        self.retries = 0

    def request(self, method: str, path: str, body: Mapping[str, Any] | None = None, ok_404: bool = False) -> Any:
        """Send one request; the decoded JSON (``None`` for an empty body).

        Raises:
            ProviderError: A 4xx (with the provider's message), or 429/5xx after the retries.
        """
        for attempt in range(self.max_retries + 1):
            with self._lock:
                wait = self._last + self.min_interval_s - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                try:
                    response = self._client.request(method, path, json=dict(body) if body is not None else None)
                except httpx.HTTPError as exc:
                    raise ProviderError(f"{self.provider} {method} {path}: {type(exc).__name__}: {exc}") from None
                finally:
                    self._last = time.monotonic()
            if response.status_code == 404 and ok_404:
                return None
            retryable = response.status_code == 429 or response.status_code >= 500
            if retryable and attempt < self.max_retries:
                self.retries += 1
                time.sleep(_retry_after(response, attempt))
                continue
            if response.status_code >= 400:
                raise ProviderError(
                    f"{self.provider} {method} {path}: HTTP {response.status_code}: {error_message(response)}"
                )
            return response.json() if response.content else None
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()


def _retry_after(response: httpx.Response, attempt: int) -> float:
    try:
        value = float(str(response.headers.get("Retry-After", "")))
        return min(30.0, max(0.0, value))
    except ValueError:
        return min(30.0, 0.5 * 2.0**attempt)


# --- leases and spending -----------------------------------------------------------------------


def backends_dir(home: str | Path) -> Path:
    """``<home>/backends``: leases of rented machines and the spending ledger."""
    return Path(home) / "backends"


def write_lease(home: str | Path, provider: str, instance_id: str, run_id: str) -> Path:
    """Record that this process rents ``instance_id`` (so cleanup leaves it alone while we live)."""
    directory = backends_dir(home) / "leases"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{provider}-{instance_id}.json"
    atomic_write_json(
        path,
        {
            "provider": provider,
            "instance_id": instance_id,
            "run_id": run_id,
            "pid": os.getpid(),
            "created_at": datetime.now(UTC).isoformat(),
        },
    )
    return path


def read_leases(home: str | Path) -> list[dict[str, Any]]:
    """Every lease file's content (with its ``path``)."""
    leases = []
    for path in sorted((backends_dir(home) / "leases").glob("*.json")):
        try:
            lease = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(lease, dict):
            leases.append({**lease, "path": str(path)})
    return leases


def _alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True


def record_spend(home: str | Path, run_id: str, provider: str, cost_usd: float) -> None:
    """Append one run's cost to ``<home>/backends/spend.jsonl``."""
    directory = backends_dir(home)
    directory.mkdir(parents=True, exist_ok=True)
    line = json.dumps(
        {"run_id": run_id, "provider": provider, "day": datetime.now(UTC).date().isoformat(), "cost_usd": cost_usd}
    )
    with (directory / "spend.jsonl").open("a", encoding="utf-8") as ledger:
        ledger.write(line + "\n")


def spent_today(home: str | Path) -> float:
    """What rented machines cost today (UTC) according to the ledger."""
    today = datetime.now(UTC).date().isoformat()
    total = 0.0
    try:
        lines = (backends_dir(home) / "spend.jsonl").read_text().splitlines()
    except OSError:
        return 0.0
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("day") == today:
            total += float(entry.get("cost_usd") or 0.0)
    return round(total, 4)


def budget_refusal(
    home: str | Path, hourly_usd: float, runtime_s: float, per_run: float | None, per_day: float | None
) -> str | None:
    """Why a run must not start (it could pass a budget), or ``None``.

    Example:
        >>> import tempfile
        >>> budget_refusal(tempfile.mkdtemp(), 2.0, 3600, per_run=1.0, per_day=None)
        'budget: this run may cost up to $2.00 ($2.00/h for at most 1.00h), over the per-run budget of $1.00'
    """
    worst = estimate_cost(hourly_usd, runtime_s)
    detail = f"${worst:.2f} (${hourly_usd:.2f}/h for at most {runtime_s / 3600:.2f}h)"
    if per_run is not None and worst > per_run:
        return f"budget: this run may cost up to {detail}, over the per-run budget of ${per_run:.2f}"
    if per_day is not None:
        spent = spent_today(home)
        if spent + worst > per_day:
            return (
                f"budget: ${spent:.2f} spent today plus up to {detail} for this run would pass "
                f"the per-day budget of ${per_day:.2f}"
            )
    return None


def cleanup_leftovers(provider: Provider, home: str | Path, force: bool = False) -> list[str]:
    """Terminate the provider's ``agentgym-`` machines not held by a live process here; their ids.

    A lease whose process is alive (a job running right now) protects its machine unless ``force``.
    """
    leases = {(lease.get("provider"), lease.get("instance_id")): lease for lease in read_leases(home)}
    terminated = []
    for instance in provider.list_instances():
        if not instance.name.startswith(INSTANCE_PREFIX) or instance.status == "terminated":
            continue
        lease = leases.get((provider.name, instance.id))
        if lease is not None and _alive(lease.get("pid")) and not force:
            continue
        provider.terminate(instance.id)
        terminated.append(instance.id)
        if lease is not None:
            Path(lease["path"]).unlink(missing_ok=True)
    for (name, instance_id), lease in leases.items():  # leases of machines the provider no longer has
        if name == provider.name and instance_id not in terminated and not _alive(lease.get("pid")):
            try:
                gone = provider.get(str(instance_id)).status == "terminated"
            except ProviderError:
                gone = True
            if gone:
                Path(lease["path"]).unlink(missing_ok=True)
    return terminated


# --- the backend ----------------------------------------------------------------------------------


class CloudBackend:
    """Run each job on a freshly rented machine, terminated afterwards whatever happens.

    Args:
        provider: The cloud's API (:class:`~.runpod.RunPodProvider`, :class:`~.lambda_cloud.LambdaProvider`).
        home: The runtime's home (leases, spending ledger).
        key_path: The private key whose public half the machine accepts.
        python: The interpreter on the machine.
        env: Variables for the job on the machine.
        max_runtime_s: The job's deadline on the machine (also the budget's runtime).
        budget_per_run_usd: Refuse a run that could cost more.
        budget_per_day_usd: Refuse a run that could bring today's total above this.
        ready_timeout_s: Give up (and terminate) when the machine is not reachable by then.
        poll_interval_s: How often the provider is asked about the machine.
        on_deadline: What the runner runs on the machine at its deadline (default: the provider's
            self-stop command).
        workdir: Where job directories are created on the machine.
        choice: Why this backend was chosen.

    Example:
        >>> # CloudBackend(RunPodProvider.from_settings(settings), home=settings.home, key_path=...)
    """

    def __init__(
        self,
        provider: Provider,
        *,
        home: str | Path,
        key_path: str,
        python: str = "python3",
        env: Mapping[str, str] | None = None,
        max_runtime_s: float = 6 * 3600.0,
        budget_per_run_usd: float | None = None,
        budget_per_day_usd: float | None = None,
        ready_timeout_s: float = 900.0,
        poll_interval_s: float = 5.0,
        ssh_poll_interval_s: float = 0.5,
        on_deadline: str | None = None,
        workdir: str = "~/.agentgym/jobs",
        choice: str | None = None,
    ) -> None:
        self.provider = provider
        self.workdir = workdir
        self.name = provider.name
        self.home = Path(home)
        self.key_path = str(Path(key_path).expanduser())
        self.python = python
        self.env = dict(env or {})
        self.max_runtime_s = max_runtime_s
        self.budget_per_run_usd = budget_per_run_usd
        self.budget_per_day_usd = budget_per_day_usd
        self.ready_timeout_s = ready_timeout_s
        self.poll_interval_s = poll_interval_s
        self.ssh_poll_interval_s = ssh_poll_interval_s
        self.on_deadline = on_deadline if on_deadline is not None else provider.self_stop_command
        self.choice = choice

    def public_key(self) -> str:
        """The OpenSSH public key of ``key_path`` (what the machine must accept)."""
        import asyncssh

        key = asyncssh.read_private_key(self.key_path, os.environ.get("AGENTGYM_SSH_KEY_PASSPHRASE"))
        return key.export_public_key().decode().strip()

    def submit(self, spec: TrainingJobSpec) -> CloudJobHandle:
        """Provision, run and terminate in the background; the handle follows it."""
        handle = CloudJobHandle(self, spec)
        handle.start()
        return handle


class CloudJobHandle(BackendJobHandle):
    """A job on a rented machine (see :class:`CloudBackend`).

    Example:
        >>> # handles come from CloudBackend.submit(spec)
    """

    def __init__(self, backend: CloudBackend, spec: TrainingJobSpec) -> None:
        super().__init__(spec)
        self.backend = backend
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.instance_id: str | None = None
        self.instance: Instance | None = None
        self.inner: Any = None  # the SSHJobHandle, once the machine answers
        self.terminated = False
        # _started: the machine's launch; _ended: its confirmed termination (what the bill counts)
        self._thread = threading.Thread(
            target=self._lifecycle, name=f"agentgym-{backend.name}-{spec.run_id}", daemon=True
        )
        self.on_started: Callable[[CloudJobHandle], None] | None = None

    def start(self) -> None:
        """Start the lifecycle thread."""
        self._thread.start()

    # --- the JobHandle contract (poll and wait: once the job ended *and* the machine was terminated)
    def cancel(self, grace_s: float = 5.0) -> None:
        """Stop the job on the machine (or the provisioning), then terminate the machine."""
        if self._done.is_set():
            return
        self.cancelled = True
        inner = self.inner
        if inner is not None:
            inner.cancel(grace_s)
        self._done.wait(grace_s + 120.0)

    def info(self) -> RunInfo:
        """GPU type, hourly price and how long the machine was rented (launch to termination)."""
        instance = self.instance
        return RunInfo(
            backend=self.backend.name,
            choice=self.backend.choice,
            host=f"{self.backend.name}:{self.instance_id}" if self.instance_id else None,
            gpu_type=instance.gpu_type if instance else None,
            hourly_usd=instance.hourly_usd if instance else None,
            duration_s=self._elapsed_s(),
            failure=self.failure,
        )

    # --- the lifecycle ----------------------------------------------------------------------
    def _log(self, line: str) -> None:
        append_log(self.output_dir, f"{self.backend.name}: {line}")

    def _fail(self, message: str) -> int:
        self.failure = f"{self.backend.name}: {message}"
        write_error(self.output_dir, "backend", self.failure)
        self._log(message)
        return EXIT_BACKEND

    def _lifecycle(self) -> None:
        backend = self.backend
        code = EXIT_BACKEND
        try:
            code = self._run()
        except ProviderError as exc:
            code = self._fail(str(exc))
        except Exception as exc:  # never leave without terminating
            code = self._fail(f"{type(exc).__name__}: {exc}")
        finally:
            self._terminate()
            info = self.info()
            if info.cost_usd is not None:
                record_spend(backend.home, self.run_id, backend.name, info.cost_usd)
            self._finish_with(code)

    def _run(self) -> int:
        backend, provider = self.backend, self.backend.provider
        refusal = budget_refusal(
            backend.home,
            provider.max_hourly_usd,
            backend.max_runtime_s,
            backend.budget_per_run_usd,
            backend.budget_per_day_usd,
        )
        if refusal is not None:
            return self._fail(refusal)
        if self.cancelled:
            return self._fail("cancelled before launch")
        name = f"{INSTANCE_PREFIX}{self.run_id}"
        self._log(f"launching {name}")
        self.instance_id = provider.launch(name, backend.public_key())
        self._started = time.monotonic()
        write_lease(backend.home, provider.name, self.instance_id, self.run_id)
        self._log(f"instance {self.instance_id} launched; waiting until it runs")
        instance = self._wait_running()
        if instance is None:
            return EXIT_BACKEND
        if instance.hourly_usd is not None and instance.hourly_usd > provider.max_hourly_usd:
            return self._fail(
                f"instance {self.instance_id} costs ${instance.hourly_usd:.2f}/h, above your maximum of "
                f"${provider.max_hourly_usd:.2f}/h; terminated"
            )
        from agentgym_runtime.trainers.backends.ssh import SSHBackend

        ssh = SSHBackend(
            str(instance.host),
            port=instance.ssh_port,
            user=provider.ssh_user,
            key_path=backend.key_path,
            trust_on_first_use=True,  # a new machine's host key is unknown until it answers
            python=backend.python,
            env=backend.env,
            max_runtime_s=backend.max_runtime_s,
            on_deadline=backend.on_deadline,
            workdir=backend.workdir,
            poll_interval_s=backend.ssh_poll_interval_s,
            name=backend.name,
            choice=backend.choice,
        )
        if not self._wait_ssh(ssh):
            return EXIT_BACKEND
        if self._stopping():
            return self._fail("cancelled before the job started")
        self._log(f"running the job on {ssh.target}")
        self.inner = ssh.submit(self.spec)
        if self.on_started is not None:
            self.on_started(self)
        if self._stopping():
            self.inner.cancel()
        code = int(self.inner.wait())
        if self.inner.failure:
            self.failure = f"{backend.name}: {self.inner.failure}"
        return code

    def _wait_running(self) -> Instance | None:
        provider = self.backend.provider
        deadline = time.monotonic() + self.backend.ready_timeout_s
        assert self.instance_id is not None
        while True:
            instance = provider.get(self.instance_id)
            self.instance = instance
            if instance.status == "running" and instance.host:
                self._log(
                    f"instance {instance.id} running at {instance.host}:{instance.ssh_port} "
                    f"({instance.gpu_type}, ${instance.hourly_usd}/h)"
                )
                return instance
            if instance.status in ("failed", "terminated"):
                self._fail(f"instance {instance.id} became {instance.status} before it ran")
                return None
            if self.cancelled:
                self._fail("cancelled while the machine was starting")
                return None
            if time.monotonic() >= deadline:
                self._fail(f"instance {instance.id} not running after {self.backend.ready_timeout_s:g}s")
                return None
            time.sleep(self.backend.poll_interval_s)

    def _wait_ssh(self, ssh: Any) -> bool:
        deadline = time.monotonic() + self.backend.ready_timeout_s
        while True:
            try:
                ssh.check(timeout_s=min(30.0, self.backend.ready_timeout_s))
                return True
            except ConnectionError as exc:
                if self.cancelled:
                    self._fail("cancelled while waiting for SSH")
                    return False
                if time.monotonic() >= deadline:
                    self._fail(f"SSH never answered: {exc}")
                    return False
            time.sleep(self.backend.poll_interval_s)

    def _terminate(self) -> None:
        """Terminate the instance and confirm it; retried, because a leftover bills by the hour."""
        if self.instance_id is None:
            return
        provider = self.backend.provider
        last: Exception | None = None
        for attempt in range(10):
            try:
                provider.terminate(self.instance_id)
                state = provider.get(self.instance_id).status
                if state == "terminated":
                    self.terminated = True
                    break
            except ProviderError as exc:
                last = exc
            time.sleep(min(10.0, self.backend.poll_interval_s * (attempt + 1)))
        self._ended = time.monotonic()
        if self.terminated:
            self._log(f"instance {self.instance_id} terminated")
            for lease in read_leases(self.backend.home):
                if lease.get("provider") == provider.name and lease.get("instance_id") == self.instance_id:
                    Path(lease["path"]).unlink(missing_ok=True)
        else:
            message = f"could not confirm termination of {self.instance_id} ({last}); run `agentgym backends cleanup`"
            self._log(message)
            self.failure = self.failure or f"{self.backend.name}: {message}"
