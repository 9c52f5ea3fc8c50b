"""A CrewAI LLM over transformers that serves the pinned policy version's LoRA adapter per call.

:class:`TransformersLLM` is a ``crewai.llms.base_llm.BaseLLM``, a thin user of
:class:`~agentgym_runtime.models.engine.ChatEngine` like the LangChain and AutoGen models. CrewAI calls
an LLM in two ways, and both are served:

* **The agent's ReAct loop** (``CrewAgentExecutor``, ``Agent.kickoff``): CrewAI passes only messages
  (the tools are described in its system prompt) and parses ``Action:`` / ``Action Input:`` from the
  reply. The agent's tools are offered to the chat template as well, exactly as the CrewAI adapter
  records them (:func:`tool_definitions`), so the prompt served is the prompt the trainers render from
  the recorded ``chat`` span. A tool call the model writes in its own format (Hermes ``<tool_call>``,
  Llama 3 JSON, Mistral ``[TOOL_CALLS]``) comes back to CrewAI as ReAct text (:func:`react_text`); a
  reply already in ReAct form, or a final answer, comes back as written.
* **Function calling** (``tools`` given, as CrewAI's reasoning and some utilities pass them, OpenAI
  style): with ``available_functions`` the first call the model asks for is run through CrewAI's own
  ``_handle_tool_execution`` (tool events emitted) and its result returned, as ``crewai.LLM`` does;
  without, the calls are returned as OpenAI ``tool_calls`` dicts when there is no text.

The LoRA adapter is the pinned policy's (:func:`agentgym_runtime.current_policy`), read per call;
outside an episode, or for a policy without an adapter, the base model answers. Streaming
(``stream=True``, as ``Crew(stream=True)`` sets it) emits CrewAI's ``LLMStreamChunkEvent`` per piece.

Routing: a policy whose ``llm`` names a model makes the CrewAI adapter route the call to the LLM the
registry builds for it. :meth:`TransformersLLM.serves` tells the adapter this LLM already serves such a
policy (same base model, no endpoint: it reads the adapter itself), so it is kept; and the adapter's
default factory builds a :class:`TransformersLLM` (:func:`llm_factory`) for a policy naming a local
model directory, so an agent running an API model can be served a trained small model (distillation).

Example:
    >>> from agentgym_runtime.models.crewai import TransformersLLM  # doctest: +SKIP
    >>> llm = TransformersLLM("/models/Qwen2.5-0.5B-Instruct", max_new_tokens=128)  # doctest: +SKIP
    >>> agent = Agent(role="support", goal="...", backstory="...", llm=llm, tools=[get_order])  # doctest: +SKIP
    >>> crew = agentgym.train_online(Crew(agents=[agent], tasks=[task]), name="support")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from agentgym_runtime.errors import MissingExtraError
from agentgym_runtime.models.chat_format import ToolCallFormat
from agentgym_runtime.models.engine import ChatEngine, Generation, ReplyCall, serving_adapter
from agentgym_runtime.recording.policy import LLMConfig

try:
    from crewai.events.types.llm_events import LLMCallType
    from crewai.llms.base_llm import BaseLLM
    from pydantic import BaseModel
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("in-process CrewAI LLM", "crewai", exc.name or "crewai") from exc

_DESCRIPTION_MARKER = "Tool Description: "


@lru_cache(maxsize=512)
def _schema_of(args_schema: type) -> Mapping[str, Any] | None:
    try:
        schema: Mapping[str, Any] = args_schema.model_json_schema()  # type: ignore[attr-defined]
        return schema
    except Exception:
        return None


def _raw_description(tool: Any) -> str:
    description = str(getattr(tool, "description", "") or "")
    return description.split(_DESCRIPTION_MARKER, 1)[1] if _DESCRIPTION_MARKER in description else description


def tool_definitions(tools: Sequence[Any] | None) -> list[dict[str, Any]] | None:
    """CrewAI tools as ``{name, description, parameters}`` definitions (what the runtime records and serves).

    The description is the tool's own (CrewAI renders name and arguments around it); the parameters are
    the JSON schema of its ``args_schema``. ``None`` stays ``None`` (no tools known).

    Example:
        >>> from crewai.tools import tool
        >>> @tool("ping")
        ... def ping(n: int) -> str:
        ...     '''Ping n times.'''
        ...     return "pong"
        >>> [(d["name"], d["description"], list(d["parameters"]["properties"])) for d in tool_definitions([ping])]
        [('ping', 'Ping n times.', ['n'])]
    """
    if tools is None:
        return None
    definitions = []
    for tool in tools:
        schema = getattr(tool, "args_schema", None)
        definitions.append(
            {
                "name": str(getattr(tool, "name", "")),
                "description": _raw_description(tool),
                "parameters": _schema_of(schema) if isinstance(schema, type) else None,
            }
        )
    return definitions


def agent_tools(agent: Any) -> Sequence[Any] | None:
    """The tools a CrewAI agent offers in its current task (its executor's, else its own; ``None``: none known).

    A task's own tools replace the agent's in CrewAI's executor, so the executor's list is the one rendered
    in the prompt; ``Agent.kickoff`` (``LiteAgent``) keeps them as ``_parsed_tools``.

    Example:
        >>> agent_tools(None) is None
        True
    """
    if agent is None:
        return None
    executor = getattr(agent, "agent_executor", None)
    for tools in (
        getattr(executor, "tools", None),
        getattr(agent, "_parsed_tools", None),
        getattr(agent, "tools", None),
    ):
        if isinstance(tools, list | tuple) and tools:
            return tools
    return None


def react_text(content: str, call: ReplyCall) -> str:
    """A tool call as CrewAI's ReAct loop reads it: the model's text as the thought, then the action.

    Example:
        >>> print(react_text("Let me look it up.", ReplyCall("c1", "get_order", '{"order_id": 7}', {"order_id": 7})))
        Thought: Let me look it up.
        Action: get_order
        Action Input: {"order_id": 7}
    """
    thought = content.strip()
    if thought and not thought.startswith("Thought:"):
        thought = f"Thought: {thought}"
    action = f"Action: {call.name}\nAction Input: {call.arguments}"
    return f"{thought}\n{action}" if thought else action


def _is_react(content: str) -> bool:
    return "Final Answer:" in content or ("Action:" in content and "Action Input:" in content)


class TransformersLLM(BaseLLM):
    """CrewAI LLM over a local transformers model, with tool calls, streaming and per-policy LoRA.

    Args:
        model_path: A local Hugging Face model directory (or one holding a single GGUF file).
        adapter: Always serve this LoRA adapter (default: the pinned policy's ``llm.adapter``).
        home: Where relative adapter paths of policies resolve (default: the settings' home).
        tool_format: The tool-call format (default: read from the chat template).
        chat_template: A template overriding the tokenizer's.
        pad_token: A pad token for tokenizers that ship none (``"eos"``: the eos token).
        max_new_tokens: Completion budget per call.
        temperature: 0 (the default) decodes greedily.
        stream: Emit ``LLMStreamChunkEvent`` pieces as the completion is generated.
        offer_agent_tools: In the ReAct loop, offer the agent's tools to the chat template too (default).
        engine: An engine of your own (default: the process's shared one for ``model_path``).
        **kwargs: ``BaseLLM`` options (``stop``, ...).

    Example:
        >>> llm = TransformersLLM("/models/qwen", max_new_tokens=64)
        >>> llm.model, llm.provider, llm.supports_function_calling()
        ('/models/qwen', 'transformers', True)
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        adapter: str | None = None,
        home: str | None = None,
        tool_format: ToolCallFormat | None = None,
        chat_template: str | None = None,
        pad_token: str | None = None,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        stream: bool = False,
        offer_agent_tools: bool = True,
        engine: ChatEngine | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model=str(model_path), temperature=temperature, provider="transformers", **kwargs)
        self.model_path = str(model_path)
        self.adapter = adapter
        self.home = home
        self.tool_format = tool_format
        self.chat_template = chat_template
        self.pad_token = pad_token
        self.max_new_tokens = max_new_tokens
        self.stream = stream
        self.offer_agent_tools = offer_agent_tools
        self._engine = engine

    @property
    def engine(self) -> ChatEngine:
        """The engine of the base model (the process's shared one unless given)."""
        if self._engine is None:
            self._engine = ChatEngine.shared(
                self.model_path, fmt=self.tool_format, chat_template=self.chat_template, pad_token=self.pad_token
            )
        return self._engine

    def serves(self, config: LLMConfig) -> bool:
        """Whether this LLM serves a policy routed to ``config`` as it is (same base model, no endpoint).

        The CrewAI adapter then keeps it rather than building another LLM: it reads the pinned policy's
        adapter on every call. A fixed ``adapter`` serves only itself, so it never serves another policy.

        Example:
            >>> llm = TransformersLLM("/models/qwen")
            >>> llm.serves(LLMConfig(model="/models/qwen", adapter="adapter")), llm.serves(LLMConfig(model="gpt-4o"))
            (True, False)
        """
        from agentgym_runtime.policy.artifact import same_model

        if config.endpoint or self.adapter:
            return False
        return config.model is None or same_model(config.model, self.model_path)

    def supports_function_calling(self) -> bool:
        """Tool calls are parsed from the model's own format."""
        return True

    def active_adapter(self) -> Path | None:
        """The LoRA adapter this call serves: the fixed one, else the pinned policy's, else none."""
        return serving_adapter(self.adapter, self.home)

    # --- the call ----------------------------------------------------------------------------------------------------
    def call(
        self,
        messages: str | list[Any],
        tools: list[dict[str, Any]] | None = None,
        callbacks: list[Any] | None = None,
        available_functions: dict[str, Any] | None = None,
        from_task: Any = None,
        from_agent: Any = None,
        response_model: type[BaseModel] | None = None,
    ) -> str | Any:
        """One completion: ReAct text for the agent loop, a tool's result or tool calls for function calling.

        Raises:
            ChatTemplateError: The model has no chat template, or it refused the conversation.
            AdapterError: The pinned adapter is missing or was trained on another base model.
        """
        self._emit_call_started_event(
            messages=messages,
            tools=tools,
            callbacks=callbacks,
            available_functions=available_functions,
            from_task=from_task,
            from_agent=from_agent,
        )
        try:
            conversation = [dict(m) for m in self._format_messages(messages)]
            offered: Sequence[Mapping[str, Any]] | None = tools
            if not tools and self.offer_agent_tools:
                offered = tool_definitions(agent_tools(from_agent))
            request: dict[str, Any] = {
                "messages": conversation,
                "tools": list(offered) if offered else None,
                "adapter": self.active_adapter(),  # read here: the pinned policy is this context's
                "max_new_tokens": self.max_new_tokens,
                "temperature": self.temperature or 0.0,
                "stop": list(self.stop) or None,
            }
            if self.stream:
                stream = self.engine.stream(**request)
                sent = ""
                for piece in stream:
                    sent += piece
                    self._emit_stream_chunk_event(piece, from_task, from_agent)
                assert stream.result is not None  # set once the stream is exhausted
                generation = stream.result
            else:
                generation = self.engine.generate(**request)
            self._track_token_usage_internal(
                {"prompt_tokens": generation.prompt_tokens, "completion_tokens": generation.completion_tokens}
            )
            if tools:
                result = self._function_calling(generation, available_functions, from_task, from_agent)
                if result is not None:
                    return result
            answer = self._answer(generation, response_model)
        except Exception as exc:
            self._emit_call_failed_event(str(exc), from_task, from_agent)
            raise
        if self.stream and answer.startswith(sent) and len(answer) > len(sent):
            self._emit_stream_chunk_event(answer[len(sent) :], from_task, from_agent)  # the action, as CrewAI reads it
        self._emit_call_completed_event(
            response=answer,
            call_type=LLMCallType.LLM_CALL,
            from_task=from_task,
            from_agent=from_agent,
            messages=conversation,
        )
        return answer

    def _answer(self, generation: Generation, response_model: type[BaseModel] | None) -> str:
        """The reply as text: the content, with the first tool call as a ReAct action when it is not one yet."""
        content = generation.parsed.content
        calls = generation.calls()
        if calls and not _is_react(content):
            # CrewAI's loop runs one action per turn: the first call; the model sees the others' absence next turn.
            return react_text(content, calls[0])
        if response_model is not None:
            validated = self._validate_structured_output(content, response_model)
            return validated.model_dump_json() if isinstance(validated, BaseModel) else str(validated)
        return content

    def _function_calling(
        self, generation: Generation, available_functions: dict[str, Any] | None, from_task: Any, from_agent: Any
    ) -> Any:
        """What ``crewai.LLM`` returns for tool calls when CrewAI passed tools (``None``: answer with the text)."""
        calls = [c for c in generation.calls() if c.valid]
        if not calls:
            return None
        if available_functions:
            call = calls[0]  # crewai.LLM runs the first call only
            if call.name in available_functions:
                assert call.args is not None
                return self._handle_tool_execution(call.name, call.args, available_functions, from_task, from_agent)
            return None
        if generation.parsed.content:
            return None
        return [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls]


def llm_factory(config: LLMConfig) -> TransformersLLM:
    """The :class:`TransformersLLM` serving a policy whose ``llm`` names a local model (the routing registry's factory).

    ``sampling`` may set ``max_new_tokens`` (or ``max_tokens``) and ``temperature``; the adapter is read
    from the pinned policy per call.

    Example:
        >>> llm_factory(LLMConfig(model="/models/qwen", sampling={"max_tokens": 64})).max_new_tokens
        64
    """
    if not config.model:
        raise ValueError("an in-process CrewAI LLM needs the policy's llm.model: the base model's directory")
    sampling = dict(config.sampling)
    budget = sampling.get("max_new_tokens", sampling.get("max_tokens", 256))
    return TransformersLLM(
        config.model, max_new_tokens=int(budget), temperature=float(sampling.get("temperature", 0.0))
    )


def is_local_model(config: LLMConfig) -> bool:
    """Whether ``config`` names a model directory on this machine and no endpoint (served in-process).

    Example:
        >>> is_local_model(LLMConfig(model="gpt-4o-mini")), is_local_model(LLMConfig(model="/", endpoint="http://x"))
        (False, False)
    """
    return not config.endpoint and bool(config.model) and os.path.isdir(os.path.expanduser(str(config.model)))


__all__ = ["TransformersLLM", "agent_tools", "is_local_model", "llm_factory", "react_text", "tool_definitions"]
