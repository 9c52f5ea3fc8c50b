"""Test configuration: offline switches for the frameworks, and the agentgym fixtures."""

from __future__ import annotations

import os

# Offline switches (see shared/FRAMEWORK_NOTES.md); set before any framework is imported.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("CREWAI_TESTING", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("AGENTOPS_API_KEY", "")

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["agentgym_runtime.testing"]


@pytest.fixture(scope="session")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An agentgym home holding the customer_support demo model, built once per test session."""
    return tmp_path_factory.mktemp("demo-home")


@pytest.fixture(scope="session")
def demo(demo_home: Path) -> Any:
    """The customer_support demo model (built on first use, minutes on a 2-core CPU)."""
    from agentgym_runtime.demo.model.tiny import load_or_build_demo_model

    return load_or_build_demo_model("customer_support", home=demo_home, seed=0)


@pytest.fixture
def no_registered_training() -> Iterator[None]:
    """Forget, after the test, every training config the test's decorators registered in this process."""
    from agentgym_runtime.trainers.scheduler import registered_training, unregister_training

    yield
    for agent in list(registered_training()):
        unregister_training(agent)
