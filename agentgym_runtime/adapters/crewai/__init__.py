"""CrewAI adapter (crewai 1.6 to 1.15): episodes for ``Crew``/``Agent`` kickoffs, inline capture, per-call policy.

What is captured, and where (everything inline, on the thread that runs the agent, so
nothing arrives after the episode closed):

* **Agent turns** — ``Agent.execute_task`` runs as a turn of that agent (``gen_ai.agent.name`` =
  the agent's ``role``) inside the current episode, so a crew's agents are attributed separately
  even though the crew holds the original (unwrapped) agent objects. ``async_execution`` tasks,
  which CrewAI runs on a bare thread, are started in a copy of the caller's context so that
  their calls belong to the episode too.
* **LLM calls** — ``get_llm_response`` (the one function the crew executor — ``CrewAgentExecutor``
  in crewai 1.6, the flow-based ``AgentExecutor`` in 1.15 — and ``LiteAgent``/``Agent.kickoff``
  call) is wrapped where each looks it up. A crewai where none of them has it still runs
  unchanged, without LLM spans: :data:`.hooks.MISSING` names the gap, logged and counted as an
  internal error. CrewAI's global ``before/after_llm_call`` hooks are only run by the crew
  executor (not by ``Agent.kickoff``) and the after hook is skipped when the LLM raises, so they
  cannot record every call. The requested tool call is parsed from the ReAct text (``Action:`` /
  ``Action Input:``) with CrewAI's own parser; tokens are the difference of the LLM's usage counters.
* **Tool calls** — CrewAI's event bus ``emit`` is wrapped so its tool events are seen inline
  (its own handlers still run on its thread pool, unchanged): ``ToolUsageStartedEvent`` opens an
  ``execute_tool`` span (one per CrewAI attempt, ``attempt=``), ``ToolUsageFinishedEvent`` /
  ``ToolUsageErrorEvent`` close it (``ok`` / ``invalid_arguments`` / ``tool_error``; a finished
  event that carries a ``failure`` — crewai 1.15, e.g. a spent usage limit — is ``error_result``);
  ``ToolSelectionErrorEvent`` (unknown tool) and ``ToolValidateInputErrorEvent`` (malformed
  ``Action Input``) become one failure per requested call (CrewAI re-parses the same text
  several times; only real execution attempts count separately). A span CrewAI opened but
  never finished (tool usage limit, crewai 1.6) is closed by a global ``after_tool_call`` hook.
  Inside a training replay (:func:`agentgym_runtime.recording.sandbox.use_sandbox`) the wrapped
  ``CrewStructuredTool.invoke`` / ``ainvoke`` hand each call to the replay's sandbox instead
  of the tool.
* **Policy** — applied to the messages of one LLM call and undone right after (the executor's
  message list is restored), never to the shared agent: ``system_prompt`` replaces the agent's
  backstory in the system message, ``tool_descriptions`` replace the rendered tool descriptions,
  demonstrations are inserted after the system message in CrewAI's ReAct text format, and
  ``llm`` routes the call to an LLM from the shared registry (:func:`register_llm_factory`; by
  default an in-process :class:`~agentgym_runtime.models.crewai.TransformersLLM` for a local model
  directory, else ``crewai.LLM``), falling back once to the incumbent when that endpoint cannot be
  reached (the adapters' one per-call path, :mod:`agentgym_runtime.adapters.seeding`). An agent
  whose LLM already serves the policy (a ``TransformersLLM`` of the same base model, which reads the
  pinned adapter per call) keeps it.

The package: :mod:`.messages` (the policy on CrewAI messages), :mod:`.llms` (routed LLMs),
:mod:`.hooks` (the patch table and what it records), this module (the adapter).

Every patch is undone by :meth:`CrewAIAdapter.uninstrument`. Wrapping a ``Crew``/``Agent`` installs
them; for a decorated function that builds and runs a crew itself, use
``@agentgym.train_online(framework="crewai")`` (or ``load_adapter("crewai").instrument()`` once).

Example:
    >>> import agentgym_runtime as agentgym  # doctest: +SKIP
    >>> crew = agentgym.train_online(Crew(agents=[...], tasks=[...]), name="support-crew")  # doctest: +SKIP
    >>> crew.kickoff(inputs={"question": "where is order 7?"})  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from crewai.llms.base_llm import BaseLLM

from agentgym_runtime.adapters.base import Adapter
from agentgym_runtime.adapters.crewai import hooks
from agentgym_runtime.adapters.crewai.llms import FRAMEWORK, LlmFactory, register_llm_factory, routed_llm
from agentgym_runtime.adapters.crewai.messages import (
    CrewAIRequest,
    policy_messages,
    react_demonstrations,
    replace_tool_description,
)
from agentgym_runtime.recording.policy import Policy
from agentgym_runtime.recording.wrapping import CallKind

_ENTRY_POINTS: dict[str, CallKind | None] = {
    "kickoff": CallKind.SYNC,
    "kickoff_async": CallKind.ASYNC,
}


class CrewAIAdapter(Adapter, framework=FRAMEWORK, hook_module=hooks, entry_points=_ENTRY_POINTS):
    """Episodes for CrewAI ``Crew`` and ``Agent`` (``kickoff``, ``kickoff_async``).

    Example:
        >>> from agentgym_runtime.adapters import load_adapter  # doctest: +SKIP
        >>> load_adapter("crewai").framework  # doctest: +SKIP
        'crewai'
    """

    def apply_policy(self, policy: Policy, request: Any) -> Any:
        """``request`` (a :class:`CrewAIRequest`) with ``policy`` applied, as a new request.

        The ``get_llm_response`` hook applies policies through the same function
        (:func:`agentgym_runtime.adapters.crewai.messages.policy_messages`).

        Example:
            >>> p = Policy(agent="a", version=1, system_prompt="Be exact.")
            >>> r = CrewAIRequest([{"role": "system", "content": "You are a. Old story."}], backstory="Old story.")
            >>> CrewAIAdapter().apply_policy(p, r).messages[0]["content"]
            'You are a. Be exact.'
        """
        if not isinstance(request, CrewAIRequest):
            request = CrewAIRequest(messages=[dict(m) for m in request])
        messages, _ = policy_messages(policy, request)
        return replace(request, messages=messages)

    def seed(self, agent: Any, policy: Policy) -> Any:
        """Apply ``policy`` permanently to a fresh CrewAI ``Agent`` and return it.

        ``system_prompt`` becomes the backstory, demonstrations are appended to it as ReAct
        examples, ``tool_descriptions`` replace the descriptions of copies of its tools, and
        ``llm`` sets its LLM (see :func:`register_llm_factory`).

        Example:
            >>> from crewai import Agent  # doctest: +SKIP
            >>> CrewAIAdapter().seed(Agent(role="r", goal="g", backstory="b"), policy).backstory  # doctest: +SKIP
        """
        if policy.system_prompt is not None:
            agent.backstory = policy.system_prompt
        if policy.demonstrations:
            examples = "\n\n".join(m["content"] for m in react_demonstrations(policy))
            agent.backstory = f"{agent.backstory}\n\nExamples of good work:\n{examples}"
        if policy.tool_descriptions and getattr(agent, "tools", None):
            tools = []
            for tool in agent.tools:
                name = str(getattr(tool, "name", ""))
                description = policy.tool_descriptions.get(name)
                if description is not None:
                    current = str(getattr(tool, "description", ""))
                    rendered = replace_tool_description(current, name, description)
                    tool = tool.model_copy(update={"description": rendered if rendered != current else description})
                tools.append(tool)
            agent.tools = tools
        if policy.llm is not None:
            agent.llm = routed_llm(policy.llm, agent.llm if isinstance(agent.llm, BaseLLM) else None)
        return agent


__all__ = [
    "CrewAIAdapter",
    "CrewAIRequest",
    "LlmFactory",
    "react_demonstrations",
    "register_llm_factory",
    "routed_llm",
]
