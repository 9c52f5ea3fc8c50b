"""Fixtures of the backend tests: a loopback SSH server and recorded episodes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentgym_runtime.services import Services as Runtime
from tests.trainers.backends.helpers import serve
from tests.trainers.backends.sshd import LoopbackSSH, loopback_ssh


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[LoopbackSSH]:
    """A real SSH server on 127.0.0.1 (key auth, known host key)."""
    with loopback_ssh(tmp_path / "sshd") as server:
        yield server


@pytest.fixture
def episodes(agentgym_runtime: Runtime) -> Runtime:
    """Six recorded episodes of agent ``support`` (enough for a demos run)."""
    serve(6)
    agentgym_runtime.flush()
    return agentgym_runtime
