"""Where training jobs run: this machine, an SSH host, a Ray cluster, or a rented GPU machine.

:mod:`.base` holds the contract (:class:`Backend`, :class:`JobHandle`, :class:`RunInfo`);
:mod:`.local` the default subprocess backend; :mod:`.ssh`, :mod:`.ray`, :mod:`.runpod` and
:mod:`.lambda_cloud` the remote ones (each imports its client library only when used);
:mod:`.select` builds the backend a training config asks for (``backend=``, ``gpu="auto"``).

Example:
    >>> from agentgym_runtime.trainers.backends import LocalBackend
    >>> LocalBackend().name
    'local'
"""

from __future__ import annotations

from agentgym_runtime.trainers.backends.base import (
    EXIT_BACKEND,
    EXIT_DEADLINE,
    EXIT_UNVERIFIED,
    JOB_MODULE,
    Backend,
    JobHandle,
    RunInfo,
    read_tail,
)
from agentgym_runtime.trainers.backends.local import LocalBackend, LocalJobHandle

__all__ = [
    "EXIT_BACKEND",
    "EXIT_DEADLINE",
    "EXIT_UNVERIFIED",
    "JOB_MODULE",
    "Backend",
    "JobHandle",
    "LocalBackend",
    "LocalJobHandle",
    "RunInfo",
    "read_tail",
]
