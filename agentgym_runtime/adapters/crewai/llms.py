"""The LLM a CrewAI policy's ``llm`` routes to: the shared registry, with a default for local and API models.

An agent whose own LLM already serves the policy (a :class:`~agentgym_runtime.models.crewai.TransformersLLM`
of the same base model, which reads the pinned adapter per call) keeps it. Otherwise the registry's
factory builds the LLM (:func:`register_llm_factory`); without one, a policy naming a local model
directory (and no endpoint) is served in-process by a ``TransformersLLM``, anything else by ``crewai.LLM``.

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
    """A ``TransformersLLM`` for a local model directory, else ``crewai.LLM`` (endpoint, ``api_key_env``, sampling)."""
    from agentgym_runtime.models.crewai import is_local_model, llm_factory

    if is_local_model(config):
        return llm_factory(config)
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

    ``original`` itself when it serves ``config`` as it is (its ``serves(config)`` says so: an
    in-process LLM of the same base model that reads the pinned policy's adapter per call). Stop words
    of ``original`` (CrewAI's ``Observation:`` stop) are carried over when the routed LLM has none, so
    the ReAct loop keeps working.
    """
    serves = getattr(original, "serves", None)
    if original is not None and callable(serves) and serves(config):
        return original
    llm = cast(BaseLLM, routing.routed_model(FRAMEWORK, config))
    if original is not None and not getattr(llm, "stop", None):
        llm.stop = list(getattr(original, "stop", None) or [])
    return llm


__all__ = ["LlmFactory", "register_llm_factory", "FRAMEWORK", "default_llm_factory", "routed_llm"]
