"""The demo's GRPO glue: recorded episodes of a scenario → the demo model's prompts, rewards and guides.

The demo's training job names these functions in its trainer options
(``agentgym_runtime.demo.glue:grpo_prompt`` / ``grpo_reward`` / ``grpo_guide``); the product's
GRPO trainer knows nothing about scenarios.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentgym_runtime.scenarios.base import Scenario, Task
from agentgym_runtime.scenarios.registry import get_scenario


def _scenario_task(recorded: Any) -> tuple[Scenario, Task] | None:
    """The scenario task a recorded episode served (its input carries the task id)."""
    value = getattr(recorded, "input", None)
    task_id = value.get("task_id") if isinstance(value, dict) else None
    if not isinstance(task_id, str) or ":" not in task_id:
        return None
    scenario = get_scenario(task_id.split(":", 1)[0])
    return scenario, scenario.task_by_id(task_id)


@dataclass(frozen=True)
class _GrpoStep:
    """One step of a recorded episode as the demo model sees it."""

    prompt: str  # delexicalised, as the model reads it
    slots: dict[str, str]  # slot token -> value, to read the model's completion back
    kind: str  # "call": the first tool call; "answer": the final answer after the call that worked
    guide: str | None  # the completion the trace shows to have worked, if any


def _grpo_steps(recorded: Any) -> list[_GrpoStep]:
    """The first-call step and, when a call worked, the answer step of a recorded episode."""
    key = getattr(recorded, "episode_id", None)
    cached = _STEPS.get(key) if key is not None else None
    if cached is not None:
        return cached
    from agentgym_runtime.demo.model.format import (
        Step,
        delexicalize,
        render_answer,
        render_call,
        render_observation,
        render_prompt,
    )

    found = _scenario_task(recorded)
    if found is None:
        return []
    scenario, task = found
    tools = scenario.tools(scenario.new_world(task.world_seed))
    calls = list(getattr(recorded, "tool_calls", []))
    worked = next((c for c in calls if c.outcome == "ok" and c.name), None) or _cut_short_call(calls, tools)
    call = render_call(worked.name, worked.arguments) if worked and isinstance(worked.arguments, dict) else None
    # The model reads numbers, names, emails and paths as placeholders (see models.format.delexicalize) and
    # writes a space after "next:".
    first, first_slots = delexicalize(render_prompt(task, tools))
    steps = [
        _GrpoStep(
            first, first_slots, "call", None if call is None else " " + delexicalize(call, first_slots, grow=False)[0]
        )
    ]
    if call is not None and worked is not None:
        raw = render_prompt(task, tools, [Step(call, render_observation(worked.result))])
        answer_prompt, slots = delexicalize(raw)
        output = getattr(recorded, "output", None)
        answer = str(output) if output is not None and task.check_answer(str(output)) else None
        guide = None if answer is None else " " + delexicalize(render_answer(answer), slots, grow=False)[0]
        steps.append(_GrpoStep(answer_prompt, slots, "answer", guide))
    if key is not None:
        _STEPS[key] = steps
    return steps


_STEPS: dict[Any, list[_GrpoStep]] = {}


@dataclass(frozen=True)
class _Call:
    name: str
    arguments: dict[str, Any]
    result: Any


def _cut_short_call(calls: list[Any], tools: list[Any]) -> _Call | None:
    """The first call if its JSON was cut short but what it meant runs: the call to guide towards.

    An unparsable call ends a LangChain agent's turn, so such an episode never shows a recovery.
    The trace still records the call's name and its arguments as the model wrote them; when they
    are a complete object that passes the tool's schema and runs on a fresh world, the model had
    the right call and only failed to finish the message's JSON. (Calls whose arguments the
    schema rejects, a wrong type or a missing argument, stay unguided.)
    """
    from agentgym_runtime.demo.model.format import ParsedCompletion, execute_call
    from agentgym_runtime.semconv import ToolOutcome

    first = calls[0] if calls else None
    if first is None or first.outcome != ToolOutcome.INVALID_ARGUMENTS.value or not isinstance(first.arguments, dict):
        return None
    outcome, result, _ = execute_call(ParsedCompletion("tool_call", first.name, dict(first.arguments)), tools)
    return _Call(first.name, dict(first.arguments), result) if outcome == ToolOutcome.OK.value else None


def _grpo_step(recorded: Any, prompt: str | None) -> _GrpoStep | None:
    steps = _grpo_steps(recorded)
    if prompt is None:
        return steps[0] if steps else None
    return next((step for step in steps if step.prompt == prompt), None)


def grpo_prompt(recorded: Any) -> list[str]:
    """GRPO prompts of a recorded episode: its first tool call and, if a call worked, its answer.

    The first tool call is where the demo model's systematic mistakes sit; the answer step is
    trained too so that fixing the calls does not cost task success.
    """
    return [step.prompt for step in _grpo_steps(recorded)]


def grpo_reward(recorded: Any, completion: str, prompt: str | None = None) -> float:
    """GRPO reward of a completion of one of a recorded episode's prompts, in [0, 1].

    First call: 1 for the right call, partial credit for a call that runs, 0 for an unknown tool
    or arguments that do not parse (see ``models.format.score_completion``). Answer: 1 when it
    holds the task's answer, 0.1 for another answer, 0 for anything else.
    """
    from agentgym_runtime.demo.model.format import parse_completion, relexicalize, score_completion

    found = _scenario_task(recorded)
    step = _grpo_step(recorded, prompt)
    if found is None or step is None:
        return 0.0
    scenario, task = found
    if step.kind == "call":
        return float(score_completion(task, completion, scenario=scenario).reward)
    parsed = parse_completion(relexicalize(completion, step.slots))
    if parsed.kind != "answer" or parsed.answer is None:
        return 0.0
    return 1.0 if task.check_answer(parsed.answer) else 0.1


def grpo_guide(recorded: Any, prompt: str | None = None) -> list[str]:
    """What worked in a recorded episode, as a completion of one of its GRPO prompts.

    In production the agent often recovers: its first call fails (say, the order id sent as
    ``"#1234"``), the tool's error comes back, and the next call succeeds. That successful call,
    read from the trace, is what the first step should have been. A call whose JSON was cut short
    ends the agent's turn, with no recovery to read; when the arguments the trace holds for it
    pass the tool's schema and run, that call, written out whole, is the guide. For the answer
    step, the episode's final answer when it was right. GRPO uses them as guides for groups where
    the policy does not find them itself (see :mod:`agentgym_runtime.trainers.grpo`).
    """
    step = _grpo_step(recorded, prompt)
    return [] if step is None or step.guide is None else [step.guide]
