"""Framework adapters: one package per framework holding only its hooks, over shared machinery.

Shared (no framework imported): :mod:`.base` (the ``Adapter`` contract, ``FRAMEWORKS``, the
proxy), :mod:`.patches` (one reversible patch table, restored only where a patch is still ours),
:mod:`.routing` (one registry of the models a policy's ``llm`` routes to), :mod:`.seeding` (the
one per-call policy path and the one meaning of ``seed``), :mod:`.fallback` (retry once under the
incumbent when a routed endpoint fails), :mod:`.checking` (every tool call checked against the
schema the model was shown), :mod:`.streams`. Per framework: ``langchain/``, ``autogen/``,
``crewai/`` (``messages`` for conversions and the policy on a request, ``hooks`` for the patch
table, the adapter class in the package itself), loaded only when used.

The per-call policy path, the same in every framework: the framework's LLM-call hook asks
:func:`~agentgym_runtime.adapters.seeding.effective_policy` (a seeded policy wins, else the pinned
one), builds the request with the adapter's ``apply_policy``, takes the routed model from
:func:`~agentgym_runtime.adapters.routing.routed_model` and calls it through
:mod:`~agentgym_runtime.adapters.fallback`.

:func:`adapter_for` picks the adapter for an agent object, from its class
hierarchy (no framework is imported to find out) or from an explicit
``framework=`` name.

Example:
    >>> from agentgym_runtime.adapters import adapter_for
    >>> type(adapter_for(print)).__name__
    'CallableAdapter'
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

from agentgym_runtime.adapters.base import FRAMEWORKS, Adapter, AgentProxy, class_modules
from agentgym_runtime.adapters.callable import CallableAdapter
from agentgym_runtime.errors import ConfigurationError, MissingExtraError
from agentgym_runtime.recording.episodes import add_instrumenter
from agentgym_runtime.recording.sandbox import set_framework_hooks

_instances: dict[str, Adapter] = {}


def detect_framework(obj: Any) -> str:
    """The framework ``obj`` belongs to, from its class hierarchy; ``"callable"`` otherwise."""
    modules = class_modules(obj)
    for name, (_, _, prefixes) in FRAMEWORKS.items():
        if any(m == p or m.startswith(p + ".") for m in modules for p in prefixes):
            return name
    return "callable"


def load_adapter(framework: str) -> Adapter:
    """The (shared) adapter instance for ``framework``.

    Raises:
        ConfigurationError: Unknown framework name.
        MissingExtraError: The framework's extra is not installed.
    """
    if framework not in FRAMEWORKS:
        raise ConfigurationError(f"unknown framework {framework!r}; choose one of: {', '.join(sorted(FRAMEWORKS))}")
    cached = _instances.get(framework)
    if cached is not None:
        return cached
    target, extra, _ = FRAMEWORKS[framework]
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or framework
        if missing.startswith("agentgym_runtime"):
            raise
        raise MissingExtraError(framework, extra or framework, missing) from exc
    adapter: Adapter = getattr(module, class_name)()
    _instances[framework] = adapter
    return adapter


def auto_instrument() -> list[str]:
    """Instrument the adapter of every framework this process has already imported.

    Called when an episode starts, so a decorated function that runs a LangChain, AutoGen
    or CrewAI agent is captured without wrapping the agent itself. Cheap when there is
    nothing to do (a few ``sys.modules`` lookups); never imports a framework. An adapter whose
    instrumentation was explicitly released (``uninstrument``) is left alone.

    Returns:
        The frameworks instrumented by this call.
    """
    done: list[str] = []
    for framework, (_, extra, prefixes) in FRAMEWORKS.items():
        if extra is None or not any(prefix in sys.modules for prefix in prefixes):
            continue
        adapter = _instances.get(framework)
        if adapter is not None and (type(adapter)._instrument_count > 0 or type(adapter)._auto_opt_out):
            continue
        try:
            adapter = load_adapter(framework)
        except MissingExtraError:
            continue  # e.g. only part of a framework's packages is installed
        if type(adapter)._instrument_count == 0 and not type(adapter)._auto_opt_out:
            adapter.instrument()
            done.append(framework)
    return done


def hook_frameworks_for_sandbox() -> Callable[[], None]:
    """Instrument the adapter of every framework already imported, for a replay sandbox.

    Unlike :func:`auto_instrument` this ignores an earlier explicit ``uninstrument``: while a
    sandbox is active no framework tool may reach the real one. Returns the release, which
    restores each adapter's instrumentation count and the user's opt-out.
    """
    hooked: list[tuple[Adapter, bool]] = []
    for framework, (_, extra, prefixes) in FRAMEWORKS.items():
        if extra is None or not any(prefix in sys.modules for prefix in prefixes):
            continue
        try:
            adapter = load_adapter(framework)
        except MissingExtraError:
            continue  # e.g. only part of a framework's packages is installed
        opted_out = type(adapter)._auto_opt_out
        adapter.instrument()
        hooked.append((adapter, opted_out))

    def release() -> None:
        for adapter, opted_out in reversed(hooked):
            adapter.uninstrument()
            # Releasing our own reference is not the user opting out of automatic instrumentation.
            type(adapter)._auto_opt_out = opted_out

    return release


def adapter_for(obj: Any, framework: str | None = None) -> Adapter:
    """The adapter for ``obj``: the forced ``framework``, else the detected one."""
    return load_adapter(framework or detect_framework(obj))


__all__ = [
    "FRAMEWORKS",
    "Adapter",
    "AgentProxy",
    "CallableAdapter",
    "adapter_for",
    "auto_instrument",
    "detect_framework",
    "hook_frameworks_for_sandbox",
    "load_adapter",
]

# The adapters plug themselves into the recording core from above (it never imports them): new
# episodes instrument the frameworks already imported, and replay sandboxes hook their tools.
add_instrumenter(auto_instrument)
set_framework_hooks(hook_frameworks_for_sandbox)
