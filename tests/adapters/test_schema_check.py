"""Every executed tool call is checked against the schema the model was shown (issue 12a).

A LangChain ``StructuredTool`` built from a JSON-schema dict (what ``langchain-mcp-adapters``
builds for every MCP tool) runs whatever the model sends; the store must still say
``invalid_arguments`` for a call that breaks the schema, and that the tool ran anyway.
"""

from __future__ import annotations

import json
from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import StructuredTool

import agentgym_runtime as agentgym
from agentgym_runtime import semconv
from agentgym_runtime.recording.runtime import Runtime
from agentgym_runtime.testing import Recorded
from tests.adapters.test_langchain import ScriptedChatModel

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "City name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer"},
    },
    "required": ["city"],
}

CALLS = [
    ({"city": "Oslo", "unit": "celsius", "days": 2}, "ok"),
    ({"unit": "celsius"}, "invalid_arguments"),  # missing required
    ({"city": "Oslo", "days": "two"}, "invalid_arguments"),  # wrong type
    ({"city": "Oslo", "unit": "kelvin"}, "invalid_arguments"),  # enum violation
]


def forecast(**kwargs: Any) -> str:
    return f"sunny with {sorted(kwargs)}"


def weather_tool() -> StructuredTool:
    return StructuredTool.from_function(
        func=forecast, name="forecast", description="Weather forecast.", args_schema=SCHEMA
    )


def script(turn: int, question: str) -> AIMessage:
    if turn == 0:
        return AIMessage(
            "",
            tool_calls=[
                {"name": "forecast", "args": args, "id": f"w{i}", "type": "tool_call"}
                for i, (args, _) in enumerate(CALLS)
            ],
        )
    return AIMessage("done")


def attrs(row: dict[str, Any]) -> dict[str, Any]:
    value = row["attributes"]
    return json.loads(value) if isinstance(value, str) else dict(value or {})


def test_json_schema_tool_calls_that_break_the_schema_are_invalid_arguments(
    agentgym_runtime: Runtime, recorded: Recorded
) -> None:
    llm = ScriptedChatModel(script=script)
    agent = agentgym.train_online(create_agent(llm, [weather_tool()]), name="weather")

    result = agent.invoke({"messages": [HumanMessage("weather in Oslo?")]})

    assert result["messages"][-1].content == "done"
    (row,) = recorded.episodes("weather")
    assert recorded.outcomes(row["episode_id"]) == {"ok": 1, "invalid_arguments": 3}
    tools = {
        s["tool_call_id"]: {**s, **attrs(s)}
        for s in recorded.spans(row["episode_id"])
        if s["operation"] == "execute_tool"
    }
    for i, (_, expected) in enumerate(CALLS):
        span = tools[f"w{i}"]
        assert span["tool_outcome"] == expected
        if expected == "invalid_arguments":
            # LangChain does not validate a dict schema: the tool ran, and its answer is kept.
            assert span[semconv.TOOL_EXECUTED_ANYWAY] is True
            assert span[semconv.TOOL_EXECUTED_OUTCOME] == "ok"
            assert "sunny with" in span["tool_result"]
    assert "city" in tools["w1"][semconv.TOOL_ERROR_MESSAGE]
    assert "'two' is not of type 'integer'" in tools["w2"][semconv.TOOL_ERROR_MESSAGE]
    assert "'kelvin' is not one of" in tools["w3"][semconv.TOOL_ERROR_MESSAGE]


def test_an_invalid_schema_leaves_the_framework_verdict_and_says_why(
    agentgym_runtime: Runtime, recorded: Recorded
) -> None:
    broken = {"type": "object", "properties": {"city": {"type": 12}}}
    tool = StructuredTool.from_function(func=forecast, name="forecast", description="d", args_schema=broken)

    def one_call(turn: int, question: str) -> AIMessage:
        if turn == 0:
            return AIMessage(
                "", tool_calls=[{"name": "forecast", "args": {"city": "x"}, "id": "b1", "type": "tool_call"}]
            )
        return AIMessage("done")

    agent = agentgym.train_online(create_agent(ScriptedChatModel(script=one_call), [tool]), name="broken")
    agent.invoke({"messages": [HumanMessage("hi")]})

    (row,) = recorded.episodes("broken")
    assert recorded.outcomes(row["episode_id"]) == {"ok": 1}
    (span,) = [attrs(s) for s in recorded.spans(row["episode_id"]) if s["operation"] == "execute_tool"]
    assert span[semconv.TOOL_SCHEMA_ERROR].startswith("the tool's schema is invalid")


class HiddenToolsModel(ScriptedChatModel):
    """A model wrapper that does not expose the tool definitions it was bound with."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self


def test_unknown_tool_is_identified_from_the_agents_tool_set_when_the_model_call_has_none(
    agentgym_runtime: Runtime, recorded: Recorded
) -> None:
    def calls(turn: int, question: str) -> AIMessage:
        if turn == 0:
            return AIMessage(
                "",
                tool_calls=[
                    {"name": "forecast", "args": {"city": "Oslo"}, "id": "h1", "type": "tool_call"},
                    {"name": "fly_to_moon", "args": {}, "id": "h2", "type": "tool_call"},
                ],
            )
        return AIMessage("done")

    agent = agentgym.train_online(create_agent(HiddenToolsModel(script=calls), [weather_tool()]), name="hidden")
    agent.invoke({"messages": [HumanMessage("hi")]})

    (row,) = recorded.episodes("hidden")
    assert recorded.outcomes(row["episode_id"]) == {"ok": 1, "unknown_tool": 1}
    (chat, *_) = [s for s in recorded.spans(row["episode_id"]) if s["operation"] == "chat"]
    assert semconv.GEN_AI_TOOL_DEFINITIONS not in attrs(chat)
