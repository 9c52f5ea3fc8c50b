"""LangChain adapter: record ``create_agent`` graphs, LCEL chains and any runnable; apply policies.

Capture needs no change to the agent and does not depend on the proxy. While the adapter is
instrumented, a LangChain configure hook
(``langchain_core.tracers.context.register_configure_hook``) adds one callback handler to
every callback manager that LangChain configures *while an agentgym episode is current*; the
handler translates ``on_chat_model_start`` / ``on_llm_end`` / ``on_tool_start`` / ... into
:mod:`agentgym_runtime.recording.capture` calls. Outside episodes the hook adds nothing.

Policies are applied at the LLM-call boundary by the adapters' one per-call path
(:mod:`agentgym_runtime.adapters.seeding`), hooked into ``BaseChatModel.invoke`` / ``ainvoke`` /
``stream`` / ``astream`` (:mod:`.hooks`): the messages and tool definitions the model receives
carry the policy's system prompt, demonstrations and tool descriptions; a policy with ``llm`` is
served by the chat model registered with :func:`register_model_factory`, falling back once to the
incumbent when that endpoint cannot be reached.

The package: :mod:`.messages` (conversions, the policy on a request), :mod:`.callbacks` (capture),
:mod:`.hooks` (patches), this module (the adapter).

Three ways in:

* ``agent = agentgym.train_online(create_agent(...), name="support")``: a proxy whose
  ``invoke`` / ``ainvoke`` / ``stream`` / ``astream`` / ``batch`` / ``abatch`` run as episodes
  (``batch``: one episode per input);
* ``@agentgym.train_online`` on a function that runs a LangChain agent: call
  :func:`instrument_langchain` once at start-up (wrapping any LangChain agent does it too);
* ``agentgym.episode()`` blocks around LangChain code, once instrumented.

Example:
    >>> import agentgym_runtime as agentgym
    >>> from langchain_core.runnables import RunnableLambda
    >>> chain = agentgym.train_online(RunnableLambda(lambda x: x + 1), name="adder")
    >>> chain.invoke(1), isinstance(chain, RunnableLambda)
    (2, True)
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from langchain_core.runnables.config import get_config_list, get_executor_for_config

from agentgym_runtime.adapters import routing
from agentgym_runtime.adapters.base import Adapter
from agentgym_runtime.adapters.checking import register_agent_tools
from agentgym_runtime.adapters.langchain import hooks
from agentgym_runtime.adapters.langchain.callbacks import FRAMEWORK, AgentGymCallbackHandler
from agentgym_runtime.adapters.langchain.messages import (
    apply_policy,
    apply_policy_to_messages,
    to_openai_messages,
    tool_definitions,
)
from agentgym_runtime.adapters.routing import ModelFactory
from agentgym_runtime.adapters.seeding import SeededAgent
from agentgym_runtime.recording.episodes import AgentOptions
from agentgym_runtime.recording.policy import Policy
from agentgym_runtime.recording.wrapping import CallKind, call_async, call_sync

#: Route LangChain LLM calls of policies that set ``llm`` to the chat model a factory returns
#: (``None`` unregisters): the shared registry of :mod:`agentgym_runtime.adapters.routing` under
#: LangChain's name. Chat models are cheap to build and carry per-call state, so the factory is
#: called for each routed call (``cache=False``); cache in the factory if yours are expensive.
register_model_factory = routing.registrar(FRAMEWORK, cache=False)


def instrument_langchain() -> LangChainAdapter:
    """Record LangChain calls made inside any agentgym episode (function decorator, ``episode()``).

    Call it once at start-up when ``@agentgym.train_online`` decorates a *function* that runs a
    LangChain agent (wrapping a LangChain object with ``train_online`` instruments already).
    Reference counted: undo with :func:`uninstrument_langchain`.

    Returns:
        The shared adapter instance.

    Example:
        >>> adapter = instrument_langchain()
        >>> adapter.installed
        True
        >>> uninstrument_langchain()
    """
    from agentgym_runtime.adapters import load_adapter

    adapter = cast(LangChainAdapter, load_adapter(FRAMEWORK))
    adapter.instrument()
    return adapter


def uninstrument_langchain() -> None:
    """Release one :func:`instrument_langchain` (the hooks go with the last release).

    Example:
        >>> _ = instrument_langchain()
        >>> uninstrument_langchain()
    """
    from agentgym_runtime.adapters import load_adapter

    load_adapter(FRAMEWORK).uninstrument()


# --- the adapter -------------------------------------------------------------------------------
_ENTRY_POINTS: dict[str, CallKind | None] = {
    "invoke": CallKind.SYNC,
    "ainvoke": CallKind.ASYNC,
    "stream": CallKind.GENERATOR,
    "astream": CallKind.ASYNC_GENERATOR,
    "batch": CallKind.SYNC,
    "abatch": CallKind.ASYNC,
}


class LangChainAdapter(Adapter, framework=FRAMEWORK, hook_module=hooks, entry_points=_ENTRY_POINTS):
    """Episodes for LangChain runnables (``create_agent`` graphs, LCEL chains, ``AgentExecutor``).

    Example:
        >>> from langchain_core.runnables import RunnableLambda
        >>> LangChainAdapter.detects(RunnableLambda(str)), LangChainAdapter.detects(len)
        (True, False)
    """

    @property
    def handler(self) -> AgentGymCallbackHandler:
        """The process-wide callback handler the configure hook adds inside episodes."""
        return hooks.HANDLER

    @property
    def installed(self) -> bool:
        """Whether the callback hook and the chat-model policy wrappers are in place."""
        return hooks.PATCHES.active

    # --- per call ----------------------------------------------------------------------------
    def wrap(self, obj: Any, options: AgentOptions) -> Any:
        """Proxy ``obj``; remember the tool set of a ``create_agent`` graph (its ``tools`` node)."""
        node = getattr(obj, "nodes", {}).get("tools") if isinstance(getattr(obj, "nodes", None), dict) else None
        tools = getattr(getattr(node, "bound", None), "tools_by_name", None)
        if isinstance(tools, dict):
            definitions = tool_definitions(list(tools.values())) or []
            register_agent_tools(options.name, {d["name"]: d["parameters"] for d in definitions})
        return super().wrap(obj, options)

    def call_input(self, target: Any, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The runnable's input (the config, with its callbacks, is not recorded)."""
        if args:
            return args[0]
        return kwargs.get("input", kwargs.get("inputs"))

    def _run_batch(
        self,
        target: Any,
        options: AgentOptions,
        inputs: list[Any],
        config: Any = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        if not inputs:
            return []
        configs = get_config_list(config, len(inputs))

        def invoke_one(item: Any, item_config: Any) -> Any:
            try:
                return call_sync(options, target.invoke, (item, item_config), kwargs, item)
            except Exception as exc:
                if return_exceptions:
                    return exc
                raise

        if len(inputs) == 1:
            return [invoke_one(inputs[0], configs[0])]
        with get_executor_for_config(configs[0]) as executor:
            return list(executor.map(invoke_one, inputs, configs))

    async def _run_abatch(
        self,
        target: Any,
        options: AgentOptions,
        inputs: list[Any],
        config: Any = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        if not inputs:
            return []
        configs = get_config_list(config, len(inputs))
        limit = configs[0].get("max_concurrency")
        semaphore = asyncio.Semaphore(limit) if limit else None

        async def invoke_one(item: Any, item_config: Any) -> Any:
            try:
                if semaphore is None:
                    return await call_async(options, target.ainvoke, (item, item_config), kwargs, item)
                async with semaphore:
                    return await call_async(options, target.ainvoke, (item, item_config), kwargs, item)
            except Exception as exc:
                if return_exceptions:
                    return exc
                raise

        return list(await asyncio.gather(*(invoke_one(i, c) for i, c in zip(inputs, configs, strict=True))))

    # --- policies ----------------------------------------------------------------------------
    def apply_policy(self, policy: Policy, request: Any) -> Any:
        """``request`` with ``policy`` applied: a message list, or ``{"messages", "tools"}``.

        The chat-model hook applies policies through the same function
        (:func:`agentgym_runtime.adapters.langchain.messages.apply_policy`).

        Example:
            >>> from langchain_core.messages import HumanMessage
            >>> p = Policy(agent="a", version=1, system_prompt="Be exact.")
            >>> [m.type for m in LangChainAdapter().apply_policy(p, [HumanMessage("hi")])]
            ['system', 'human']
        """
        return apply_policy(policy, request)

    def seed(self, agent: Any, policy: Policy) -> Any:
        """``agent`` with ``policy`` fixed: a :class:`SeededAgent` proxy (hooks are instrumented).

        Example:
            >>> from langchain_core.runnables import RunnableLambda
            >>> seeded = LangChainAdapter().seed(RunnableLambda(str), Policy(agent="a", version=3))
            >>> seeded.agentgym_policy.version, seeded.invoke(5)
            (3, '5')
            >>> LangChainAdapter().uninstrument()
        """
        self.instrument()
        return SeededAgent(agent, policy)


__all__ = [
    "AgentGymCallbackHandler",
    "LangChainAdapter",
    "ModelFactory",
    "SeededAgent",
    "apply_policy_to_messages",
    "instrument_langchain",
    "register_model_factory",
    "tool_definitions",
    "to_openai_messages",
    "uninstrument_langchain",
]
