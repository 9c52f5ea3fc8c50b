"""Real function-calling data through the full path of each framework: wrapped agent, scripted model, the store.

BFCL function definitions and ground-truth calls (``bfcl-eval``), with labelled corruptions, are
sent by a scripted model through a wrapped ``create_agent`` whose tools are ``StructuredTool``s
built from the JSON schema (LangChain does not validate those); the outcomes read back from the
DuckDB store must agree with the labels for at least 99% of the calls of each kind.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import StructuredTool

import agentgym_runtime as agentgym
from agentgym_runtime.recording.runtime import Runtime
from agentgym_runtime.testing import Recorded
from tests.adapters.bfcl_cases import LABELS, Case, load_cases
from tests.adapters.test_langchain import ScriptedChatModel

CASES = 120


def _assert_agreement(recorded: Recorded, cases: list[Case], prefix: str) -> None:
    """Outcomes read back from the store agree with the labels for >= 99% of each kind's calls."""
    rows = recorded.query(
        "SELECT agent, tool_call_id, tool_outcome FROM spans WHERE operation = 'execute_tool' AND agent LIKE ?",
        [f"{prefix}-%"],
    )
    seen = {(r["agent"], r["tool_call_id"]): r["tool_outcome"] for r in rows}
    agree: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for index, case in enumerate(cases):
        for kind in case.calls:
            total[kind] += 1
            agree[kind] += seen.get((f"{prefix}-{index}", kind)) == LABELS[kind]
    assert set(total) == set(LABELS)
    rates = {kind: agree[kind] / total[kind] for kind in total}
    assert all(rate >= 0.99 for rate in rates.values()), rates


def _script(case: Case) -> Any:
    def script(turn: int, question: str) -> AIMessage:
        if turn > 0:
            return AIMessage("done")
        calls = []
        invalid = []
        for kind, arguments in case.calls.items():
            if kind == "malformed_json":
                invalid.append(
                    {"name": case.name, "args": '{"x": 1', "id": kind, "error": None, "type": "invalid_tool_call"}
                )
                continue
            name = "no_such_tool" if kind == "unknown_tool" else case.name
            calls.append({"name": name, "args": arguments, "id": kind, "type": "tool_call"})
        return AIMessage("", tool_calls=calls, invalid_tool_calls=invalid)

    return script


def test_bfcl_calls_and_corruptions_are_labelled_right_per_kind(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    cases = load_cases(CASES)
    assert len(cases) == CASES and sum("enum_violation" in c.calls for c in cases) >= 20

    for index, case in enumerate(cases):
        tool = StructuredTool.from_function(
            func=lambda **kwargs: "done", name=case.name, description="BFCL function.", args_schema=case.schema
        )
        graph = create_agent(ScriptedChatModel(script=_script(case)), [tool])
        agentgym.train_online(graph, name=f"bfcl-{index}").invoke({"messages": [HumanMessage("go")]})

    _assert_agreement(recorded, cases, "bfcl")


def _autogen_calls(case: Case) -> Any:
    from autogen_core import FunctionCall
    from autogen_core.models import CreateResult, RequestUsage

    calls = []
    for kind, arguments in case.calls.items():
        name = "no_such_tool" if kind == "unknown_tool" else case.name
        text = '{"x": 1' if kind == "malformed_json" else json.dumps(arguments)
        calls.append(FunctionCall(id=kind, name=name, arguments=text))
    return CreateResult(
        finish_reason="function_calls",
        content=calls,
        usage=RequestUsage(prompt_tokens=1, completion_tokens=1),
        cached=False,
    )


def test_bfcl_labels_through_autogen(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    from autogen_agentchat.agents import AssistantAgent
    from autogen_core import CancellationToken
    from autogen_core.tools import BaseTool, ToolSchema
    from pydantic import BaseModel, ConfigDict, create_model

    from tests.adapters.test_autogen import RecordingClient

    class SchemaTool(BaseTool[BaseModel, str]):
        """A tool defined by a JSON schema only (as MCP tools are): AutoGen accepts any arguments."""

        def __init__(self, name: str, parameters: dict[str, Any]) -> None:
            loose = create_model("Arguments", __config__=ConfigDict(extra="allow"))
            super().__init__(loose, str, name, "BFCL function.")
            self._parameters = parameters

        @property
        def schema(self) -> ToolSchema:
            return {"name": self.name, "description": self.description, "parameters": self._parameters}  # type: ignore[typeddict-item]

        async def run(self, args: BaseModel, cancellation_token: CancellationToken) -> str:
            return "done"

    cases = load_cases(CASES)
    for index, case in enumerate(cases):
        client = RecordingClient([_autogen_calls(case)])
        agent = AssistantAgent("bfcl", model_client=client, tools=[SchemaTool(case.name, case.schema)])
        asyncio.run(agentgym.train_online(agent, name=f"ag-bfcl-{index}").run(task="go"))

    _assert_agreement(recorded, cases, "ag-bfcl")


CREWAI_CASES = 25  # a CrewAI kickoff takes ~0.1 s per step: fewer cases, every kind still covered


def test_bfcl_labels_through_crewai(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    from crewai import Agent, Crew, Task
    from crewai.tools import BaseTool as CrewTool
    from pydantic import BaseModel, ConfigDict

    from tests.adapters.test_crewai import ScriptedLLM

    def schema_tool(case: Case) -> CrewTool:
        class Arguments(BaseModel):
            """Accepts anything (as a JSON-schema-only tool does); shows the model the real schema."""

            model_config = ConfigDict(extra="allow")

            @classmethod
            def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
                return case.schema

        class SchemaTool(CrewTool):
            name: str = case.name
            description: str = "BFCL function."
            args_schema: type[BaseModel] = Arguments

            def _run(self, **kwargs: Any) -> str:
                return "done"

        return SchemaTool()

    cases = load_cases(CASES)[:CREWAI_CASES]
    kinds: list[list[str]] = []
    for index, case in enumerate(cases):
        replies = []
        order = []
        for kind, arguments in case.calls.items():
            name = "no_such_tool" if kind == "unknown_tool" else case.name
            text = "oops not json" if kind == "malformed_json" else json.dumps(arguments)
            replies.append(f"Thought: call\nAction: {name}\nAction Input: {text}")
            order.append(kind)
        replies.append("Thought: I now know the final answer\nFinal Answer: done")
        kinds.append(order)
        llm = ScriptedLLM(replies)
        agent = Agent(role="caller", goal="g", backstory="b", llm=llm, tools=[schema_tool(case)], verbose=False)
        task = Task(description="go", expected_output="done", agent=agent)
        crew = agentgym.train_online(Crew(agents=[agent], tasks=[task], verbose=False), name=f"cr-bfcl-{index}")
        crew.kickoff()

    agree: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for index, order in enumerate(kinds):
        (row,) = recorded.episodes(f"cr-bfcl-{index}")
        outcomes = [s["tool_outcome"] for s in recorded.spans(row["episode_id"]) if s["operation"] == "execute_tool"]
        assert len(outcomes) == len(order), (order, outcomes)
        for kind, outcome in zip(order, outcomes, strict=True):
            total[kind] += 1
            agree[kind] += outcome == LABELS[kind]
    assert set(total) == set(LABELS)
    rates = {kind: agree[kind] / total[kind] for kind in total}
    assert all(rate >= 0.99 for rate in rates.values()), rates


def test_bfcl_labels_through_ag2(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    from autogen import ConversableAgent

    from tests.adapters.test_ag2 import ScriptedClient, reply

    cases = load_cases(CASES)
    for index, case in enumerate(cases):
        caller = ConversableAgent(
            "bfcl",
            llm_config={"config_list": [{"model": "scripted", "model_client_cls": "ScriptedClient"}]},
            human_input_mode="NEVER",
        )
        executor = ConversableAgent("executor", llm_config=False, human_input_mode="NEVER")
        # A tool known only by its JSON schema (as MCP tools are): AG2 runs whatever arguments arrive.
        name = caller._normalize_name(case.name)  # AG2 normalizes the names the model sends
        definition = {"name": name, "description": "BFCL function.", "parameters": case.schema}
        caller.update_tool_signature({"type": "function", "function": definition}, is_remove=False)
        executor.register_function({name: lambda **kwargs: "done"})
        calls = [
            (
                kind,
                "no_such_tool" if kind == "unknown_tool" else name,
                '{"x": 1' if kind == "malformed_json" else json.dumps(arguments),
            )
            for kind, arguments in case.calls.items()
        ]
        caller.register_model_client(ScriptedClient, script=[reply(None, *calls), reply("done")], received=[])
        wrapped = agentgym.train_online(caller, name=f"ag2-bfcl-{index}")
        executor.initiate_chat(wrapped, message="go", max_turns=2, silent=True)

    _assert_agreement(recorded, cases, "ag2-bfcl")
