"""Framework adapters: one isolated module per framework, loaded only when used.

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

from agentgym_runtime.adapters.base import Adapter, AgentProxy, class_modules
from agentgym_runtime.adapters.callable import CallableAdapter
from agentgym_runtime.errors import ConfigurationError, MissingExtraError
from agentgym_runtime.recording.episodes import add_instrumenter
from agentgym_runtime.recording.sandbox import set_framework_hooks

#: framework name -> (adapter "module:Class", extra, module prefixes that identify it)
FRAMEWORKS: dict[str, tuple[str, str | None, tuple[str, ...]]] = {
    "langchain": (
        "agentgym_runtime.adapters.langchain:LangChainAdapter",
        "langchain",
        ("langchain", "langchain_core", "langgraph", "langchain_classic"),
    ),
    "autogen": (
        "agentgym_runtime.adapters.autogen:AutoGenAdapter",
        "autogen",
        ("autogen_agentchat", "autogen_core", "autogen_ext"),
    ),
    "crewai": ("agentgym_runtime.adapters.crewai:CrewAIAdapter", "crewai", ("crewai",)),
    "callable": ("agentgym_runtime.adapters.callable:CallableAdapter", None, ()),
}

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
