"""A decorated function that runs a framework agent is captured without any explicit set-up."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool

import agentgym_runtime as agentgym
from agentgym_runtime.adapters import auto_instrument, load_adapter
from agentgym_runtime.testing import Recorded


class Scripted(GenericFakeChatModel):
    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        # As real providers do: the tool definitions travel with each call.
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)


@tool
def lookup(order_id: int) -> str:
    """Look up an order."""
    return f"order {order_id} shipped"


@pytest.fixture
def fresh_langchain() -> Iterator[Any]:
    adapter = load_adapter("langchain")
    while type(adapter)._instrument_count:
        adapter.uninstrument()
    type(adapter)._auto_opt_out = False  # as in a fresh process
    yield adapter
    while type(adapter)._instrument_count:
        adapter.uninstrument()


def test_decorated_function_is_captured_automatically(fresh_langchain: Any, recorded: Recorded) -> None:
    messages = iter(
        [
            AIMessage(
                content="", tool_calls=[{"name": "lookup", "args": {"order_id": 5}, "id": "a", "type": "tool_call"}]
            ),
            AIMessage(content="", tool_calls=[{"name": "teleport", "args": {}, "id": "b", "type": "tool_call"}]),
            AIMessage(content="done"),
        ]
    )
    graph = create_agent(Scripted(messages=messages), tools=[lookup])

    @agentgym.train_online(name="plain-fn")
    def answer(question: str) -> str:
        return str(graph.invoke({"messages": [("user", question)]})["messages"][-1].content)

    assert type(fresh_langchain)._instrument_count == 0
    assert answer("where is order 5?") == "done"
    assert type(fresh_langchain)._instrument_count == 1
    (row,) = recorded.episodes("plain-fn")
    assert recorded.outcomes(row["episode_id"]) == {"ok": 1, "unknown_tool": 1}
    assert row["llm_calls"] == 3


def test_explicit_uninstrument_opts_out(fresh_langchain: Any) -> None:
    fresh_langchain.instrument()
    fresh_langchain.uninstrument()
    assert "langchain" not in auto_instrument()
    assert type(fresh_langchain)._instrument_count == 0
    fresh_langchain.instrument()
    assert type(fresh_langchain)._auto_opt_out is False
