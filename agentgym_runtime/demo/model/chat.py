"""The demo model served in-process as a LangChain chat model that emits real tool calls.

:class:`TinyToolCallingChatModel` turns the conversation (the user's request, earlier tool
calls and their ``ToolMessage`` results) into the demo model's prompt, runs the tiny LM, and
returns an ``AIMessage`` with ``tool_calls`` (or ``invalid_tool_calls`` when the model wrote
broken JSON, as LangChain's own parsers do), or with the final answer as content. Token usage
is reported in ``usage_metadata``.

LoRA hot swap: on every call it reads the pinned policy (:func:`agentgym_runtime.current_policy`);
if ``policy.llm.adapter`` is set, that peft adapter is loaded once and used for the call.

Example:
    >>> from agentgym_runtime.demo.model.chat import TinyToolCallingChatModel  # doctest: +SKIP
    >>> from langchain.agents import create_agent  # doctest: +SKIP
    >>> llm = TinyToolCallingChatModel(scenario="customer_support")  # doctest: +SKIP
    >>> agent = create_agent(llm, tools=[...])  # doctest: +SKIP
"""

from __future__ import annotations

import ast
import json
import re
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agentgym_runtime.demo.model.format import Step, parse_completion, render_call, render_prompt
from agentgym_runtime.demo.model.tiny import DemoModel, load_demo_model, load_or_build_demo_model
from agentgym_runtime.errors import MissingExtraError
from agentgym_runtime.recording.policy import resolve_adapter_path

try:
    from langchain_core.callbacks import CallbackManagerForLLMRun
    from langchain_core.language_models import BaseChatModel, LanguageModelInput
    from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
    from langchain_core.outputs import ChatGeneration, ChatResult
    from langchain_core.runnables import Runnable
    from langchain_core.tools import BaseTool
    from langchain_core.utils.function_calling import convert_to_openai_tool
    from pydantic import ConfigDict, PrivateAttr
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("demo chat model", "langchain", exc.name or "langchain_core") from exc


# LangGraph's ToolNode wraps tool errors in its own sentences (langgraph.prebuilt.tool_node's
# INVALID_TOOL_NAME_ERROR_TEMPLATE and TOOL_INVOCATION_ERROR_TEMPLATE). The demo model learnt the
# compact error lines agentgym's own tools write (ToolArgumentsError / UnknownToolError), which the
# offline evaluator shows too; mapping the one onto the other is this model's chat template, and it
# keeps live traffic and the offline evaluation on the same prompts.
_UNKNOWN_TOOL = re.compile(r"^Error: (?P<name>.+?) is not a valid tool, try one of \[(?P<tools>.*)\]\.?\s*$", re.S)
_INVALID_ARGUMENTS = re.compile(
    r"^Error invoking tool '(?P<name>[^']*)' with kwargs .*? with error:\n (?P<error>.*?)\n"
    r" Please fix the error and try again\.?\s*$",
    re.S,
)


def error_observation(content: str) -> str:
    r"""A framework's tool-error text in the demo model's own error format (other text unchanged).

    Example:
        >>> error_observation("Error: refund is not a valid tool, try one of [get_order, cancel_order].")
        "unknown tool 'refund'; available tools: cancel_order, get_order"
        >>> error_observation("Error invoking tool 'get_order' with kwargs {} with error:\n order_id: Field required"
        ...                   "\n Please fix the error and try again.")
        "invalid arguments for tool 'get_order': order_id: Field required"
    """
    unknown = _UNKNOWN_TOOL.match(content)
    if unknown:
        available = sorted(t.strip() for t in unknown["tools"].split(",") if t.strip())
        return f"unknown tool {unknown['name']!r}; available tools: {', '.join(available)}"
    invalid = _INVALID_ARGUMENTS.match(content)
    if invalid:
        details = "; ".join(line.strip() for line in invalid["error"].splitlines() if line.strip())
        return f"invalid arguments for tool {invalid['name']!r}: {details}"
    return content


def _observation(content: Any, *, error: bool = False) -> str:
    text = content if isinstance(content, str) else json.dumps(content, default=str)
    if error:
        return error_observation(text)
    try:
        value = ast.literal_eval(text)  # LangChain renders dict results with repr(); show them as JSON
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return text


def messages_to_prompt(messages: Sequence[BaseMessage], tools: Sequence[Any]) -> str:
    """The demo model's prompt for a LangChain conversation (first human message = the task)."""
    task = next((m for m in messages if isinstance(m, HumanMessage)), None)
    text = task.text if task is not None else ""
    history: list[Step] = []
    pending: dict[str, str] = {}
    for message in messages:
        if isinstance(message, AIMessage):
            for call in message.tool_calls:
                pending[call.get("id") or ""] = render_call(call["name"], call.get("args", {}))
            for bad in message.invalid_tool_calls:
                pending[bad.get("id") or ""] = (
                    json.dumps({"name": bad.get("name")})[:-1] + f', "arguments": {bad.get("args")}'
                )
        elif isinstance(message, ToolMessage):
            completion = pending.pop(message.tool_call_id, None) or next(iter(pending.values()), "")
            failed = message.status == "error"
            history.append(Step(completion, _observation(message.content, error=failed), error=failed))
    names = [t for t in (_tool_name(t) for t in tools) if t]
    return render_prompt(text, names, history)


def _tool_name(tool: Any) -> str | None:
    if isinstance(tool, dict):
        if isinstance(tool.get("function"), dict):
            return str(tool["function"].get("name"))
        return str(tool.get("name")) if tool.get("name") else None
    return getattr(tool, "name", None)


def completion_to_message(text: str, input_tokens: int, output_tokens: int, model_name: str) -> AIMessage:
    """The ``AIMessage`` for one completion: a tool call, an invalid tool call, or an answer."""
    parsed = parse_completion(text)
    usage = {"input_tokens": input_tokens, "output_tokens": output_tokens, "total_tokens": input_tokens + output_tokens}
    metadata = {"model_name": model_name, "finish_reason": "stop"}
    call_id = f"call_{uuid.uuid4().hex[:12]}"
    if parsed.kind == "tool_call" and parsed.arguments is not None:
        return AIMessage(
            content="",
            tool_calls=[{"name": parsed.name or "", "args": parsed.arguments, "id": call_id, "type": "tool_call"}],
            usage_metadata=usage,
            response_metadata=metadata,
        )
    if parsed.kind == "tool_call":
        return AIMessage(
            content="",
            invalid_tool_calls=[
                {
                    "name": parsed.name,
                    "args": parsed.raw_arguments,
                    "id": call_id,
                    "error": parsed.error,
                    "type": "invalid_tool_call",
                }
            ],
            usage_metadata=usage,
            response_metadata=metadata,
        )
    content = parsed.answer if parsed.kind == "answer" and parsed.answer is not None else text
    return AIMessage(content=content, usage_metadata=usage, response_metadata=metadata)


class TinyToolCallingChatModel(BaseChatModel):
    """LangChain chat model over the demo model, with tool calling and per-policy LoRA adapters.

    Attributes:
        scenario: Scenario the model was warm-started on (selects the cached model).
        home: agentgym home holding ``models/`` (default: the settings' home).
        seed: Build seed.
        model_path: Load this saved demo model instead of the cached one.
        adapter: Always use this LoRA adapter (default: the pinned policy's ``llm.adapter``).

    Example:
        >>> from agentgym_runtime.demo.model.chat import TinyToolCallingChatModel  # doctest: +SKIP
        >>> llm = TinyToolCallingChatModel(scenario="customer_support", home="/tmp/ag")  # doctest: +SKIP
        >>> llm.bind_tools(tools).invoke("Where is order 1234?").tool_calls  # doctest: +SKIP
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    scenario: str = "customer_support"
    home: str | None = None
    seed: int = 0
    model_path: str | None = None
    adapter: str | None = None
    _demo: DemoModel | None = PrivateAttr(default=None)

    @classmethod
    def from_demo_model(cls, demo: DemoModel, **kwargs: Any) -> TinyToolCallingChatModel:
        """Wrap an already loaded demo model."""
        chat = cls(scenario=demo.scenario, model_path=str(demo.path), **kwargs)
        chat._demo = demo
        return chat

    @property
    def _llm_type(self) -> str:
        return "agentgym-tiny"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "model_path": self.model_path, "adapter": self.adapter}

    def demo_model(self) -> DemoModel:
        """The underlying demo model (loaded or built on first use)."""
        if self._demo is None:
            if self.model_path is not None:
                self._demo = load_demo_model(self.model_path)
            else:
                self._demo = load_or_build_demo_model(self.scenario, self.home, self.seed)
        return self._demo

    def active_adapter(self) -> Path | None:
        """The LoRA adapter this call uses: the fixed one, else the pinned policy's, else none."""
        if self.adapter:
            return Path(self.adapter)
        from agentgym_runtime.api import current_policy

        policy = current_policy()
        if policy is None:
            return None
        return resolve_adapter_path(policy, self.home)

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer ``tools`` to the model (OpenAI tool format, as other chat models do)."""
        formatted = [convert_to_openai_tool(t) for t in tools]
        return self.bind(tools=formatted, **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        demo = self.demo_model()
        prompt = messages_to_prompt(messages, kwargs.get("tools") or [])
        text, n_in, n_out = demo.complete([prompt], adapter=self.active_adapter())[0]
        message = completion_to_message(text, n_in, n_out, f"{demo.scenario}-tiny")
        usage = {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}
        return ChatResult(
            generations=[ChatGeneration(message=message)],
            llm_output={"token_usage": usage, "model_name": f"{demo.scenario}-tiny"},
        )
