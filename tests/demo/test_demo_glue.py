"""The demo's GRPO glue: recorded episodes -> the demo model's prompts, rewards and guides."""

from __future__ import annotations

from agentgym_runtime.demo.loop import grpo_guide, grpo_prompt, grpo_reward
from agentgym_runtime.demo.model.format import execute_call, parse_completion, render_call
from agentgym_runtime.scenarios import get_scenario
from agentgym_runtime.scenarios.base import Task
from agentgym_runtime.trainers.dataset import RecordedToolCall
from agentgym_runtime.trainers.dataset import Task as Recorded


def _task(pitfall: str) -> Task:
    scenario = get_scenario("customer_support")
    return next(
        t
        for t in scenario.tasks("heldout", 200, seed=3)
        if t.pitfall == pitfall and t.expected_calls[0].name == "get_order"
    )


def _recorded(task: Task, calls: list[RecordedToolCall], output: str | None, episode: str) -> Recorded:
    return Recorded(
        episode_id=episode,
        agent="customer-support-bot",
        input={"question": task.prompt, "task_id": task.id},
        output=output,
        tool_calls=calls,
    )


def test_a_recovered_episode_gives_a_call_step_and_an_answer_step_with_what_worked() -> None:
    scenario = get_scenario("customer_support")
    task = _task("wrong_type")  # "order #1234": version 0 sends the id as a string first
    expected = task.expected_calls[0]
    tools = scenario.tools(scenario.new_world(task.world_seed))
    _, result, _ = execute_call(parse_completion(render_call(expected.name, expected.arguments)), tools)
    wrong = {"order_id": f"#{expected.arguments['order_id']}"}
    recorded = _recorded(
        task,
        [
            RecordedToolCall(name="get_order", arguments=wrong, outcome="invalid_arguments"),
            RecordedToolCall(name="get_order", arguments=dict(expected.arguments), result=result, outcome="ok"),
        ],
        output=str(task.expected_answer),
        episode="recovered",
    )
    call_prompt, answer_prompt = grpo_prompt(recorded)
    assert call_prompt.endswith("next:") and "result:" not in call_prompt
    assert "<n1>" in call_prompt and str(expected.arguments["order_id"]) not in call_prompt  # delexicalised
    assert "\ncall: " in answer_prompt and "\nresult: " in answer_prompt

    [call_guide] = grpo_guide(recorded, prompt=call_prompt)
    assert call_guide == ' {"name": "get_order", "arguments": {"order_id": <n1>}}'
    assert grpo_reward(recorded, call_guide, prompt=call_prompt) == 1.0
    assert (
        grpo_reward(recorded, ' {"name": "get_order", "arguments": {"order_id": "#<n1>"}}', prompt=call_prompt) == 0.1
    )
    assert grpo_reward(recorded, ' {"name": "lookup_order", "arguments": {}}', prompt=call_prompt) == 0.0

    [answer_guide] = grpo_guide(recorded, prompt=answer_prompt)
    assert parse_completion(answer_guide).kind == "answer"
    assert grpo_reward(recorded, answer_guide, prompt=answer_prompt) == 1.0
    assert grpo_reward(recorded, ' {"answer": "no idea"}', prompt=answer_prompt) == 0.1
    assert grpo_reward(recorded, call_guide, prompt=answer_prompt) == 0.0  # a call where the answer was due
    assert grpo_reward(recorded, call_guide, prompt="not one of its prompts") == 0.0


def test_an_episode_where_nothing_worked_gives_only_the_call_step_and_no_guide() -> None:
    task = _task("wrong_type")
    bad = {"order_id": f"#{task.expected_calls[0].arguments['order_id']}"}
    recorded = _recorded(
        task, [RecordedToolCall(name="get_order", arguments=bad, outcome="invalid_arguments")], None, "failed"
    )
    [call_prompt] = grpo_prompt(recorded)
    assert grpo_guide(recorded, prompt=call_prompt) == []
    # A wrong final answer is no guide either.
    scenario = get_scenario("customer_support")
    expected = task.expected_calls[0]
    tools = scenario.tools(scenario.new_world(task.world_seed))
    _, result, _ = execute_call(parse_completion(render_call(expected.name, expected.arguments)), tools)
    wrong_answer = _recorded(
        task,
        [RecordedToolCall(name="get_order", arguments=dict(expected.arguments), result=result, outcome="ok")],
        "I could not find it",
        "wrong-answer",
    )
    _, answer_prompt = grpo_prompt(wrong_answer)
    assert grpo_guide(wrong_answer, prompt=answer_prompt) == []
    # An episode that is not a scenario task gives nothing to train on.
    assert grpo_prompt(Recorded(episode_id="other", agent="x", input={"question": "hi"})) == []


def test_a_call_whose_json_was_cut_short_guides_towards_the_same_call_written_whole() -> None:
    """No recovery follows an unparsable call; its recorded arguments, if they run, are the guide."""
    scenario = get_scenario("code_review")
    task = next(t for t in scenario.tasks("heldout", 300, seed=3) if t.pitfall == "malformed_json")
    expected = task.expected_calls[0]
    raw = render_call(expected.name, expected.arguments)[:-1]  # what version 0 writes: the last brace is missing
    parsed = parse_completion(raw)
    assert parsed.arguments is None and parsed.error == "arguments are not valid JSON"
    cut_short = RecordedToolCall(
        name=expected.name, arguments=dict(expected.arguments), outcome="invalid_arguments", error_type="ValueError"
    )
    recorded = _recorded(task, [cut_short], "Request changes failed.", "cut-short")
    call_prompt, answer_prompt = grpo_prompt(recorded)
    [guide] = grpo_guide(recorded, prompt=call_prompt)
    assert guide == " " + render_call(expected.name, {**expected.arguments, "pr_id": "<n1>"}).replace('"<n1>"', "<n1>")
    assert grpo_reward(recorded, guide, prompt=call_prompt) == 1.0
    assert grpo_reward(recorded, guide[:-1], prompt=call_prompt) == 0.1  # cut short again: invalid arguments
    # the answer step is trained too (the call's result is replayed), but the episode's answer was wrong
    assert '"state": "changes_requested"' in answer_prompt
    assert grpo_guide(recorded, prompt=answer_prompt) == []

    # Arguments the tool's schema rejects are no guide: that call was wrong, not cut short.
    wrong = RecordedToolCall(
        name=expected.name, arguments={"pr_id": f"#{expected.arguments['pr_id']}"}, outcome="invalid_arguments"
    )
    rejected = _recorded(task, [wrong], None, "rejected")
    assert grpo_prompt(rejected) == [call_prompt]
    assert grpo_guide(rejected, prompt=call_prompt) == []
