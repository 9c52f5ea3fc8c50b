"""Real function-calling data through the full LangChain path: wrapped agent, scripted model, the store.

BFCL function definitions and ground-truth calls (``bfcl-eval``), with labelled corruptions, are
sent by a scripted model through a wrapped ``create_agent`` whose tools are ``StructuredTool``s
built from the JSON schema (LangChain does not validate those); the outcomes read back from the
DuckDB store must agree with the labels for at least 99% of the calls of each kind.
"""

from __future__ import annotations

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

    agree: Counter[str] = Counter()
    total: Counter[str] = Counter()
    rows = recorded.query(
        "SELECT agent, tool_call_id, tool_outcome FROM spans WHERE operation = 'execute_tool' AND agent LIKE 'bfcl-%'"
    )
    seen = {(r["agent"], r["tool_call_id"]): r["tool_outcome"] for r in rows}
    for index, case in enumerate(cases):
        for kind in case.calls:
            total[kind] += 1
            agree[kind] += seen.get((f"bfcl-{index}", kind)) == LABELS[kind]
    assert set(total) == set(LABELS)
    rates = {kind: agree[kind] / total[kind] for kind in total}
    assert all(rate >= 0.99 for rate in rates.values()), rates
