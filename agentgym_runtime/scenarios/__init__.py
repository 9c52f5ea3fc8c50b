"""Scenarios: customer_support, code_review, qa_testing, and the base class for your own.

Example:
    >>> from agentgym_runtime.scenarios import get_scenario
    >>> get_scenario("qa_testing").difficulty
    'hard'
"""

from __future__ import annotations

from agentgym_runtime.scenarios.base import (
    DEFAULT_CRITERIA,
    PITFALLS,
    REWARD_RANGE,
    REWARD_WEIGHTS,
    SPLITS,
    ExpectedCall,
    Scenario,
    Split,
    SuccessReport,
    Task,
)
from agentgym_runtime.scenarios.registry import (
    BUILTIN_SCENARIOS,
    ScenarioNotFoundError,
    get_scenario,
    list_scenarios,
    register_scenario,
)

__all__ = [
    "BUILTIN_SCENARIOS",
    "DEFAULT_CRITERIA",
    "PITFALLS",
    "REWARD_RANGE",
    "REWARD_WEIGHTS",
    "SPLITS",
    "ExpectedCall",
    "Scenario",
    "ScenarioNotFoundError",
    "Split",
    "SuccessReport",
    "Task",
    "get_scenario",
    "list_scenarios",
    "register_scenario",
]
