"""The LLM a CrewAI policy's ``llm`` routes to: the shared registry, with ``crewai.LLM`` as default.

Example:
    >>> from agentgym_runtime.recording.policy import LLMConfig  # doctest: +SKIP
    >>> routed_llm(LLMConfig(model="gpt-4o-mini")).model  # doctest: +SKIP
    'gpt-4o-mini'
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, cast

from crewai.llms.base_llm import BaseLLM

from agentgym_runtime.adapters import routing
from agentgym_runtime.recording.policy import LLMConfig

FRAMEWORK = "crewai"

#: The factory type register_llm_factory takes.
LlmFactory = Callable[[LLMConfig], BaseLLM]
# Builds the LLM a policy's :class:`~agentgym_runtime.recording.policy.LLMConfig` routes calls to."""


#: How a policy's ``llm`` config becomes a CrewAI LLM (built once per config; ``None``: back to
#: ``crewai.LLM``): the shared registry of :mod:`agentgym_runtime.adapters.routing` under CrewAI's name.
register_llm_factory = routing.registrar(FRAMEWORK)


def default_llm_factory(config: LLMConfig) -> BaseLLM:
    """``crewai.LLM`` for ``config`` (endpoint, key from ``api_key_env``, sampling)."""
    from crewai import LLM

    kwargs: dict[str, Any] = dict(config.sampling)
    if config.endpoint:
        kwargs["base_url"] = config.endpoint
    if config.api_key_env:
        kwargs["api_key"] = os.environ.get(config.api_key_env)
    llm: BaseLLM = LLM(model=config.model or "gpt-4o-mini", **kwargs)
    return llm


routing.set_default_factory(FRAMEWORK, default_llm_factory)


def routed_llm(config: LLMConfig, original: BaseLLM | None = None) -> BaseLLM:
    """The LLM serving calls under ``config`` (the registry's, built once per config).

    Stop words of ``original`` (CrewAI's ``Observation:`` stop) are carried over when the
    routed LLM has none, so the ReAct loop keeps working.
    """
    llm = cast(BaseLLM, routing.routed_model(FRAMEWORK, config))
    if original is not None and not getattr(llm, "stop", None):
        llm.stop = list(getattr(original, "stop", None) or [])
    return llm


__all__ = ["LlmFactory", "register_llm_factory", "FRAMEWORK", "default_llm_factory", "routed_llm"]
