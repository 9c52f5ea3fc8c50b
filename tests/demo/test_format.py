"""The demo model's text format (no torch needed)."""

from __future__ import annotations

from agentgym_runtime.demo.model.format import (
    Step,
    delexicalize,
    parse_completion,
    relexicalize,
    render_call,
    render_prompt,
    score_completion,
)
from agentgym_runtime.scenarios import get_scenario


def test_delexicalize_round_trip_and_idempotence() -> None:
    text = 'Hi, this is Ana. Order 1234 for ana@example.com. {"name": "Ana", "orders": [1234, 77]}'
    slotted, slots = delexicalize(text)
    assert slotted == 'Hi, this is <w1>. Order <n1> for <e1>. {"name": "<w1>", "orders": [<n1>, <n2>]}'
    assert slots == {"<w1>": "Ana", "<n1>": "1234", "<e1>": "ana@example.com", "<n2>": "77"}
    assert relexicalize(slotted, slots) == text
    assert delexicalize(slotted) == (slotted, {})
    assert relexicalize("<n9> stays", slots) == "<n9> stays"


def test_file_paths_are_slots_without_the_sentence_full_stop() -> None:
    text = 'Quick lint of PR 897: billing/invoice.py. {"files": ["billing/invoice.py", "api/v2/server.py"]}'
    slotted, slots = delexicalize(text)
    assert slotted == 'Quick lint of PR <n1>: <p1>. {"files": ["<p1>", "<p2>"]}'
    assert slots == {"<n1>": "897", "<p1>": "billing/invoice.py", "<p2>": "api/v2/server.py"}
    assert relexicalize('{"path": "<p2>"}', slots) == '{"path": "api/v2/server.py"}'


def test_prompt_format_and_parsing() -> None:
    step = Step(render_call("get_order", {"order_id": 5}), '{"status": "shipped"}')
    assert render_prompt("Where is order 5?", ["get_order", "cancel_order"], [step]) == (
        "tools: get_order cancel_order\nuser: Where is order 5?\n"
        'call: {"name": "get_order", "arguments": {"order_id": 5}}\nresult: {"status": "shipped"}\nnext:'
    )
    broken = parse_completion('{"name": "open_ticket", "arguments": {"order_id": 5, "priority": "high"}')
    assert (broken.kind, broken.name, broken.arguments, broken.error) == (
        "tool_call",
        "open_ticket",
        None,
        "arguments are not valid JSON",
    )
    assert broken.raw_arguments == '{"order_id": 5, "priority": "high"}'
    assert parse_completion("garbage").kind == "empty"


def test_score_completion_covers_every_outcome() -> None:
    support = get_scenario("customer_support")
    task = next(t for t in support.tasks("train", 40, seed=0) if t.intent == "cancel")
    call = task.expected_calls[0]
    assert score_completion(task, render_call(call.name, call.arguments)).reward == 1.0
    other = next(o for o in support.new_world(0).orders.values() if o.split == "train")
    ran = score_completion(task, render_call("get_order", {"order_id": other.order_id}))
    assert (ran.outcome, ran.matches_expected, ran.reward) == ("ok", False, 0.5)
    assert score_completion(task, render_call("cancel_order", {"order_id": 1})).outcome == "tool_error"
    bad = score_completion(task, render_call("cancel_order", {"order_id": "#1"}))
    assert (bad.outcome, bad.reward) == ("invalid_arguments", 0.1)
    assert "order_id" in (bad.message or "")
    assert score_completion(task, render_call("cancel", {})).outcome == "unknown_tool"
    assert score_completion(task, '{"answer": "done"}').reward == 0.0
