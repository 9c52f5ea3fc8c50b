"""Fixtures shared by the trainer tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from agentgym_runtime.trainers.scheduler import registered_training, unregister_training
from tests.trainers.openai_stub import openai_stub_server


@pytest.fixture
def openai_stub() -> Iterator[dict[str, Any]]:
    """A local OpenAI-compatible endpoint answering APO's gradient and edit requests (see ``openai_stub``)."""
    with openai_stub_server() as stub:
        yield stub


@pytest.fixture
def no_registered_training() -> Iterator[None]:
    """Forget, after the test, every training config the test's decorators registered in this process."""
    yield
    for agent in list(registered_training()):
        unregister_training(agent)
