"""One model-routing registry: which model serves a policy's ``llm``, per framework.

A policy that sets ``llm`` (endpoint, model, LoRA adapter) routes the agent's LLM calls to its
own model. Each framework needs that model in its own shape (a LangChain chat model, an AutoGen
``ChatCompletionClient``, a CrewAI ``BaseLLM``), so the registry holds one factory per framework:
``register_model_factory(framework, factory)``. The adapters ask :func:`routed_model`; it builds
the model once per distinct ``LLMConfig`` and reuses it (``cache=False`` at registration builds
a fresh one per call, for factories that hand out stateful objects). A framework adapter may
declare a default factory (CrewAI: in-process for a local model directory, else ``crewai.LLM``);
without a factory and without a default a policy's ``llm`` is ignored (prompt, demonstrations and
tool descriptions still apply).

Example:
    >>> from agentgym_runtime.recording.policy import LLMConfig
    >>> register_model_factory("doc", lambda config: f"model {config.model}")
    >>> routed_model("doc", LLMConfig(model="tuned"))
    'model tuned'
    >>> register_model_factory("doc", None)
    >>> routed_model("doc", LLMConfig(model="tuned")) is None
    True
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agentgym_runtime.recording.policy import LLMConfig

ModelFactory = Callable[[LLMConfig], Any]
"""``(LLMConfig) -> model``: builds the framework's model object that serves a policy's ``llm``."""


@dataclass(frozen=True, slots=True)
class _Route:
    factory: ModelFactory
    cache: bool


_lock = threading.Lock()
_routes: dict[str, _Route] = {}
_defaults: dict[str, ModelFactory] = {}
_built: dict[tuple[str, str], Any] = {}


def register_model_factory(framework: str, factory: ModelFactory | None, *, cache: bool = True) -> None:
    """Route ``framework``'s LLM calls of policies that set ``llm`` to models ``factory`` builds.

    Args:
        framework: ``"langchain"``, ``"autogen"``, ``"crewai"`` (any adapter's name).
        factory: Builds the model from the policy's ``LLMConfig``; ``None`` unregisters (back to
            the framework's default, if it has one).
        cache: Build once per distinct ``LLMConfig`` and reuse (default); ``False`` calls the
            factory for every routed call.

    Example:
        >>> register_model_factory("doc", lambda config: object(), cache=False)
        >>> register_model_factory("doc", None)
    """
    with _lock:
        if factory is None:
            _routes.pop(framework, None)
        else:
            _routes[framework] = _Route(factory, cache)
        for key in [k for k in _built if k[0] == framework]:
            del _built[key]


def registrar(framework: str, *, cache: bool = True) -> Callable[[ModelFactory | None], None]:
    """``register(factory)`` for one framework: what the adapters export under their own names.

    Example:
        >>> register = registrar("doc")
        >>> register(None)
    """

    def register(factory: ModelFactory | None) -> None:
        register_model_factory(framework, factory, cache=cache)

    register.__doc__ = (
        f"Route {framework}'s LLM calls of policies that set ``llm`` to models ``factory`` builds "
        f"(``None`` unregisters); ``register_model_factory({framework!r}, factory, cache={cache})``."
    )
    return register


def set_default_factory(framework: str, factory: ModelFactory | None) -> None:
    """The factory used for ``framework`` when none is registered (declared by its adapter).

    Example:
        >>> set_default_factory("doc", None)
    """
    with _lock:
        if factory is None:
            _defaults.pop(framework, None)
        else:
            _defaults[framework] = factory


def routed_model(framework: str, config: LLMConfig) -> Any | None:
    """The model serving ``config`` for ``framework``, or ``None`` when nothing is registered.

    Raises:
        Exception: Whatever the factory raises (the adapters count it as an internal error and
            make the call as the host made it).

    Example:
        >>> routed_model("nothing-registered", LLMConfig(model="m")) is None
        True
    """
    route = _routes.get(framework)
    if route is None:
        default = _defaults.get(framework)
        if default is None:
            return None
        route = _Route(default, True)
    if not route.cache:
        return route.factory(config)
    key = (framework, config.model_dump_json())
    with _lock:
        model = _built.get(key)
        if model is None:
            model = route.factory(config)
            _built[key] = model
        return model


__all__ = ["ModelFactory", "register_model_factory", "registrar", "routed_model", "set_default_factory"]
