"""Fixtures shared by the trainer tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.trainers.openai_stub import openai_stub_server


@pytest.fixture
def openai_stub() -> Iterator[dict[str, Any]]:
    """A local OpenAI-compatible endpoint answering APO's gradient and edit requests (see ``openai_stub``)."""
    with openai_stub_server() as stub:
        yield stub
