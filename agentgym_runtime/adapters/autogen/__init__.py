"""AutoGen adapter (autogen-agentchat / autogen-core 0.7.x): capture, per-call policy, seeding.

What it records, and where from:

* **Episodes**: the proxy that :func:`agentgym_runtime.train_online` returns for an
  ``AssistantAgent`` (any ``BaseChatAgent``) or a team (``RoundRobinGroupChat``,
  ``SelectorGroupChat``, any ``BaseGroupChat``) runs ``run`` / ``run_stream`` /
  ``on_messages`` / ``on_messages_stream`` as one episode.
* **LLM calls**: AutoGen makes no LLM span of its own for arbitrary clients, so every
  ``AssistantAgent`` model call inside an episode goes through :class:`PolicyModelClient`, a
  delegating ``ChatCompletionClient`` substituted *per call* for the agent's client (the
  ``model_client`` argument of ``AssistantAgent._call_llm`` / ``_process_model_result``); the
  agent object is never changed. The same wrapper takes the adapters' one per-call policy path
  (:mod:`agentgym_runtime.adapters.seeding`): effective policy, :meth:`AutoGenAdapter.apply_policy`,
  the routed client (:mod:`agentgym_runtime.adapters.routing`), the fallback to the incumbent.
* **Tool calls**: ``BaseTool.run_json`` (and ``BaseStreamTool.run_json_stream``) run inside our
  ``execute_tool`` span, which knows the exact failure (a pydantic ``ValidationError`` of the
  tool's argument model → ``invalid_arguments``; anything else raised → ``tool_error``).
  AutoGen's own ``execute_tool`` span for that call (``autogen_core.tools._base.trace_tool_span``)
  is folded into ours while inside an episode, so the store holds exactly one ``execute_tool``
  span per requested call, with the same name, ``gen_ai.tool.name``, ``gen_ai.tool.call.id``,
  ``error.type`` and ERROR status AutoGen would have set. Outside episodes AutoGen's spans are
  untouched. Unknown tool names and malformed JSON never reach a tool (AutoGen answers them with
  ``FunctionExecutionResult(is_error=True)``); reconciliation records them as ``unknown_tool`` /
  ``invalid_arguments`` (at the end of a team participant's turn, or at episode end). Tools that
  do not go through ``BaseTool.run_json`` (e.g. ``McpWorkbench``) are not seen executing: their
  calls are reconciled as ``not_executed``. Inside a training replay
  (:func:`agentgym_runtime.recording.sandbox.use_sandbox`) the same hook hands the call to the replay's
  sandbox instead of the tool.
* **Teams**: each ``AssistantAgent`` participant's turn is a turn of that agent inside the
  team's episode (a child ``invoke_agent`` span, its own pinned policy), so its LLM and tool
  spans carry its ``gen_ai.agent.name``.

The package: :mod:`.messages` (conversions, the policy on a request), :mod:`.client`
(:class:`PolicyModelClient`), :mod:`.hooks` (the patch table), this module (the adapter).

The hooks above are class-level wraps installed by :meth:`AutoGenAdapter.instrument` (done by
``train_online``) and removed by the last :meth:`AutoGenAdapter.uninstrument`. Outside an
episode they only delegate. A decorated function that runs an AutoGen agent it did not wrap
is captured the same way once the adapter is instrumented
(``agentgym_runtime.adapters.load_adapter("autogen").instrument()``).

Example:
    >>> import agentgym_runtime as agentgym
    >>> from autogen_agentchat.agents import AssistantAgent
    >>> from autogen_ext.models.replay import ReplayChatCompletionClient
    >>> client = ReplayChatCompletionClient(["hello"])
    >>> agent = agentgym.train_online(AssistantAgent("helper", model_client=client), name="helper")
    >>> isinstance(agent, AssistantAgent), agent.name
    (True, 'helper')
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import TaskResult
from autogen_agentchat.messages import BaseChatMessage
from autogen_agentchat.teams import BaseGroupChat

from agentgym_runtime.adapters.autogen import hooks
from agentgym_runtime.adapters.autogen.client import (
    FRAMEWORK,
    ClientFactory,
    PolicyModelClient,
    register_client_factory,
)
from agentgym_runtime.adapters.autogen.messages import (
    apply_policy,
    apply_policy_to_messages,
    apply_policy_to_tools,
    messages_from_openai,
    messages_to_openai,
    tool_definitions,
)
from agentgym_runtime.adapters.base import Adapter
from agentgym_runtime.recording.episodes import AgentOptions
from agentgym_runtime.recording.policy import Policy
from agentgym_runtime.recording.wrapping import CallKind

#: ``run`` / ``on_messages`` return once; their ``_stream`` forms are async generators.
_ENTRY_POINTS: dict[str, CallKind | None] = {
    name + suffix: kind
    for name in ("run", "on_messages")
    for suffix, kind in (("", CallKind.ASYNC), ("_stream", CallKind.ASYNC_GENERATOR))
}


class AutoGenAdapter(Adapter, framework=FRAMEWORK, hook_module=hooks, entry_points=_ENTRY_POINTS):
    """Episodes, LLM/tool capture and per-call policies for AutoGen agents and teams.

    Example:
        >>> from agentgym_runtime.adapters import load_adapter
        >>> load_adapter("autogen").framework
        'autogen'
    """

    def wrap(self, obj: Any, options: AgentOptions) -> Any:
        """Proxy ``obj``; remember its recorded name and, for a team, its participants."""
        if isinstance(obj, BaseGroupChat):
            for participant in getattr(obj, "_participants", ()):
                hooks.team_members.add(participant)
        else:
            try:
                hooks.recorded_names[obj] = options.name
            except TypeError:
                pass
        return super().wrap(obj, options)

    def call_input(self, target: Any, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The task (``run``/``run_stream``) or the messages (``on_messages*``), as text where possible."""
        value = kwargs.get("task") if method in ("run", "run_stream") else (args[0] if args else kwargs.get("messages"))
        return _message_text(value)

    def apply_policy(self, policy: Policy, request: Any) -> Any:
        """Apply ``policy`` to a request ``{"messages": [LLMMessage...], "tools": [...]}`` (a new dict).

        :class:`PolicyModelClient` applies policies through the same function
        (:func:`agentgym_runtime.adapters.autogen.messages.apply_policy`).
        """
        return apply_policy(policy, request)

    def seed(self, agent: Any, policy: Policy) -> Any:
        """Apply ``policy`` permanently to a fresh ``AssistantAgent`` and return it.

        AutoGen has no public way to swap an agent's client, so this replaces the private
        ``_model_client`` attribute (read by ``AssistantAgent.on_messages_stream`` on every call)
        with a :class:`PolicyModelClient` fixed to ``policy``.

        Raises:
            TypeError: ``agent`` is not an ``AssistantAgent``.
        """
        target = getattr(agent, "__wrapped__", agent)
        if not isinstance(target, AssistantAgent):
            raise TypeError(f"the autogen adapter seeds AssistantAgent objects, got {type(target).__name__}")
        inner = target._model_client
        if isinstance(inner, PolicyModelClient):
            inner = inner.inner
        target._model_client = PolicyModelClient(inner, fixed_policy=policy)
        return agent


def _message_text(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, BaseChatMessage):
        return value.to_text()
    if isinstance(value, Sequence):
        return [_message_text(v) for v in value]
    if isinstance(value, TaskResult):
        return [_message_text(m) for m in value.messages]
    return value


__all__ = [
    "AutoGenAdapter",
    "ClientFactory",
    "PolicyModelClient",
    "apply_policy_to_messages",
    "apply_policy_to_tools",
    "messages_from_openai",
    "messages_to_openai",
    "register_client_factory",
    "tool_definitions",
]
