"""The ``ssh`` backend: run the job on a host you reach over SSH (your workstation, a rented box).

Per job, over one asyncssh connection (key auth; the host key checked against
``known_hosts`` unless you opt out):

1. create ``<workdir>/<run_id>/`` on the host and copy the snapshot (and the base adapter)
   there with SFTP, then the spec rewritten to the remote paths;
2. pick the interpreter: the configured ``python``, or a virtual environment built once from
   the project's lock file (``python_from_lock``; reused while the lock is unchanged);
3. start :mod:`.runner` with ``setsid`` (its own process group) under a deadline, and
   mirror its ``job.log`` and ``progress.jsonl`` into the local ``output_dir`` while it runs;
4. when ``exit_code`` appears, fetch the outputs, check every file's sha256 against the
   manifest the job wrote (:mod:`.manifest`), and remove the remote directory.

Cancel (and the scheduler's timeout, which cancels) sends SIGTERM, then SIGKILL, to the
runner's and the job's process groups on the host. A refused key, an unknown host key, an
unreachable host or a connection that drops and cannot be re-established ends the job with
:data:`~.base.EXIT_BACKEND` and the reason in ``error.json``. No secret crosses: the job's
environment on the host is built from scratch (``env`` plus the device switch).

Example:
    >>> backend = SSHBackend("gpu-box.internal", user="trainer", key_path="~/.ssh/id_ed25519")
    >>> backend.target, backend.known_hosts.endswith("known_hosts")
    ('trainer@gpu-box.internal:22', True)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import os
import shlex
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from agentgym_runtime._version import __version__
from agentgym_runtime.errors import MissingExtraError
from agentgym_runtime.trainers.backends.base import (
    EXIT_BACKEND,
    RUNNER_MODULE,
    BackendJobHandle,
    RunInfo,
    append_log,
    job_environment,
)
from agentgym_runtime.trainers.backends.manifest import (
    RUNNER_FILES,
    STREAMED_FILES,
)
from agentgym_runtime.trainers.base import TrainingJobSpec
from agentgym_runtime.trainers.job import LOG_NAME, PROGRESS_NAME, SPEC_NAME

if TYPE_CHECKING:
    import asyncssh

T = TypeVar("T")
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
PASSPHRASE_ENV = "AGENTGYM_SSH_KEY_PASSPHRASE"


def _asyncssh() -> Any:
    try:
        import asyncssh
    except ImportError as exc:  # pragma: no cover - asyncssh is in the lock
        raise MissingExtraError("ssh backend", "ssh", "asyncssh") from exc
    return asyncssh


def describe_ssh_error(exc: BaseException) -> str:
    """A sentence saying why an SSH step failed (key refused, host key unknown, unreachable...).

    Example:
        >>> describe_ssh_error(ConnectionRefusedError(111, "Connection refused"))
        'connection refused ([Errno 111] Connection refused)'
    """
    asyncssh = _asyncssh()
    if isinstance(exc, asyncssh.PermissionDenied):
        return f"the host refused the key (permission denied: {exc.reason})"
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return f"the host key could not be verified against known_hosts ({exc.reason})"
    if isinstance(exc, asyncssh.ConnectionLost):
        return f"the connection was lost ({exc.reason})"
    if isinstance(exc, asyncssh.DisconnectError):
        return f"the host disconnected ({exc.reason})"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused ({exc})"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc}"
    return f"{type(exc).__name__}: {exc}"


class EventLoopThread:
    """One asyncio loop on a daemon thread: the sync handle API drives async SSH through it.

    Example:
        >>> loop = EventLoopThread("doc")
        >>> async def two() -> int:
        ...     return 2
        >>> loop.run(two()), loop.stop()
        (2, None)
    """

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=f"agentgym-{name}", daemon=True)
        self.thread.start()

    def submit(self, coro: Awaitable[T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]

    def run(self, coro: Awaitable[T], timeout_s: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result."""
        return self.submit(coro).result(timeout_s)

    def stop(self) -> None:
        """Stop the loop (pending tasks are dropped) and let the thread end."""
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)


class SSHBackend:
    """Run training jobs on a host over SSH.

    Args:
        host: Host name or address.
        port: SSH port.
        user: Login name (default: the local user, as ``ssh`` does).
        key_path: Private key file; its passphrase, if any, comes from ``AGENTGYM_SSH_KEY_PASSPHRASE``.
            Without it, the default keys and the SSH agent are used.
        known_hosts: The known_hosts file that must hold the host's key.
        trust_on_first_use: Accept the host key on the first connection and pin it for the
            job's reconnections (freshly rented machines, whose key nobody knows yet). Off by default.
        python: The interpreter on the host (must import ``agentgym_runtime`` and the trainer).
        python_from_lock: A lock file (``requirements/lock.txt``): build a virtual environment from
            it on the host (once per lock content) and use its interpreter. Needs network there.
        workdir: Where job directories are created on the host.
        env: Variables set for the job on the host (never the serving process's environment).
        max_runtime_s: The job's deadline on the host: past it the runner kills it by itself.
        on_deadline: Shell command the runner runs after a deadline kill (e.g. stop the machine).
        keep_remote: Leave the remote job directory in place (debugging).
        connect_timeout_s: Give up connecting after this long.
        poll_interval_s: How often the log and progress are mirrored.
        name: The backend name recorded on the run.
        choice: Why this backend was chosen (recorded on the run).

    Example:
        >>> SSHBackend("10.0.0.5", port=2222, python="/opt/venv/bin/python").python
        '/opt/venv/bin/python'
    """

    name = "ssh"

    def __init__(
        self,
        host: str,
        *,
        port: int = 22,
        user: str | None = None,
        key_path: str | None = None,
        known_hosts: str = DEFAULT_KNOWN_HOSTS,
        trust_on_first_use: bool = False,
        python: str | None = None,
        python_from_lock: str | None = None,
        workdir: str = "~/.agentgym/jobs",
        env: Mapping[str, str] | None = None,
        max_runtime_s: float = 6 * 3600.0,
        on_deadline: str | None = None,
        keep_remote: bool = False,
        connect_timeout_s: float = 15.0,
        poll_interval_s: float = 0.5,
        name: str | None = None,
        choice: str | None = None,
    ) -> None:
        self.host = host
        self.port = int(port)
        self.user = user or os.environ.get("USER") or "root"
        self.key_path = str(Path(key_path).expanduser()) if key_path else None
        self.known_hosts = known_hosts
        self.trust_on_first_use = trust_on_first_use
        self.python = python
        self.python_from_lock = python_from_lock
        self.workdir = workdir
        self.env = dict(env or {})
        self.max_runtime_s = max_runtime_s
        self.on_deadline = on_deadline
        self.keep_remote = keep_remote
        self.connect_timeout_s = connect_timeout_s
        self.poll_interval_s = poll_interval_s
        if name is not None:
            self.name = name
        self.choice = choice
        self._pinned: Any = None

    @property
    def target(self) -> str:
        """``user@host:port``."""
        return f"{self.user}@{self.host}:{self.port}"

    async def connect(self) -> asyncssh.SSHClientConnection:
        """Open a connection (key auth, host key checked); raises asyncssh/OS errors."""
        lib = _asyncssh()
        options: dict[str, Any] = {
            "port": self.port,
            "username": self.user,
            "connect_timeout": self.connect_timeout_s,
            "keepalive_interval": 5,
            "keepalive_count_max": 3,
        }
        if self._pinned is not None:
            options["known_hosts"] = self._pinned
        elif self.trust_on_first_use:
            options["known_hosts"] = None
        else:
            options["known_hosts"] = str(Path(self.known_hosts).expanduser())
        if self.key_path:
            options["client_keys"] = [self.key_path]
            options["passphrase"] = os.environ.get(PASSPHRASE_ENV)
            options["agent_path"] = None
        conn: asyncssh.SSHClientConnection = await lib.connect(self.host, **options)
        if self.trust_on_first_use and self._pinned is None:
            key = conn.get_server_host_key()
            if key is not None:
                entry = f"[{self.host}]:{self.port} {key.export_public_key().decode().strip()}\n"
                self._pinned = lib.import_known_hosts(entry)
        return conn

    def check(self, timeout_s: float = 10.0) -> str:
        """Connect and run ``python -c`` on the host; a sentence saying what answered.

        Raises:
            ConnectionError: Not reachable (the message says why).
        """
        loop = EventLoopThread("ssh-check")
        try:
            return loop.run(self._check(), timeout_s)
        except Exception as exc:
            raise ConnectionError(f"ssh {self.target}: {describe_ssh_error(exc)}") from None
        finally:
            loop.stop()

    async def _check(self) -> str:
        conn = await self.connect()
        try:
            python = self.python or "python3"
            probe = "import sys; print(sys.version.split()[0])"
            result = await conn.run(f"{shlex.quote(python)} -c {shlex.quote(probe)}", check=True)
        finally:
            conn.close()
        return f"ssh {self.target}: reachable, {python} is Python {str(result.stdout).strip()}"

    def submit(self, spec: TrainingJobSpec) -> SSHJobHandle:
        """Start the job on the host (connecting, copying and starting happen in the background)."""
        handle = SSHJobHandle(self, spec)
        handle.start()
        return handle


def _remote_path(workdir: str, *parts: str) -> str:
    """A shell-safe remote path; a leading ``~/`` becomes ``"$HOME"/``."""
    if workdir.startswith("~/"):
        head, rest = '"$HOME"', workdir[2:]
    elif workdir == "~":
        head, rest = '"$HOME"', ""
    else:
        head, rest = "", workdir
    tail = "/".join(p for p in (rest, *parts) if p)
    return f"{head}/{shlex.quote(tail)}" if head else shlex.quote(tail)


class SSHJobHandle(BackendJobHandle):
    """A job running on an SSH host (see :class:`SSHBackend`).

    Example:
        >>> # handles come from SSHBackend.submit(spec)
    """

    def __init__(self, backend: SSHBackend, spec: TrainingJobSpec) -> None:
        super().__init__(spec)
        self.backend = backend
        self.output_dir.mkdir(parents=True, exist_ok=True)
        # The spec as the serving side wrote it (the host gets a copy with its own paths).
        (self.output_dir / SPEC_NAME).write_text(spec.model_dump_json(indent=2))
        self.remote_dir: str | None = None  # absolute, once created
        self.pgids: list[int] = []
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._offsets: dict[str, int] = {LOG_NAME: 0, PROGRESS_NAME: 0}
        self._started = time.monotonic()
        self._loop = EventLoopThread(f"ssh-{spec.run_id}")
        self._task: concurrent.futures.Future[None] | None = None
        self.on_started: Callable[[SSHJobHandle], None] | None = None

    # --- the JobHandle contract (poll, wait, log_tail, progress: BackendJobHandle) ----------
    def cancel(self, grace_s: float = 5.0) -> None:
        """SIGTERM the remote process groups, SIGKILL them after ``grace_s``, remove the remote directory."""
        if self._done.is_set():
            return
        self.cancelled = True
        try:
            self._loop.run(self._kill(grace_s), grace_s + self.backend.connect_timeout_s + 10.0)
        except Exception as exc:
            append_log(self.output_dir, f"cancel on {self.backend.target} failed: {describe_ssh_error(exc)}")
        self._done.wait(grace_s + 30.0)

    def info(self) -> RunInfo:
        """The host, how long the job ran there, and the failure (if any)."""
        return RunInfo(
            backend=self.backend.name,
            choice=self.backend.choice,
            host=self.backend.target,
            duration_s=self._elapsed_s(),
            failure=self.failure,
        )

    # --- the lifecycle, on the loop thread ------------------------------------------------
    def start(self) -> None:
        """Begin connecting, copying and running in the background."""
        self._task = self._loop.submit(self._main())

    def _finish(self, code: int, failure: str | None = None) -> None:
        if self._done.is_set():
            return
        self._finish_with(code, failure)
        self._loop.stop()

    async def _main(self) -> None:
        target = self.backend.target
        append_log(self.output_dir, f"connecting to {target}")
        try:
            self._conn = await self.backend.connect()
            self._sftp = await self._conn.start_sftp_client()
        except Exception as exc:
            self._finish(EXIT_BACKEND, f"ssh {target}: cannot connect: {describe_ssh_error(exc)}")
            return
        try:
            await self._prepare()
            if self._stopping():
                await self._cleanup()
                self._finish(-15, None)
                return
            await self._launch()
            code = await self._follow()
            if code is None:  # cancelled: _kill finishes the job
                return
            await self._fetch()
            code = self._verify_outputs(code)
            await self._cleanup()
            self._finish(code)
        except Exception as exc:
            if not self._done.is_set():
                self._finish(EXIT_BACKEND, f"ssh {target}: {describe_ssh_error(exc)}")
        finally:
            if self._done.is_set() and self._conn is not None:
                self._conn.close()

    async def _run(self, command: str, check: bool = True) -> str:
        assert self._conn is not None
        result = await self._conn.run(command, check=check)
        return str(result.stdout or "")

    async def _prepare(self) -> None:
        assert self._sftp is not None
        remote = (
            await self._run(
                f"mkdir -p {_remote_path(self.backend.workdir, self.run_id, 'out')} && cd "
                f"{_remote_path(self.backend.workdir, self.run_id)} && pwd"
            )
        ).strip()
        self.remote_dir = remote
        append_log(self.output_dir, f"copying the snapshot to {self.backend.target}:{remote}")
        await self._sftp.put(self.spec.snapshot_dir, f"{remote}/snapshot", recurse=True)
        updates: dict[str, Any] = {"snapshot_dir": f"{remote}/snapshot", "output_dir": f"{remote}/out"}
        if self.spec.base_adapter:
            await self._sftp.put(self.spec.base_adapter, f"{remote}/base_adapter", recurse=True)
            updates["base_adapter"] = f"{remote}/base_adapter"
        remote_spec = self.spec.model_copy(update=updates)
        async with self._sftp.open(f"{remote}/out/{SPEC_NAME}", "w") as handle:
            await handle.write(remote_spec.model_dump_json(indent=2))
        self.python = await self._interpreter()

    async def _interpreter(self) -> str:
        if self.backend.python:
            return self.backend.python
        if not self.backend.python_from_lock:
            return "python3"
        lock = Path(self.backend.python_from_lock).read_bytes()
        key = hashlib.sha256(lock + __version__.encode()).hexdigest()[:16]
        env_dir = _remote_path(self.backend.workdir, "..", "envs", key)
        assert self._sftp is not None
        assert self.remote_dir is not None
        async with self._sftp.open(f"{self.remote_dir}/lock.txt", "wb") as handle:
            await handle.write(lock)
        append_log(self.output_dir, f"python environment {key} on the host (built once from the lock)")
        script = (
            f"test -x {env_dir}/bin/python || (python3 -m venv {env_dir} && "
            f"{env_dir}/bin/pip install -q -r {shlex.quote(self.remote_dir)}/lock.txt && "
            f"{env_dir}/bin/pip install -q --no-deps agentgym-runtime=={__version__}) >&2 && "
            f"cd {env_dir} && pwd"
        )
        return f"{(await self._run(script)).strip()}/bin/python"

    async def _launch(self) -> None:
        assert self.remote_dir is not None
        environ = job_environment(self.spec, self.backend.env)
        assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in environ.items())
        deadline = time.time() + self.backend.max_runtime_s
        runner = [self.python, "-m", RUNNER_MODULE, "--spec", f"out/{SPEC_NAME}", "--deadline", f"{deadline:.0f}"]
        if self.backend.on_deadline:
            runner += ["--on-deadline", self.backend.on_deadline]
        command = (
            f"cd {shlex.quote(self.remote_dir)} || exit 1; env {assignments} setsid "
            f"{' '.join(shlex.quote(part) for part in runner)} > out/{LOG_NAME} 2>&1 < /dev/null & echo $!"
        )
        append_log(self.output_dir, f"starting {self.python} -m {RUNNER_MODULE} on {self.backend.target}")
        pid = int((await self._run(command)).strip().splitlines()[-1])
        self.pgids = [pid]
        if self.on_started is not None:
            self.on_started(self)

    async def _mirror(self, name: str) -> None:
        """Append what is new in the remote ``name`` to the local copy."""
        asyncssh = _asyncssh()
        assert self._sftp is not None
        assert self.remote_dir is not None
        try:
            async with self._sftp.open(f"{self.remote_dir}/out/{name}", "rb") as handle:
                await handle.seek(self._offsets[name])
                data = await handle.read(4 << 20)
        except asyncssh.SFTPNoSuchFile:
            return
        if data:
            self._offsets[name] += len(data)
            with (self.output_dir / name).open("ab") as local:
                local.write(cast("bytes", data))  # opened "rb": bytes

    async def _exit_code(self) -> int | None:
        asyncssh = _asyncssh()
        assert self._sftp is not None
        assert self.remote_dir is not None
        try:
            async with self._sftp.open(f"{self.remote_dir}/out/exit_code", "r") as handle:
                return int(str(await handle.read()).strip())
        except (asyncssh.SFTPNoSuchFile, ValueError):
            return None

    async def _read_pgids(self) -> None:
        asyncssh = _asyncssh()
        assert self._sftp is not None
        assert self.remote_dir is not None
        try:
            async with self._sftp.open(f"{self.remote_dir}/out/runner.json", "r") as handle:
                runner = json.loads(str(await handle.read()))
            self.pgids = sorted({int(runner["runner_pgid"]), int(runner["job_pgid"])})
        except (asyncssh.SFTPNoSuchFile, ValueError, KeyError):
            pass

    async def _follow(self) -> int | None:
        """Mirror log and progress until ``exit_code`` appears; reconnect once after a drop."""
        asyncssh = _asyncssh()
        while not self.cancelled:
            try:
                if len(self.pgids) < 2:
                    await self._read_pgids()
                await self._mirror(LOG_NAME)
                await self._mirror(PROGRESS_NAME)
                code = await self._exit_code()
                if code is not None:
                    await self._mirror(LOG_NAME)
                    await self._mirror(PROGRESS_NAME)
                    return code
            except (asyncssh.Error, OSError) as exc:
                if self._stopping():
                    return None
                await self._reconnect(exc)
            await asyncio.sleep(self.backend.poll_interval_s)
        return None

    async def _reconnect(self, lost: BaseException) -> None:
        reason = describe_ssh_error(lost)
        append_log(self.output_dir, f"ssh {self.backend.target}: {reason}; reconnecting")
        last: BaseException = lost
        for attempt in range(3):
            await asyncio.sleep(0.5 * (attempt + 1))
            try:
                self._conn = await self.backend.connect()
                self._sftp = await self._conn.start_sftp_client()
                append_log(self.output_dir, f"ssh {self.backend.target}: reconnected")
                return
            except Exception as exc:
                last = exc
        raise ConnectionError(
            f"the connection dropped while the job ran ({reason}) and reconnecting failed "
            f"({describe_ssh_error(last)}); the job stops itself at its deadline"
        )

    async def _fetch(self) -> None:
        assert self._sftp is not None
        assert self.remote_dir is not None
        remote_out = f"{self.remote_dir}/out"
        skip = RUNNER_FILES | STREAMED_FILES
        for entry in await self._sftp.listdir(remote_out):
            if entry in (".", "..") or entry in skip:
                continue
            await self._sftp.get(f"{remote_out}/{entry}", str(self.output_dir / entry), recurse=True)
        append_log(self.output_dir, f"fetched the outputs from {self.backend.target}:{remote_out}")

    async def _cleanup(self) -> None:
        if self.remote_dir is None or self.backend.keep_remote:
            return
        try:
            await self._run(f"rm -rf {shlex.quote(self.remote_dir)}", check=False)
        except Exception as exc:  # the host went away: nothing more to clean from here
            append_log(self.output_dir, f"could not remove {self.remote_dir}: {describe_ssh_error(exc)}")

    async def _kill(self, grace_s: float) -> None:
        if self._conn is None or self.remote_dir is None or not self.pgids:
            return  # not launched yet: _main sees `cancelled` before it launches
        if len(self.pgids) < 2:
            await self._read_pgids()
        groups = " ".join(f"-{pgid}" for pgid in self.pgids)
        steps = max(1, int(grace_s / 0.2))
        script = (
            f"kill -TERM {groups} 2>/dev/null; for i in $(seq {steps}); do "
            f"kill -0 {groups} 2>/dev/null || break; sleep 0.2; done; kill -KILL {groups} 2>/dev/null; true"
        )
        append_log(self.output_dir, f"cancelling: SIGTERM, then SIGKILL, to process groups {groups} on the host")
        await self._run(script, check=False)
        await self._cleanup()
        self._finish(-15)
