"""AG2 adapter (the ``ag2`` package's classic line, ``import autogen``): capture, per-call policy, seeding.

What it records, and where from (the hooks are in :mod:`.hooks`, one reversible patch table):

* **Episodes**: the proxy :func:`agentgym_runtime.train_online` returns for a ``ConversableAgent``
  (``AssistantAgent``, ``UserProxyAgent``, ...) runs ``initiate_chat`` / ``a_initiate_chat`` /
  ``generate_reply`` / ``a_generate_reply`` as one episode. A chat another agent starts *with* a
  wrapped agent (``user_proxy.initiate_chat(wrapped, message=...)``) is an episode of the wrapped
  agent too. A decorated function that runs bare AG2 agents is captured once the adapter is
  instrumented (automatic when ``autogen`` is imported before the episode starts).
* **LLM calls**: ``OpenAIWrapper.create`` (every model client, custom ones registered with
  ``register_model_client`` included): one ``chat`` span per call with the requested tool calls,
  the tools offered (from the agent's ``llm_config``) and usage.
* **Tool calls**: ``ConversableAgent.execute_function`` / ``a_execute_function`` of the executing
  agent: ``ok``, ``tool_error`` (AG2 caught an exception), ``unknown_tool`` (not in that agent's
  ``function_map``), ``invalid_arguments`` (not JSON, or against the schema the model was shown:
  AG2 does not validate plain arguments, the span says the function ran anyway). Requested calls
  AG2 never executes (the chat ended first) are reconciled at the next LLM call and at episode end.
* **Per-call policy**: in the ``create`` hook, the adapters' one path
  (:mod:`agentgym_runtime.adapters.seeding`): the policy's system prompt replaces the agent's
  system message and its demonstrations go before the conversation, for that call only; its tool
  descriptions are offered through a per-call view of the agent's wrapper; a policy ``llm`` routes
  the call to the ``OpenAIWrapper`` a registered factory builds (:func:`register_client_factory`),
  falling back to the incumbent when it cannot be reached. The agent object is never changed.

Example:
    >>> import agentgym_runtime as agentgym
    >>> from autogen import ConversableAgent
    >>> agent = agentgym.train_online(ConversableAgent("helper", llm_config=False), name="helper")
    >>> isinstance(agent, ConversableAgent), agent.name
    (True, 'helper')
"""

from __future__ import annotations

from typing import Any

from autogen import ConversableAgent

from agentgym_runtime.adapters.ag2 import hooks
from agentgym_runtime.adapters.ag2.hooks import FRAMEWORK, register_client_factory
from agentgym_runtime.adapters.ag2.messages import apply_policy, output_messages, tool_definitions
from agentgym_runtime.adapters.base import Adapter
from agentgym_runtime.recording.episodes import AgentOptions
from agentgym_runtime.recording.policy import Policy
from agentgym_runtime.recording.wrapping import CallKind

_ENTRY_POINTS: dict[str, CallKind | None] = {
    "initiate_chat": CallKind.SYNC,
    "a_initiate_chat": CallKind.ASYNC,
    "generate_reply": CallKind.SYNC,
    "a_generate_reply": CallKind.ASYNC,
}


class AG2Adapter(Adapter, framework=FRAMEWORK, hook_module=hooks, entry_points=_ENTRY_POINTS):
    """Episodes, LLM/tool capture and per-call policies for AG2 ``ConversableAgent`` chats.

    Example:
        >>> from agentgym_runtime.adapters import load_adapter
        >>> load_adapter("ag2").framework
        'ag2'
    """

    def wrap(self, obj: Any, options: AgentOptions) -> Any:
        """Proxy ``obj``; remember the name it is recorded under (for chats others start with it)."""
        try:
            hooks.recorded_names[obj] = options.name
        except TypeError:
            pass
        return super().wrap(obj, options)

    def call_input(self, target: Any, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The chat's opening message, or the messages a reply is generated for."""
        if method in ("initiate_chat", "a_initiate_chat"):
            return kwargs.get("message", args[1] if len(args) > 1 else None)
        return kwargs.get("messages", args[0] if args else None)

    def apply_policy(self, policy: Policy, request: Any) -> Any:
        """Apply ``policy`` to ``{"messages": [OpenAI messages], "tools": [OpenAI tools]}`` (a new dict)."""
        return apply_policy(policy, request)

    def seed(self, agent: Any, policy: Policy) -> Any:
        """Make every LLM call of ``agent`` serve ``policy`` from now on, and return the agent.

        The policy is kept beside the agent (not in its ``llm_config`` or system message), so the
        agent's own configuration stays as written and a later seed replaces this one.

        Raises:
            TypeError: ``agent`` is not a ``ConversableAgent``.
        """
        target = getattr(agent, "__wrapped__", agent)
        if not isinstance(target, ConversableAgent):
            raise TypeError(f"the ag2 adapter seeds ConversableAgent objects, got {type(target).__name__}")
        hooks.seeded_policies[target] = policy
        return agent


__all__ = ["AG2Adapter", "apply_policy", "output_messages", "register_client_factory", "tool_definitions"]
