"""Next to another instrumentor (OpenInference) our store counts every tool call exactly once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from opentelemetry import trace

import agentgym_runtime as agentgym
from agentgym_runtime.adapters import load_adapter
from agentgym_runtime.testing import Recorded


class Scripted(GenericFakeChatModel):
    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)


@tool
def lookup(order_id: int) -> str:
    """Look up an order."""
    return f"order {order_id} shipped"


@pytest.fixture
def openinference() -> Iterator[None]:
    from openinference.instrumentation.langchain import LangChainInstrumentor

    instrumentor = LangChainInstrumentor()
    instrumentor.instrument(tracer_provider=trace.get_tracer_provider())
    try:
        yield
    finally:
        instrumentor.uninstrument()
        adapter = load_adapter("langchain")
        while type(adapter)._instrument_count:
            adapter.uninstrument()


def test_openinference_spans_are_kept_but_never_counted_twice(
    agentgym_runtime: Any, openinference: None, recorded: Recorded
) -> None:
    script = iter(
        [
            AIMessage(
                content="", tool_calls=[{"name": "lookup", "args": {"order_id": 1}, "id": "a", "type": "tool_call"}]
            ),
            AIMessage(content="", tool_calls=[{"name": "nope", "args": {}, "id": "b", "type": "tool_call"}]),
            AIMessage(content="done"),
        ]
    )
    agent = agentgym.train_online(create_agent(Scripted(messages=script), tools=[lookup]), name="both")
    agent.invoke({"messages": [("user", "order 1?")]})
    (episode,) = recorded.episodes("both")
    assert (episode["tool_calls"], episode["tool_failures"], episode["llm_calls"]) == (2, 1, 3)
    assert recorded.outcomes(episode["episode_id"]) == {"ok": 1, "unknown_tool": 1}
    scopes = {row["scope_name"] for row in recorded.spans(episode["episode_id"])}
    # OpenInference's own spans were stamped with the episode and stored alongside ours...
    assert any(scope and scope.startswith("openinference") for scope in scopes)
    # ...but only ours carry an outcome, so the tool_calls view and the episode counters hold
    # each requested call once.
    rows = recorded.query(
        "SELECT scope_name, count(*) AS n FROM spans WHERE episode_id = ? AND tool_outcome IS NOT NULL GROUP BY 1",
        [episode["episode_id"]],
    )
    assert rows == [{"scope_name": "agentgym_runtime", "n": 2}]
