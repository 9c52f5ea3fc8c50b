"""The :class:`Scenario` contract: tools over a sandboxed world, tasks, a reward and success criteria.

A scenario is a small, self-contained stand-in for a production agent's job. It owns

* a **world**: in-memory state built deterministically from a seed (no I/O, nothing shared
  between episodes: every episode gets :meth:`Scenario.new_world`);
* **tools**: :class:`~agentgym_runtime.tools.Tool` objects bound to one world, with JSON schemas
  derived from their type hints, so bad arguments raise
  :class:`~agentgym_runtime.errors.ToolArgumentsError`;
* **tasks**: a deterministic generator with two disjoint distributions, ``"train"`` and
  ``"heldout"`` (different entities and phrasings);
* a **reward** in ``[0, 1]`` (see :meth:`Scenario.reward`), usable as ``scenario=`` on
  :func:`agentgym_runtime.train_online` because it has ``reward(episode, output)``;
* **success criteria** (:meth:`Scenario.success_criteria`) and their check
  (:meth:`Scenario.evaluate_success`).

Users add their own by subclassing :class:`Scenario` and calling
:func:`agentgym_runtime.scenarios.register_scenario`.

Example:
    >>> from agentgym_runtime.scenarios import get_scenario
    >>> support = get_scenario("customer_support")
    >>> task = support.tasks("train", 1, seed=0)[0]
    >>> task.split, len(task.expected_calls) >= 1
    ('train', True)
    >>> support.success_criteria()
    {'tool_reliability': 0.95, 'cost_reduction': 0.3}
"""

from __future__ import annotations

import random
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar, Literal

from agentgym_runtime.errors import ConfigurationError
from agentgym_runtime.recording.context import Episode
from agentgym_runtime.tools import Tool, Toolbox

Split = Literal["train", "heldout"]
SPLITS: tuple[Split, ...] = ("train", "heldout")

#: Reward weights: tool reliability first, then task success, then cost.
REWARD_WEIGHTS: dict[str, float] = {"tool_reliability": 0.6, "task_success": 0.3, "cost": 0.1}
#: The documented range of :meth:`Scenario.reward`.
REWARD_RANGE: tuple[float, float] = (0.0, 1.0)
#: Default success criteria of every scenario.
DEFAULT_CRITERIA: dict[str, float] = {"tool_reliability": 0.95, "cost_reduction": 0.30}

#: Kinds of systematic mistake a task can provoke in the demo model (see ``agentgym_runtime.demo.model``).
PITFALLS: tuple[str, ...] = ("wrong_type", "hallucinated_tool", "missing_argument", "malformed_json")


@dataclass(frozen=True)
class ExpectedCall:
    """A tool call that serves a task well.

    Attributes:
        name: Tool name.
        arguments: Keyword arguments, JSON-ready.
    """

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., "arguments": {...}}``."""
        return {"name": self.name, "arguments": dict(self.arguments)}


@dataclass(frozen=True)
class Task:
    """One task of a scenario: what the user asks, and what serves it.

    Attributes:
        id: ``"<scenario>:<split>:<seed>:<index>"`` (:meth:`Scenario.task_by_id` rebuilds it).
        scenario: The scenario's name.
        split: ``"train"`` or ``"heldout"``.
        prompt: The user's request, as text.
        expected_calls: The tool calls that serve the task, in order.
        expected_answer: Text the final answer must contain (case-insensitive), if any.
        world_seed: Seed of the world the task refers to (``scenario.new_world(world_seed)``).
        intent: The kind of request (e.g. ``"order_status"``).
        pitfall: The systematic mistake this phrasing provokes in the demo model, if any
            (one of :data:`PITFALLS`); the task itself is always well-formed.
    """

    id: str
    scenario: str
    split: Split
    prompt: str
    expected_calls: tuple[ExpectedCall, ...]
    expected_answer: str | None
    world_seed: int
    intent: str
    pitfall: str | None = None

    def check_answer(self, output: Any) -> bool:
        """Whether ``output`` (the agent's final answer) contains the expected answer."""
        if self.expected_answer is None:
            return True
        if output is None:
            return False
        return self.expected_answer.lower() in _text_of(output).lower()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "id": self.id,
            "scenario": self.scenario,
            "split": self.split,
            "prompt": self.prompt,
            "expected_calls": [c.to_dict() for c in self.expected_calls],
            "expected_answer": self.expected_answer,
            "world_seed": self.world_seed,
            "intent": self.intent,
            "pitfall": self.pitfall,
        }


@dataclass(frozen=True)
class SuccessReport:
    """Whether a trained version meets a scenario's success criteria against version 0.

    Attributes:
        criteria: The thresholds (``tool_reliability``, ``cost_reduction``).
        tool_reliability: Held-out tool reliability after training.
        cost_reduction: ``1 - after/before`` of the provider's bill per episode (tokens at the
            model's input and output prices; ``None``: no bill in the metrics).
        llm_call_reduction: ``1 - after/before`` LLM calls per episode (the latency side).
        token_reduction: ``1 - after/before`` tokens per episode.
        met: Per criterion, whether it is met.
    """

    criteria: dict[str, float]
    tool_reliability: float | None
    cost_reduction: float | None
    llm_call_reduction: float | None
    token_reduction: float | None
    met: dict[str, bool]

    @property
    def passed(self) -> bool:
        """Every criterion is met."""
        return all(self.met.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "criteria": dict(self.criteria),
            "tool_reliability": self.tool_reliability,
            "cost_reduction": self.cost_reduction,
            "llm_call_reduction": self.llm_call_reduction,
            "token_reduction": self.token_reduction,
            "met": dict(self.met),
            "passed": self.passed,
        }


class Scenario(ABC):
    """Base class of scenarios; subclass it to add your own.

    Subclasses set the metadata class attributes and implement :meth:`new_world`,
    :meth:`build_tools` and :meth:`make_task`.

    Attributes:
        name: Registry name (identifier-like).
        description: One paragraph on what the agent does.
        difficulty: ``"easy"``, ``"medium"`` or ``"hard"``.
        estimated_time: Rough time of a full demo run (e.g. ``"5 min on CPU"``).
        hallucinated_tools: Per real tool, the plausible wrong name a model invents for it.

    Example:
        >>> import agentgym_runtime as agentgym
        >>> from agentgym_runtime.scenarios import ExpectedCall, Scenario, Task
        >>> class Echo(Scenario):
        ...     name, description, difficulty, estimated_time = "echo", "Echo text.", "easy", "1 min"
        ...     def new_world(self, seed):
        ...         return {}
        ...     def build_tools(self, world):
        ...         @agentgym.tool
        ...         def echo(text: str) -> str:
        ...             '''Return the text.'''
        ...             return text
        ...         return [echo]
        ...     def make_task(self, world, split, rng):
        ...         word = f"{split}-{rng.randrange(10**6)}"
        ...         return dict(prompt=f"echo {word}", expected_calls=(ExpectedCall("echo", {"text": word}),),
        ...                     expected_answer=word, intent="echo")
        >>> Echo().tasks("heldout", 2, seed=1)[0].id
        'echo:heldout:1:0'
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    difficulty: ClassVar[str] = "easy"
    estimated_time: ClassVar[str] = ""
    hallucinated_tools: ClassVar[dict[str, str]] = {}

    # --- to implement -----------------------------------------------------------------
    @abstractmethod
    def new_world(self, seed: int) -> Any:
        """A fresh in-memory world, the same for the same ``seed``."""

    @abstractmethod
    def build_tools(self, world: Any) -> list[Tool[..., Any]]:
        """The scenario's tools, bound to ``world`` (they read and change only it)."""

    @abstractmethod
    def make_task(self, world: Any, split: Split, rng: random.Random) -> Mapping[str, Any]:
        """One random task of ``split`` drawn with ``rng`` from ``world``.

        Returns:
            Keyword arguments of :class:`Task` without ``id``, ``scenario``, ``split`` and
            ``world_seed``: ``prompt``, ``expected_calls``, ``expected_answer``, ``intent`` and
            optionally ``pitfall``.
        """

    # --- provided ---------------------------------------------------------------------
    def tools(self, world: Any = None) -> list[Tool[..., Any]]:
        """The tools bound to ``world`` (a fresh world of seed 0 when ``None``)."""
        return self.build_tools(self.new_world(0) if world is None else world)

    def toolbox(self, world: Any = None) -> Toolbox:
        """The tools bound to ``world`` as a :class:`~agentgym_runtime.tools.Toolbox`."""
        return Toolbox(self.tools(world))

    def tool_definitions(self) -> list[dict[str, Any]]:
        """``{"name", "description", "parameters"}`` of every tool."""
        return [t.definition() for t in self.tools()]

    def tasks(self, split: str, n: int, seed: int = 0) -> list[Task]:
        """``n`` distinct tasks of ``split``, the same for the same ``seed``.

        Train and held-out tasks never share a prompt or an id.

        Raises:
            ConfigurationError: Unknown split, negative ``n``, or fewer than ``n`` distinct tasks exist.
        """
        return list(_tasks(self, _split(split), n, seed))

    def task_by_id(self, task_id: str) -> Task:
        """Rebuild the task with this id.

        Raises:
            ConfigurationError: The id is not one of this scenario's.
        """
        parts = task_id.split(":")
        if len(parts) != 4 or parts[0] != self.name or not parts[2].lstrip("-").isdigit() or not parts[3].isdigit():
            raise ConfigurationError(f"{task_id!r} is not a task id of scenario {self.name!r}")
        return _task_at(self, _split(parts[1]), int(parts[2]), int(parts[3]))

    def task_for(self, episode: Episode, output: Any = None) -> Task | None:
        """The task an episode ran: ``metadata["task_id"]``, or a :class:`Task` among its inputs."""
        task_id = episode.metadata.get("task_id")
        if isinstance(task_id, str):
            try:
                return self.task_by_id(task_id)
            except ConfigurationError:
                return None
        return _find_task(episode.input)

    # --- reward ------------------------------------------------------------------------
    @staticmethod
    def ideal_llm_calls(task: Task | None) -> int:
        """LLM calls a perfect agent needs: one per expected tool call, plus the final answer."""
        return (len(task.expected_calls) if task is not None else 1) + 1

    @classmethod
    def cost_term(cls, task: Task | None, llm_calls: int) -> float:
        """1.0 at or below the ideal number of LLM calls, falling linearly to 0 at three times it."""
        ideal = cls.ideal_llm_calls(task)
        if llm_calls <= ideal:
            return 1.0
        return max(0.0, 1.0 - (llm_calls - ideal) / (2 * ideal))

    @classmethod
    def score(cls, tool_reliability: float | None, task_success: bool, llm_calls: int, task: Task | None) -> float:
        """The reward formula (see :meth:`reward`), from its parts."""
        reliability = 0.0 if tool_reliability is None else min(1.0, max(0.0, tool_reliability))
        value = (
            REWARD_WEIGHTS["tool_reliability"] * reliability
            + REWARD_WEIGHTS["task_success"] * (1.0 if task_success else 0.0)
            + REWARD_WEIGHTS["cost"] * cls.cost_term(task, llm_calls)
        )
        return min(REWARD_RANGE[1], max(REWARD_RANGE[0], value))

    def reward(self, episode: Episode, output: Any) -> float:
        """Reward of a finished episode, in ``[0, 1]``.

        ``0.6 * tool_reliability + 0.3 * task_success + 0.1 * cost_term`` where tool reliability
        is the episode's (0 when no tool was called), task success is whether the output contains
        the task's expected answer (0 when the task is unknown: pass ``metadata={"task_id": ...}``
        or the :class:`Task` itself to the agent), and the cost term is :meth:`cost_term` of the
        episode's LLM calls.
        """
        task = self.task_for(episode, output)
        success = task is not None and task.check_answer(output)
        return self.score(episode.tool_reliability, success, episode.llm_calls, task)

    # --- criteria ----------------------------------------------------------------------
    def success_criteria(self) -> dict[str, float]:
        """Thresholds a trained version must reach: held-out tool reliability and cost reduction vs version 0."""
        return dict(DEFAULT_CRITERIA)

    def evaluate_success(self, before: Mapping[str, Any], after: Mapping[str, Any]) -> SuccessReport:
        """Check the criteria, given version 0's (``before``) and the candidate's (``after``) metrics.

        Both mappings may hold ``tool_reliability``, ``cost_per_episode_usd`` (the provider's bill,
        see :mod:`agentgym_runtime.collectors.pricing`), ``llm_calls_per_episode`` and
        ``tokens_per_episode``. The cost criterion is the bill: ``1 - after/before`` of
        ``cost_per_episode_usd``; LLM calls and tokens are reported beside it, not averaged into it.
        """
        criteria = self.success_criteria()
        reliability = _number(after.get("tool_reliability"))
        llm_reduction = _reduction(before.get("llm_calls_per_episode"), after.get("llm_calls_per_episode"))
        token_reduction = _reduction(before.get("tokens_per_episode"), after.get("tokens_per_episode"))
        cost_reduction = _reduction(before.get("cost_per_episode_usd"), after.get("cost_per_episode_usd"))
        met = {
            "tool_reliability": reliability is not None and reliability >= criteria["tool_reliability"],
            "cost_reduction": cost_reduction is not None and cost_reduction >= criteria["cost_reduction"],
        }
        return SuccessReport(criteria, reliability, cost_reduction, llm_reduction, token_reduction, met)

    def metadata(self) -> dict[str, Any]:
        """Name, description, difficulty, estimated time, reward range and criteria."""
        return {
            "name": self.name,
            "description": self.description,
            "difficulty": self.difficulty,
            "estimated_time": self.estimated_time,
            "reward_range": list(REWARD_RANGE),
            "success_criteria": self.success_criteria(),
        }

    def __repr__(self) -> str:
        return f"<scenario {self.name!r}>"


def _split(split: str) -> Split:
    if split == "train":
        return "train"
    if split == "heldout":
        return "heldout"
    raise ConfigurationError(f"split must be 'train' or 'heldout', got {split!r}")


@lru_cache(maxsize=64)
def _tasks_cached(scenario: Scenario, split: Split, n: int, seed: int) -> tuple[Task, ...]:
    if n < 0:
        raise ConfigurationError(f"n must be >= 0, got {n}")
    rng = random.Random(f"{scenario.name}:{split}:{seed}")
    world = scenario.new_world(seed)
    tasks: list[Task] = []
    seen: set[str] = set()
    attempts = 0
    while len(tasks) < n:
        attempts += 1
        if attempts > 50 * n + 100:
            raise ConfigurationError(
                f"scenario {scenario.name!r} has fewer than {n} distinct {split} tasks (found {len(tasks)})"
            )
        fields = dict(scenario.make_task(world, split, rng))
        if fields["prompt"] in seen:
            continue
        seen.add(fields["prompt"])
        fields["expected_calls"] = tuple(fields.get("expected_calls", ()))
        tasks.append(
            Task(
                id=f"{scenario.name}:{split}:{seed}:{len(tasks)}",
                scenario=scenario.name,
                split=split,
                world_seed=seed,
                **fields,
            )
        )
    return tuple(tasks)


def _tasks(scenario: Scenario, split: Split, n: int, seed: int) -> tuple[Task, ...]:
    return _tasks_cached(scenario, split, n, seed)


# (scenario, split, seed) -> the longest run of tasks drawn so far. A draw's first n tasks do not
# depend on n, so one run answers every index below its length: a trainer's reward looks a task up
# by id for every sample (thousands a job), and drawing ``index + 1`` tasks each time (the lru
# cache above is keyed by n) was a seventh of a profiled GRPO round on the demo.
_RUNS: OrderedDict[tuple[Scenario, Split, int], tuple[Task, ...]] = OrderedDict()
_RUNS_LOCK = threading.Lock()
_MAX_RUNS = 256


def _task_at(scenario: Scenario, split: Split, seed: int, index: int) -> Task:
    key = (scenario, split, seed)
    with _RUNS_LOCK:
        run = _RUNS.get(key)
        if run is not None:
            _RUNS.move_to_end(key)
            if index < len(run):
                return run[index]
    run = _tasks_cached.__wrapped__(scenario, split, index + 1, seed)
    with _RUNS_LOCK:
        if len(run) > len(_RUNS.get(key, ())):
            _RUNS[key] = run
            _RUNS.move_to_end(key)
            while len(_RUNS) > _MAX_RUNS:
                _RUNS.popitem(last=False)
    return run[index]


def _find_task(value: Any, depth: int = 0) -> Task | None:
    if isinstance(value, Task):
        return value
    if depth > 3:
        return None
    if isinstance(value, Mapping):
        for item in value.values():
            found = _find_task(item, depth + 1)
            if found is not None:
                return found
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
        for item in value:
            found = _find_task(item, depth + 1)
            if found is not None:
                return found
    return None


def _text_of(output: Any) -> str:
    content = getattr(output, "content", None)
    if isinstance(content, str):
        return content
    if isinstance(output, Mapping) and "messages" in output and output["messages"]:
        return _text_of(output["messages"][-1])
    return str(output)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    return float(value)


def _reduction(before: Any, after: Any) -> float | None:
    b, a = _number(before), _number(after)
    if b is None or a is None or b <= 0:
        return None
    return 1.0 - a / b
