"""Held-out evaluation of the demo model: tool reliability, task success and cost per episode.

Each task runs as an episode of at most ``max_steps`` LLM calls on a fresh world: a tool call
is executed (failures are shown to the model as errors, as agent frameworks do), an answer
ends the episode, and so does a call whose arguments are not JSON (LangChain's agent loop
stops on a message whose only tool call is invalid). Episodes run in lock step so completions are generated in batches,
by the model's engine (:meth:`~agentgym_runtime.models.engine.ChatEngine.complete`) that serves live calls too.

Example:
    >>> from agentgym_runtime.demo.model import evaluate_model, load_or_build_demo_model  # doctest: +SKIP
    >>> result = evaluate_model(load_or_build_demo_model("customer_support"), "customer_support")  # doctest: +SKIP
    >>> 0.6 <= result.tool_reliability <= 0.7  # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agentgym_runtime.demo.model.format import Step, execute_call, parse_completion, render_observation, render_prompt
from agentgym_runtime.scenarios.base import Scenario, Task
from agentgym_runtime.scenarios.registry import get_scenario
from agentgym_runtime.semconv import ToolOutcome


@dataclass(frozen=True)
class EvaluationResult:
    """What an evaluation measured.

    Attributes:
        scenario: Scenario name.
        split: ``"train"`` or ``"heldout"``.
        episodes: Tasks run.
        tool_calls: Tool calls requested over all episodes.
        tool_reliability: Successful tool calls / requested tool calls (0 when none were requested).
        task_success: Share of episodes whose final answer contains the expected answer.
        llm_calls_per_episode: Mean LLM calls per episode.
        tokens_per_episode: Mean input + output tokens per episode.
        mean_reward: Mean of the scenario's reward formula over the episodes.
        input_tokens_per_episode: Mean input (prompt) tokens per episode.
        output_tokens_per_episode: Mean output (completion) tokens per episode; providers bill
            these at a higher price, so the bill is not proportional to ``tokens_per_episode``.
        outcomes: Tool calls per outcome.
    """

    scenario: str
    split: str
    episodes: int
    tool_calls: int
    tool_reliability: float
    task_success: float
    llm_calls_per_episode: float
    tokens_per_episode: float
    mean_reward: float
    input_tokens_per_episode: float = 0.0
    output_tokens_per_episode: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (also the ``before``/``after`` input of ``Scenario.evaluate_success``)."""
        return {
            "scenario": self.scenario,
            "split": self.split,
            "episodes": self.episodes,
            "tool_calls": self.tool_calls,
            "tool_reliability": self.tool_reliability,
            "task_success": self.task_success,
            "llm_calls_per_episode": self.llm_calls_per_episode,
            "tokens_per_episode": self.tokens_per_episode,
            "input_tokens_per_episode": self.input_tokens_per_episode,
            "output_tokens_per_episode": self.output_tokens_per_episode,
            "mean_reward": self.mean_reward,
            "outcomes": dict(self.outcomes),
        }


@dataclass(frozen=True)
class CallRecord:
    """One tool call of an evaluated episode, as a trace would hold it.

    Attributes:
        name: The tool name the model wrote (``None`` if it could not be read).
        arguments: The arguments: parsed, or for a call whose JSON was cut short the arguments
            object itself when it parses on its own (as LangChain records it), else the raw text.
        result: The tool's result when it ran.
        outcome: A :class:`~agentgym_runtime.semconv.ToolOutcome` value.
    """

    name: str | None
    arguments: Any
    result: Any
    outcome: str


@dataclass
class EpisodeRun:
    """One task run through the model: its calls, answer and costs.

    Attributes:
        task: The task.
        tools: The tools bound to the episode's world.
        history: The turns shown to the model so far.
        calls: Every tool call, in order.
        answer: The final answer, if the model gave one.
        done: Whether the episode ended.
        llm_calls: LLM calls made.
        tokens: Input + output tokens over those calls.
        input_tokens: Input tokens over those calls.
        output_tokens: Output tokens over those calls.
        success: Whether the answer holds the task's expected answer.
    """

    task: Task
    tools: list[Any]
    history: list[Step] = field(default_factory=list)
    calls: list[CallRecord] = field(default_factory=list)
    answer: str | None = None
    done: bool = False
    llm_calls: int = 0
    tokens: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    success: bool = False

    @property
    def ok(self) -> int:
        """Tool calls that succeeded."""
        return sum(call.outcome == str(ToolOutcome.OK) for call in self.calls)


def run_episodes(
    model: Any,
    scenario: Scenario,
    tasks: list[Task],
    *,
    max_steps: int = 4,
    adapter: str | os.PathLike[str] | None = None,
    end_on_unparsable: bool = True,
) -> list[EpisodeRun]:
    """Run ``tasks`` through ``model`` (a ``DemoModel``) in lock step, completions batched.

    Each task runs on a fresh world for at most ``max_steps`` LLM calls: a tool call is executed
    (a failure is shown to the model as an error, as agent frameworks do), an answer ends the
    episode, and so does a call whose arguments do not parse when ``end_on_unparsable``.
    """
    runs = [EpisodeRun(task, scenario.tools(scenario.new_world(task.world_seed))) for task in tasks]
    for _ in range(max_steps):
        active = [r for r in runs if not r.done]
        if not active:
            break
        completions = model.complete([render_prompt(r.task, r.tools, r.history) for r in active], adapter=adapter)
        for run, (text, n_in, n_out) in zip(active, completions, strict=True):
            run.llm_calls += 1
            run.tokens += n_in + n_out
            run.input_tokens += n_in
            run.output_tokens += n_out
            parsed = parse_completion(text)
            if parsed.kind == "answer":
                run.done = True
                run.answer = parsed.answer
                run.success = run.task.check_answer(parsed.answer)
                continue
            if parsed.kind == "empty":
                run.done = True
                continue
            outcome, result, message = execute_call(parsed, run.tools)
            run.calls.append(CallRecord(parsed.name, _recorded_arguments(parsed), result, outcome))
            if parsed.arguments is None and end_on_unparsable:
                run.done = True  # LangChain's agent loop ends on a message whose only call is invalid
                continue
            ok = outcome == str(ToolOutcome.OK)
            observation = render_observation(result) if ok else (message or outcome)
            run.history.append(Step(text, observation, error=not ok))
    return runs


def _recorded_arguments(parsed: Any) -> Any:
    if parsed.arguments is not None:
        return parsed.arguments
    try:
        return json.loads(parsed.raw_arguments)
    except ValueError:
        return parsed.raw_arguments


def evaluate_model(
    model: Any,
    scenario: Scenario | str,
    split: str = "heldout",
    n: int = 200,
    *,
    seed: int = 0,
    max_steps: int = 4,
    adapter: str | os.PathLike[str] | None = None,
    end_on_unparsable: bool = True,
    tasks: Sequence[Task] | None = None,
) -> EvaluationResult:
    """Run ``n`` tasks of ``split`` (or exactly ``tasks``) through ``model`` and measure them.

    Args:
        model: A :class:`~agentgym_runtime.demo.model.tiny.DemoModel`, or a
            :class:`~agentgym_runtime.demo.model.chat.TinyToolCallingChatModel` (its demo model and
            fixed adapter are used).
        scenario: The scenario (or its name).
        split: ``"heldout"`` (default) or ``"train"``.
        n: Number of tasks.
        seed: Task seed.
        max_steps: LLM calls allowed per episode.
        adapter: A LoRA adapter directory to evaluate instead of the base weights.
        end_on_unparsable: End the episode after a call whose arguments do not parse, as
            LangChain's agent loop does (the demo's agent); otherwise show the error and go on.
        tasks: Run these tasks instead of drawing ``n`` of ``split`` with ``seed`` (the demo passes
            held-out tasks it made sure were never served).
    """
    scen = get_scenario(scenario) if isinstance(scenario, str) else scenario
    demo = model.demo_model() if hasattr(model, "demo_model") else model
    if adapter is None and getattr(model, "adapter", None):
        adapter = model.adapter
    runs = run_episodes(
        demo,
        scen,
        list(tasks) if tasks is not None else scen.tasks(split, n, seed=seed),
        max_steps=max_steps,
        adapter=adapter,
        end_on_unparsable=end_on_unparsable,
    )
    outcomes = Counter(call.outcome for r in runs for call in r.calls)
    total_calls = sum(len(r.calls) for r in runs)
    episodes = max(1, len(runs))
    rewards = [scen.score(r.ok / len(r.calls) if r.calls else None, r.success, r.llm_calls, r.task) for r in runs]
    return EvaluationResult(
        scenario=scen.name,
        split=split,
        episodes=len(runs),
        tool_calls=total_calls,
        tool_reliability=(sum(r.ok for r in runs) / total_calls) if total_calls else 0.0,
        task_success=sum(r.success for r in runs) / episodes,
        llm_calls_per_episode=sum(r.llm_calls for r in runs) / episodes,
        tokens_per_episode=sum(r.tokens for r in runs) / episodes,
        mean_reward=sum(rewards) / episodes,
        input_tokens_per_episode=sum(r.input_tokens for r in runs) / episodes,
        output_tokens_per_episode=sum(r.output_tokens for r in runs) / episodes,
        outcomes=dict(outcomes),
    )
