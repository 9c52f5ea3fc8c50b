"""Warm-start data for the demo model: scenario train tasks with systematic, realistic mistakes.

About a third of the train tasks use a phrasing that, in the targets, leads to one of four
mistakes a weak production model makes (see :data:`~agentgym_runtime.scenarios.PITFALLS`):
a hallucinated tool name, an argument of the wrong type, a missing required argument, or
truncated JSON. The targets also show the recovery (the correct call after the error) and
the final answer, so version 0 completes most tasks, at extra cost, with 60-70% tool reliability.

Example:
    >>> from agentgym_runtime.scenarios import get_scenario
    >>> from agentgym_runtime.demo.model.data import warm_start_examples
    >>> examples = warm_start_examples(get_scenario("customer_support"), n_tasks=20, seed=0)
    >>> all(p.endswith("next:") for p, _ in examples)
    True
"""

from __future__ import annotations

import json
from typing import Any

from agentgym_runtime.demo.model.format import (
    Step,
    execute_call,
    parse_completion,
    render_answer,
    render_call,
    render_observation,
    render_prompt,
)
from agentgym_runtime.scenarios.base import ExpectedCall, Scenario, Task


def mistaken_call(scenario: Scenario, task: Task, call: ExpectedCall) -> str:
    """The completion text a weak model writes for ``call`` when ``task`` provokes its pitfall."""
    arguments: dict[str, Any] = dict(call.arguments)
    name = call.name
    if task.pitfall == "hallucinated_tool":
        name = scenario.hallucinated_tools.get(call.name, f"{call.name}_tool")
    elif task.pitfall == "wrong_type":
        for key, value in arguments.items():
            if isinstance(value, int) and not isinstance(value, bool):
                arguments[key] = f"#{value}"
                break
            if isinstance(value, str):
                arguments[key] = [value]
                break
    elif task.pitfall == "missing_argument" and arguments:
        arguments.pop(list(arguments)[-1])
    text = render_call(name, arguments)
    if task.pitfall == "malformed_json":
        text = text[:-1]  # the closing brace never comes
    return text


def task_examples(scenario: Scenario, task: Task) -> list[tuple[str, str]]:
    """``(prompt, completion)`` pairs of one task's trajectory, with its pitfall if it has one."""
    world = scenario.new_world(task.world_seed)
    tools = scenario.tools(world)
    history: list[Step] = []
    examples: list[tuple[str, str]] = []
    for index, call in enumerate(task.expected_calls):
        if task.pitfall is not None and index == 0:
            wrong = mistaken_call(scenario, task, call)
            examples.append((render_prompt(task, tools, history), wrong))
            outcome, _, message = execute_call(parse_completion(wrong), tools)
            if outcome != "ok":
                history.append(Step(wrong, message or outcome, error=True))
        right = render_call(call.name, call.arguments)
        examples.append((render_prompt(task, tools, history), right))
        outcome, result, message = execute_call(parse_completion(right), tools)
        history.append(
            Step(right, render_observation(result) if outcome == "ok" else (message or outcome), outcome != "ok")
        )
    examples.append((render_prompt(task, tools, history), render_answer(task.expected_answer or "done")))
    return examples


def warm_start_examples(scenario: Scenario, *, n_tasks: int, seed: int) -> list[tuple[str, str]]:
    """Every ``(prompt, completion)`` pair of ``n_tasks`` train tasks."""
    examples: list[tuple[str, str]] = []
    for task in scenario.tasks("train", n_tasks, seed=seed):
        examples.extend(task_examples(scenario, task))
    return examples


def corpus_texts(examples: list[tuple[str, str]]) -> list[str]:
    """Texts to train the tokenizer on."""
    return [p + " " + c for p, c in examples] + [json.dumps({"name": "x", "arguments": {}})]
