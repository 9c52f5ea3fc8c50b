"""Which backend a training run uses: ``backend=`` when named, else ``gpu=`` decides.

* ``backend="local" | "ssh" | "ray" | "runpod" | "lambda"`` (or a name given to
  :func:`register_backend`), from ``train_online(backend=...)``, ``agentgym train --backend`` or
  ``AGENTGYM_BACKEND``: that one, configured from the ``ssh_*``/``ray_*``/``runpod_*``/``lambda_*``
  settings (:class:`~agentgym_runtime.config.Settings`).
* ``gpu="cpu"``/``"local"``: this machine.
* ``gpu="auto"``: a local CUDA device first; else each backend of ``backend_order`` in turn,
  the first that answers its check; else this machine's CPU. Every step's reason is recorded
  on the run (``training_runs.backend_choice``).

Example:
    >>> from agentgym_runtime.config import Settings
    >>> backend = build_backend("local", Settings(), max_runtime_s=60)
    >>> backend.name
    'local'
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from agentgym_runtime.config import Settings
from agentgym_runtime.errors import ConfigurationError
from agentgym_runtime.trainers.backends.base import Backend
from agentgym_runtime.trainers.backends.local import LocalBackend

if TYPE_CHECKING:
    from agentgym_runtime.trainers.backends.cloud import Provider

BACKEND_NAMES: tuple[str, ...] = ("local", "ssh", "ray", "runpod", "lambda")

BackendFactory = Callable[[Settings, float, str | None], Backend]
_registered: dict[str, BackendFactory] = {}
_registered_lock = threading.Lock()


def register_backend(name: str, factory: BackendFactory | Backend) -> None:
    """Make ``backend=name`` use your own backend (or a pre-configured one).

    ``factory(settings, max_runtime_s, choice) -> Backend``, or a ready backend instance.

    Example:
        >>> register_backend("box", LocalBackend(python="/usr/bin/python3"))
        >>> build_backend("box", Settings(), max_runtime_s=60).python
        '/usr/bin/python3'
        >>> unregister_backend("box")
    """
    if callable(factory) and not hasattr(factory, "submit"):
        function = factory
    else:
        instance = cast(Backend, factory)

        def function(settings: Settings, max_runtime_s: float, choice: str | None) -> Backend:
            return instance

    with _registered_lock:
        _registered[name] = function


def unregister_backend(name: str) -> None:
    """Forget a backend registered with :func:`register_backend`."""
    with _registered_lock:
        _registered.pop(name, None)


def provider(name: str, settings: Settings) -> Provider:
    """The cloud provider API client of ``name`` (``runpod`` or ``lambda``), from settings and secrets."""
    if name == "runpod":
        from agentgym_runtime.trainers.backends.runpod import RunPodProvider

        return RunPodProvider.from_settings(settings)
    if name == "lambda":
        from agentgym_runtime.trainers.backends.lambda_cloud import LambdaProvider

        return LambdaProvider.from_settings(settings)
    raise ConfigurationError(f"{name!r} is not a cloud provider (runpod, lambda)")


def _require(value: Any, setting: str, backend: str) -> Any:
    if not value:
        raise ConfigurationError(f"the {backend} backend needs {setting} (AGENTGYM_{setting.upper()})")
    return value


def build_backend(
    name: str, settings: Settings, *, max_runtime_s: float, choice: str | None = None, python: str | None = None
) -> Backend:
    """The backend called ``name``, configured from ``settings``.

    Raises:
        ConfigurationError: Unknown name, or a setting/secret it needs is missing (named).
    """
    with _registered_lock:
        custom = _registered.get(name)
    if custom is not None:
        return custom(settings, max_runtime_s, choice)
    # A job on a remote machine outlives nothing: its deadline is the run's timeout plus a margin.
    deadline = max_runtime_s + 60.0
    if name == "local":
        return LocalBackend(python=python, choice=choice)
    if name == "ssh":
        from agentgym_runtime.trainers.backends.ssh import SSHBackend

        return SSHBackend(
            _require(settings.ssh_host, "ssh_host", "ssh"),
            port=settings.ssh_port,
            user=settings.ssh_user,
            key_path=settings.ssh_key_path,
            known_hosts=settings.ssh_known_hosts,
            python=settings.ssh_python,
            python_from_lock=settings.ssh_python_from_lock,
            workdir=settings.ssh_workdir,
            max_runtime_s=deadline,
            choice=choice,
        )
    if name == "ray":
        from agentgym_runtime.trainers.backends.ray import RayBackend

        return RayBackend(
            _require(settings.ray_address, "ray_address", "ray"),
            num_gpus=settings.ray_num_gpus,
            python=settings.ray_python,
            pip=settings.ray_pip,
            max_runtime_s=deadline,
            choice=choice,
        )
    if name in ("runpod", "lambda"):
        from agentgym_runtime.trainers.backends.cloud import CloudBackend

        return CloudBackend(
            provider(name, settings),
            home=settings.home,
            key_path=_require(settings.ssh_key_path, "ssh_key_path", name),
            python=settings.cloud_python,
            max_runtime_s=deadline,
            budget_per_run_usd=settings.budget_per_run_usd,
            budget_per_day_usd=settings.budget_per_day_usd,
            choice=choice,
        )
    known = sorted(set(BACKEND_NAMES) | set(_registered))
    raise ConfigurationError(f"unknown backend {name!r}; choose one of: {', '.join(known)}")


def local_cuda() -> tuple[bool, str]:
    """Whether this machine has a CUDA GPU the job may use, and why (no torch import: ``nvidia-smi -L``).

    Example:
        >>> isinstance(local_cuda()[1], str)
        True
    """
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        return False, "CUDA_VISIBLE_DEVICES is empty (GPUs hidden)"
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False, "no nvidia-smi on PATH (no NVIDIA driver)"
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"nvidia-smi failed: {exc}"
    gpus = [line for line in listing.stdout.splitlines() if line.startswith("GPU ")]
    if listing.returncode != 0 or not gpus:
        return False, f"nvidia-smi lists no GPU ({(listing.stderr or listing.stdout).strip()[:120]})"
    return True, f"{len(gpus)} local CUDA device(s): {gpus[0]}"


def check_backend(name: str, settings: Settings, timeout_s: float = 10.0) -> tuple[bool, str]:
    """Whether backend ``name`` can take a job now, and why (reachable host, cluster, API key...)."""
    try:
        if name == "local":
            ok, why = local_cuda()
            return True, f"this machine ({'CUDA: ' if ok else 'CPU only: '}{why})"
        backend = build_backend(name, settings, max_runtime_s=60.0)
        checker = getattr(backend, "check", None)
        if callable(checker):
            return True, str(checker(timeout_s=timeout_s))
        if hasattr(backend, "provider"):
            count = len(backend.provider.list_instances())
            return True, f"{name}: API key accepted ({count} instance(s) in the account)"
        return True, f"{name}: configured"
    except Exception as exc:  # every failure is an answer here, not a crash
        return False, str(exc) or type(exc).__name__


def backend_for(config: Any, settings: Settings) -> Backend:
    """The backend for a :class:`~agentgym_runtime.trainers.scheduler.TrainingConfig`, with its reason.

    Raises:
        ConfigurationError: A named backend is unknown or misconfigured.
    """
    runtime_s = float(config.timeout_s)
    python = getattr(config, "python", None)
    named = getattr(config, "backend", None) or settings.backend
    if named:
        source = "backend=" if getattr(config, "backend", None) else "AGENTGYM_BACKEND="
        return build_backend(named, settings, max_runtime_s=runtime_s, choice=f"{source}{named!r}", python=python)
    if config.gpu == "cpu":
        return LocalBackend(python=python, choice="gpu='cpu': this machine, GPUs hidden")
    if config.gpu == "local":
        return LocalBackend(python=python, choice="gpu='local': this machine's CUDA")
    has_cuda, why = local_cuda()
    if has_cuda:
        return LocalBackend(python=python, choice=f"gpu='auto': {why}")
    reasons = [f"no local CUDA ({why})"]
    for name in settings.backend_order:
        ok, answer = check_backend(name, settings)
        if ok:
            reasons.append(f"{name}: {answer}")
            return build_backend(name, settings, max_runtime_s=runtime_s, choice="gpu='auto': " + "; ".join(reasons))
        reasons.append(f"{name} skipped: {answer}")
    reasons.append("falling back to this machine's CPU")
    return LocalBackend(python=python, choice="gpu='auto': " + "; ".join(reasons))


def cleanup(settings: Settings, force: bool = False) -> dict[str, list[str] | str]:
    """Terminate leftover ``agentgym-`` machines at each provider with a key; per provider, ids or the error."""
    from agentgym_runtime.trainers.backends.cloud import cleanup_leftovers

    done: dict[str, list[str] | str] = {}
    for name in ("runpod", "lambda"):
        try:
            client = provider(name, settings)
        except ConfigurationError as exc:
            done[name] = f"skipped: {exc}"
            continue
        try:
            done[name] = cleanup_leftovers(client, settings.home, force=force)
        except Exception as exc:
            done[name] = f"failed: {exc}"
    return done
