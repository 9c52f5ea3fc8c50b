"""The demo model as a LangChain chat model: the shared in-process chat model over the demo's engine.

:class:`TinyToolCallingChatModel` is :class:`~agentgym_runtime.models.langchain.TransformersChatModel`
(tool calls, ``invalid_tool_calls`` for broken JSON, usage metadata, streaming, the pinned policy's
LoRA adapter per call) over the demo model's :class:`~agentgym_runtime.models.engine.ChatEngine`,
which serves it in its own format (:class:`~agentgym_runtime.demo.model.serving.DemoFormat`). All this
class adds is finding the demo model: the scenario's cached build, or a saved one.

Example:
    >>> from agentgym_runtime.demo.model.chat import TinyToolCallingChatModel  # doctest: +SKIP
    >>> from langchain.agents import create_agent  # doctest: +SKIP
    >>> llm = TinyToolCallingChatModel(scenario="customer_support")  # doctest: +SKIP
    >>> agent = create_agent(llm, tools=[...])  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentgym_runtime.demo.model.serving import error_observation, render_messages
from agentgym_runtime.demo.model.tiny import DemoModel, load_demo_model, load_or_build_demo_model
from agentgym_runtime.errors import MissingExtraError
from agentgym_runtime.models.engine import ChatEngine
from agentgym_runtime.models.langchain import TransformersChatModel, to_openai_messages

try:
    from langchain_core.messages import BaseMessage
    from pydantic import PrivateAttr
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("demo chat model", "langchain", exc.name or "langchain_core") from exc


def messages_to_prompt(messages: Sequence[BaseMessage], tools: Sequence[Any]) -> str:
    """The demo model's prompt for a LangChain conversation (what the chat model renders for a call)."""
    return render_messages(to_openai_messages(messages), tools)


class TinyToolCallingChatModel(TransformersChatModel):
    """LangChain chat model over the demo model, with tool calling and per-policy LoRA adapters.

    Attributes:
        scenario: Scenario the model was warm-started on (selects the cached model).
        home: agentgym home holding ``models/`` (default: the settings' home).
        seed: Build seed.
        model_path: Load this saved demo model instead of the cached one (``""``: the cached one).
        adapter: Always use this LoRA adapter (default: the pinned policy's ``llm.adapter``).

    Example:
        >>> from agentgym_runtime.demo.model.chat import TinyToolCallingChatModel  # doctest: +SKIP
        >>> llm = TinyToolCallingChatModel(scenario="customer_support", home="/tmp/ag")  # doctest: +SKIP
        >>> llm.bind_tools(tools).invoke("Where is order 1234?").tool_calls  # doctest: +SKIP
    """

    model_path: str = ""
    scenario: str = "customer_support"
    seed: int = 0
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
            if self.model_path:
                self._demo = load_demo_model(self.model_path)
            else:
                self._demo = load_or_build_demo_model(self.scenario, self.home, self.seed)
        return self._demo

    @property
    def engine(self) -> ChatEngine:
        """The demo model's engine (one per loaded demo model, shared by every chat model over it)."""
        return self.demo_model().engine


__all__ = ["TinyToolCallingChatModel", "error_observation", "messages_to_prompt"]
