"""The adapter interface: detect an agent object, capture its calls, apply a policy, undo.

Each framework has one module in this package holding one :class:`Adapter`
subclass; framework imports happen only inside that module. Detection looks at
the module names in the object's class hierarchy, so it never imports a
framework the host does not already use.

Example:
    >>> from agentgym_runtime.adapters.callable import CallableAdapter
    >>> CallableAdapter.detects(len)
    True
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import wrapt

from agentgym_runtime.recording.episodes import AgentOptions
from agentgym_runtime.recording.policy import Policy
from agentgym_runtime.recording.wrapping import CallKind, run_kind

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
    # AG2 classic: the ``ag2`` (0.x) and ``autogen`` distributions install the ``autogen`` package.
    "ag2": ("agentgym_runtime.adapters.ag2:AG2Adapter", "ag2", ("autogen",)),
    "callable": ("agentgym_runtime.adapters.callable:CallableAdapter", None, ()),
}


def class_modules(obj: Any) -> tuple[str, ...]:
    """Module names of every class in ``obj``'s type hierarchy (``obj`` itself if a class)."""
    cls = obj if isinstance(obj, type) else type(obj)
    return tuple(getattr(k, "__module__", "") or "" for k in cls.__mro__)


class Adapter:
    """Base class of the framework adapters.

    Subclasses set :attr:`framework`, :attr:`extra`, :attr:`module_prefixes` and
    :attr:`entry_points`, and override the hooks they need.
    """

    framework: ClassVar[str] = "callable"
    extra: ClassVar[str | None] = None
    module_prefixes: ClassVar[tuple[str, ...]] = ()
    #: Entry-point method names and their shapes; ``None`` infers the shape from the method.
    entry_points: ClassVar[Mapping[str, CallKind | None]] = {}

    _instrument_lock: ClassVar[threading.Lock] = threading.Lock()
    _instrument_count: ClassVar[int] = 0
    #: Set when the last instrumentation is released explicitly: the user asked for the hooks to
    #: go, so automatic instrumentation at episode start leaves this framework alone until the
    #: next explicit :meth:`instrument`.
    _auto_opt_out: ClassVar[bool] = False

    #: The framework package's ``hooks`` module (``install()`` / ``remove()``, one patch table).
    hook_module: ClassVar[Any] = None

    def __init_subclass__(
        cls,
        framework: str | None = None,
        hook_module: Any = None,
        entry_points: Mapping[str, CallKind | None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        # A framework adapter declares itself in its class line:
        # ``class CrewAIAdapter(Adapter, framework="crewai", hook_module=hooks, entry_points={...})``.
        if framework is not None:
            cls.framework = framework
        if hook_module is not None:
            cls.hook_module = hook_module
        if entry_points is not None:
            cls.entry_points = entry_points
        # The framework's extra and module prefixes are listed once, in FRAMEWORKS.
        _, extra, prefixes = FRAMEWORKS.get(cls.framework, (None, cls.extra, cls.module_prefixes))
        cls.extra, cls.module_prefixes = extra, prefixes
        # Each framework counts its own instrumentations.
        cls._instrument_lock = threading.Lock()
        cls._instrument_count = 0
        cls._auto_opt_out = False

    @classmethod
    def detects(cls, obj: Any) -> bool:
        """Whether ``obj`` belongs to this adapter's framework."""
        modules = class_modules(obj)
        return any(m == p or m.startswith(p + ".") for m in modules for p in cls.module_prefixes)

    # --- global instrumentation (reference counted, reversible) ------------------------------
    def instrument(self) -> None:
        """Install the framework-wide hooks this adapter needs (idempotent, reference counted)."""
        cls = type(self)
        with cls._instrument_lock:
            if cls._instrument_count == 0:
                self._install()
            cls._instrument_count += 1
            cls._auto_opt_out = False

    @property
    def instrumented(self) -> bool:
        """Whether the framework-wide hooks are installed now."""
        return type(self)._instrument_count > 0

    def uninstrument(self) -> None:
        """Release one :meth:`instrument`; the hooks go away with the last release."""
        cls = type(self)
        with cls._instrument_lock:
            if cls._instrument_count == 0:
                return
            cls._instrument_count -= 1
            if cls._instrument_count == 0:
                self._remove()
                cls._auto_opt_out = True

    def _install(self) -> None:
        """Install the framework's hooks (its package's ``hooks.install``)."""
        if self.hook_module is not None:
            self.hook_module.install()

    def _remove(self) -> None:
        """Remove what :meth:`_install` installed."""
        if self.hook_module is not None:
            self.hook_module.remove()

    # --- per call ---------------------------------------------------------------------------
    def prepare_call(
        self, target: Any, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Adjust the call's arguments before it runs (e.g. inject a callback handler)."""
        return args, kwargs

    def call_input(self, target: Any, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """What to record as the episode's input."""
        if len(args) == 1 and not kwargs:
            return args[0]
        if not args and not kwargs:
            return None
        return {"args": list(args), "kwargs": kwargs}

    def apply_policy(self, policy: Policy, request: Any) -> Any:
        """Return ``request`` (the framework's LLM request) with ``policy`` applied.

        Step 2 of the adapters' one per-call path (:mod:`agentgym_runtime.adapters.seeding`):
        each framework's LLM-call hook builds the request under the call's effective policy
        with the same function this method calls; the baseline policy is never passed. Plain
        callables read :func:`agentgym_runtime.current_policy` themselves.
        """
        return request

    def seed(self, agent: Any, policy: Policy) -> Any:
        """The agent to use from now on, serving ``policy`` on every LLM call (``TrainedPolicy.apply``).

        One meaning for every adapter (:mod:`agentgym_runtime.adapters.seeding`): the seeded
        policy wins over the runtime's pin for that agent, inside or outside an episode.

        Raises:
            NotImplementedError: The adapter cannot seed agents.
        """
        raise NotImplementedError(f"the {self.framework!r} adapter cannot seed agents with a policy")

    def default_name(self, obj: Any) -> str | None:
        """The agent's own name, if the framework gives it one."""
        for attribute in ("name", "role"):
            value = getattr(obj, attribute, None)
            if isinstance(value, str) and value.strip():
                return value
        return None

    def wrap(self, obj: Any, options: AgentOptions) -> Any:
        """Return a transparent proxy of ``obj`` whose entry points run as episodes."""
        self.instrument()
        return AgentProxy(obj, self, options)

    def run(
        self,
        target: Any,
        method: str,
        kind: CallKind | None,
        options: AgentOptions,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Run one entry point of ``target`` as an episode.

        An adapter that runs an entry point its own way (LangChain's ``batch``: one episode per
        input) defines ``_run_<method>(target, options, *args, **kwargs)``.
        """
        special = getattr(self, f"_run_{method}", None)
        if special is not None:
            return special(target, options, *args, **kwargs)
        bound: Callable[..., Any] = getattr(target, method) if method != "__call__" else target
        actual = kind or CallKind.of(bound if method != "__call__" else type(target).__call__)
        call_input = self.call_input(target, method, args, kwargs)
        args, kwargs = self.prepare_call(target, method, args, kwargs)
        return run_kind(actual, options, bound, args, kwargs, call_input)


class AgentProxy(wrapt.ObjectProxy):  # type: ignore[misc]
    """A transparent stand-in for an agent: same type checks, attributes and methods.

    Only the adapter's entry points behave differently: each call is one episode.
    """

    def __init__(self, wrapped: Any, adapter: Adapter, options: AgentOptions) -> None:
        super().__init__(wrapped)
        self._self_adapter = adapter
        self._self_options = options

    @property
    def agentgym_options(self) -> AgentOptions:
        """How this agent is recorded."""
        return self._self_options

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the agent itself, as one episode."""
        adapter = self._self_adapter
        kind = adapter.entry_points.get("__call__")
        return adapter.run(self.__wrapped__, "__call__", kind, self._self_options, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        """Attributes of the agent; entry points come back wrapped as episodes."""
        value = getattr(self.__wrapped__, name)
        adapter = self._self_adapter
        if name in adapter.entry_points and callable(value):
            kind = adapter.entry_points[name]
            options = self._self_options
            wrapped = self.__wrapped__

            def entry_point(*args: Any, **kwargs: Any) -> Any:
                return adapter.run(wrapped, name, kind, options, args, kwargs)

            entry_point.__name__ = name
            entry_point.__doc__ = getattr(value, "__doc__", None)
            entry_point.__wrapped__ = value  # type: ignore[attr-defined]
            return entry_point
        return value

    def __repr__(self) -> str:
        return f"<agentgym {self._self_adapter.framework} proxy of {self.__wrapped__!r}>"

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("agentgym agent proxies cannot be pickled; pickle the wrapped agent instead")
