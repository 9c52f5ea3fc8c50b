"""MCP tools, first class (issue 12): a real FastMCP server over stdio and streamable HTTP on loopback.

The server's ``inputSchema`` is the schema checked; an ``isError`` answer is ``error_result``; a
server that is down is ``tool_error``; the server's name and transport are on the span.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage
from langchain_mcp_adapters.client import MultiServerMCPClient
from langchain_mcp_adapters.tools import convert_mcp_tool_to_langchain_tool
from mcp.types import Tool as McpTool

import agentgym_runtime as agentgym
from agentgym_runtime import semconv
from agentgym_runtime.recording.runtime import Runtime
from agentgym_runtime.testing import Recorded
from tests.adapters.test_langchain import ScriptedChatModel

SERVER = str(Path(__file__).with_name("mcp_server.py"))

CALLS = [
    ("lookup", {"order_id": "A1"}, "ok"),
    ("lookup", {"order_id": 7}, "invalid_arguments"),  # the server's inputSchema says string
    ("refund", {"order_id": "A1"}, "error_result"),  # the server answers isError
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def http_server() -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, SERVER, "http", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        # Generous: on a loaded 2-core machine importing FastMCP alone took 13 s; the wait ends when it answers.
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.HTTPError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the MCP server did not start (exit status {process.poll()})")
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def _script(calls: list[tuple[str, dict[str, Any], str]]) -> Any:
    def script(turn: int, question: str) -> AIMessage:
        if turn == 0:
            return AIMessage(
                "",
                tool_calls=[
                    {"name": name, "args": args, "id": f"m{i}", "type": "tool_call"}
                    for i, (name, args, _) in enumerate(calls)
                ],
            )
        return AIMessage("done")

    return script


def _attrs(row: dict[str, Any]) -> dict[str, Any]:
    value = row["attributes"]
    return json.loads(value) if isinstance(value, str) else dict(value or {})


async def _run(connection: dict[str, Any], calls: list[tuple[str, dict[str, Any], str]], name: str) -> Any:
    client = MultiServerMCPClient({"orders": connection})
    tools = await client.get_tools()
    agent = agentgym.train_online(create_agent(ScriptedChatModel(script=_script(calls)), tools), name=name)
    return await agent.ainvoke({"messages": [HumanMessage("where is order A1?")]})


def _check(recorded: Recorded, name: str, transport: str, target: str) -> None:
    (row,) = recorded.episodes(name)
    assert recorded.outcomes(row["episode_id"]) == {"ok": 1, "invalid_arguments": 1, "error_result": 1}
    spans = {
        s["tool_call_id"]: {**s, **_attrs(s)}
        for s in recorded.spans(row["episode_id"])
        if s["operation"] == "execute_tool"
    }
    assert sorted(spans) == ["m0", "m1", "m2"]
    for i, (_, _, outcome) in enumerate(CALLS):
        span = spans[f"m{i}"]
        assert span["tool_outcome"] == outcome
        assert span[semconv.MCP_SERVER_NAME] == "orders"
        assert span[semconv.MCP_TRANSPORT] == transport
        assert target in span[semconv.MCP_SERVER_TARGET]
    assert "cannot be refunded" in spans["m2"][semconv.TOOL_ERROR_MESSAGE]
    # The server validated too (FastMCP answers isError); ours says why, from its inputSchema.
    assert spans["m1"][semconv.TOOL_EXECUTED_OUTCOME] == "error_result"
    assert "order_id" in spans["m1"][semconv.TOOL_ERROR_MESSAGE]


def test_langchain_mcp_tools_over_stdio(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    connection = {"command": sys.executable, "args": [SERVER], "transport": "stdio"}
    result = asyncio.run(_run(connection, CALLS, "mcp-stdio"))
    assert result["messages"][-1].content == "done"
    _check(recorded, "mcp-stdio", "stdio", "mcp_server.py")


def test_langchain_mcp_tools_over_streamable_http(
    agentgym_runtime: Runtime, recorded: Recorded, http_server: str
) -> None:
    connection = {"url": http_server, "transport": "streamable_http"}
    result = asyncio.run(_run(connection, CALLS, "mcp-http"))
    assert result["messages"][-1].content == "done"
    _check(recorded, "mcp-http", "streamable_http", http_server)


def test_langchain_mcp_server_down_is_tool_error(
    agentgym_runtime: Runtime, recorded: Recorded, http_server: str
) -> None:
    async def run() -> Any:
        client = MultiServerMCPClient({"orders": {"url": http_server, "transport": "streamable_http"}})
        (listed,) = [tool for tool in await client.get_tools() if tool.name == "lookup"]
        # The tool as the server listed it, now bound to a server that is not there (nothing listens).
        down = f"http://127.0.0.1:{_free_port()}/mcp"
        tool = convert_mcp_tool_to_langchain_tool(
            None,
            McpTool(name="lookup", inputSchema=dict(listed.args_schema)),
            connection={"url": down, "transport": "streamable_http"},
        )
        calls = [("lookup", {"order_id": "A1"}, "tool_error")]
        agent = agentgym.train_online(create_agent(ScriptedChatModel(script=_script(calls)), [tool]), name="mcp-down")
        try:
            return await agent.ainvoke({"messages": [HumanMessage("where is order A1?")]})
        except Exception as exc:  # the host's own exception passes through unchanged
            return exc

    result = asyncio.run(run())
    (row,) = recorded.episodes("mcp-down")
    assert recorded.outcomes(row["episode_id"]) == {"tool_error": 1}
    (span,) = [s for s in recorded.spans(row["episode_id"]) if s["operation"] == "execute_tool"]
    assert isinstance(result, BaseExceptionGroup)  # the host's own error, unchanged
    assert "TaskGroup" in _attrs(span)[semconv.TOOL_ERROR_MESSAGE]


# --- AutoGen: AssistantAgent with an McpWorkbench ------------------------------------------------


def _autogen_agent(workbench: Any, calls: list[tuple[str, dict[str, Any], str]], name: str) -> Any:
    from autogen_agentchat.agents import AssistantAgent
    from autogen_ext.models.replay import ReplayChatCompletionClient

    from tests.adapters.test_autogen import INFO, calls_result

    script = calls_result(*((f"m{i}", tool, json.dumps(args)) for i, (tool, args, _) in enumerate(calls)))
    client = ReplayChatCompletionClient([script, "done"], model_info=INFO)
    return AssistantAgent(name, model_client=client, workbench=workbench, system_message="You are support.")


def _autogen_run(params: Any, calls: list[tuple[str, dict[str, Any], str]], name: str) -> Any:
    from autogen_ext.tools.mcp import McpWorkbench

    async def run() -> Any:
        async with McpWorkbench(params) as workbench:
            agent = agentgym.train_online(_autogen_agent(workbench, calls, name), name=name)
            return await agent.run(task="where is order A1?")

    return asyncio.run(run())


def test_autogen_mcp_workbench_over_stdio(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    from autogen_ext.tools.mcp import StdioServerParams

    _autogen_run(StdioServerParams(command=sys.executable, args=[SERVER]), CALLS, "ag_mcp_stdio")
    _check(recorded, "ag_mcp_stdio", "stdio", "mcp_server.py")


def test_autogen_mcp_workbench_over_streamable_http(
    agentgym_runtime: Runtime, recorded: Recorded, http_server: str
) -> None:
    from autogen_ext.tools.mcp import StreamableHttpServerParams

    _autogen_run(StreamableHttpServerParams(url=http_server), CALLS, "ag_mcp_http")
    _check(recorded, "ag_mcp_http", "streamable_http", http_server)


def test_autogen_mcp_timeout_is_tool_error(agentgym_runtime: Runtime, recorded: Recorded, http_server: str) -> None:
    from autogen_ext.tools.mcp import StreamableHttpServerParams

    calls = [("slow", {"seconds": 3}, "tool_error")]
    _autogen_run(StreamableHttpServerParams(url=http_server, sse_read_timeout=0.5), calls, "ag_mcp_slow")
    (row,) = recorded.episodes("ag_mcp_slow")
    assert recorded.outcomes(row["episode_id"]) == {"tool_error": 1}


# --- CrewAI: an Agent with native ``mcps`` ---------------------------------------------------------


def test_crewai_native_mcps_over_streamable_http(
    agentgym_runtime: Runtime, recorded: Recorded, http_server: str
) -> None:
    from crewai import Agent, Crew, Task
    from crewai.mcp import MCPServerHTTP

    from tests.adapters.test_crewai import ScriptedLLM

    def step(tool: str, args: dict[str, Any]) -> str:
        return f"Thought: use it\nAction: {tool}\nAction Input: {json.dumps(args)}"

    server = MCPServerHTTP(url=http_server)
    # CrewAI names each MCP tool "<server>_<tool>" (the server from the URL).
    prefix = http_server.removeprefix("http://").replace(".", "_").replace("/", "_") + "_"
    replies = [step(prefix + tool, args) for tool, args, _ in CALLS]
    llm = ScriptedLLM([*replies, "Thought: done\nFinal Answer: shipped"])
    agent = Agent(
        role="support",
        goal="answer order questions",
        backstory="You help.",
        llm=llm,
        mcps=[server],
        verbose=False,
        max_iter=10,
    )
    task = Task(description="Where is order A1?", expected_output="status", agent=agent)
    crew = agentgym.train_online(Crew(agents=[agent], tasks=[task], verbose=False), name="crew_mcp")
    crew.kickoff()
    (row,) = recorded.episodes("crew_mcp")
    # CrewAI retries a call its own validation refused: three attempts of the invalid one.
    assert recorded.outcomes(row["episode_id"]) == {"ok": 1, "invalid_arguments": 3, "error_result": 1}
    spans = [{**s, **_attrs(s)} for s in recorded.spans(row["episode_id"]) if s["operation"] == "execute_tool"]
    assert [s["tool_outcome"] for s in spans] == ["ok", *["invalid_arguments"] * 3, "error_result"]
    for span in (spans[0], spans[-1]):  # the two calls that reached the server
        # The server's name; CrewAI opens its transport outside the context our transport
        # wrapper marks, so the transport is not known on CrewAI's spans yet.
        assert span[semconv.MCP_SERVER_NAME] == "orders"
    assert "order_id: 7 is not of type 'string'" in spans[1][semconv.TOOL_ERROR_MESSAGE]
    assert "cannot be refunded" in spans[-1][semconv.TOOL_ERROR_MESSAGE]
