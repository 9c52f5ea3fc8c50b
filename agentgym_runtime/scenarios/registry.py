"""The scenario registry: built-in scenarios by name, plus the ones users register.

Example:
    >>> from agentgym_runtime.scenarios import get_scenario, list_scenarios
    >>> list_scenarios()
    ['code_review', 'customer_support', 'qa_testing']
    >>> try:
    ...     get_scenario("nope")
    ... except LookupError as exc:
    ...     print(exc)
    unknown scenario 'nope'; available scenarios: code_review, customer_support, qa_testing
"""

from __future__ import annotations

import difflib
import importlib
import threading
from collections.abc import Sequence
from typing import TypeVar

from agentgym_runtime.errors import AgentGymError, ConfigurationError
from agentgym_runtime.scenarios.base import Scenario

S = TypeVar("S", bound=type[Scenario])

#: Built-in scenarios: name -> "module:Class" (imported on first use).
BUILTIN_SCENARIOS: dict[str, str] = {
    "customer_support": "agentgym_runtime.scenarios.customer_support:CustomerSupportScenario",
    "code_review": "agentgym_runtime.scenarios.code_review:CodeReviewScenario",
    "qa_testing": "agentgym_runtime.scenarios.qa_testing:QATestingScenario",
}

_registered: dict[str, type[Scenario]] = {}
_instances: dict[str, Scenario] = {}
_lock = threading.Lock()


class ScenarioNotFoundError(AgentGymError, LookupError):
    """No scenario has the requested name; the message lists the available ones.

    Attributes:
        scenario: The requested name.
        available: The names that exist.
    """

    def __init__(self, scenario: str, available: Sequence[str]) -> None:
        self.scenario = scenario
        self.available = sorted(available)
        close = difflib.get_close_matches(scenario.replace("-", "_"), self.available, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        super().__init__(
            f"unknown scenario {scenario!r}{hint}; available scenarios: {', '.join(self.available) or '(none)'}"
        )


def register_scenario(cls: S) -> S:
    """Register a :class:`Scenario` subclass under its ``name`` (usable as a class decorator).

    Registering a name again replaces the earlier class.

    Raises:
        ConfigurationError: ``cls`` is not a concrete Scenario subclass with a valid name.

    Example:
        >>> from agentgym_runtime.scenarios import get_scenario, register_scenario
        >>> from agentgym_runtime.scenarios.customer_support import CustomerSupportScenario
        >>> @register_scenario
        ... class MySupport(CustomerSupportScenario):
        ...     name = "my_support"
        >>> get_scenario("my_support").name
        'my_support'
    """
    if not isinstance(cls, type) or not issubclass(cls, Scenario):
        raise ConfigurationError(f"register_scenario needs a Scenario subclass, got {cls!r}")
    name = getattr(cls, "name", "")
    if not isinstance(name, str) or not name.replace("_", "a").replace("-", "a").isalnum():
        raise ConfigurationError(f"scenario class {cls.__name__} needs a name of letters, digits, '_' or '-'")
    if getattr(cls, "__abstractmethods__", None):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise ConfigurationError(f"scenario {name!r} does not implement: {missing}")
    with _lock:
        _registered[name] = cls
        _instances.pop(name, None)
    return cls


def list_scenarios() -> list[str]:
    """Names of every available scenario, sorted."""
    with _lock:
        return sorted(set(BUILTIN_SCENARIOS) | set(_registered))


def get_scenario(name: str) -> Scenario:
    """The scenario registered as ``name`` (one shared instance per name).

    Raises:
        ScenarioNotFoundError: No scenario has that name.
    """
    with _lock:
        instance = _instances.get(name)
        if instance is not None:
            return instance
        cls = _registered.get(name)
        if cls is None and name in BUILTIN_SCENARIOS:
            module_name, _, class_name = BUILTIN_SCENARIOS[name].partition(":")
            cls = getattr(importlib.import_module(module_name), class_name)
        if cls is None:
            raise ScenarioNotFoundError(name, sorted(set(BUILTIN_SCENARIOS) | set(_registered)))
        instance = cls()
        _instances[name] = instance
        return instance
