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

pytest_plugins = ["agentgym_runtime.testing"]
