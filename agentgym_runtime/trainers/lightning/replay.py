"""The replay agent: re-run recorded tasks through the user's agent with candidate resources.

* :class:`ToolSandbox` stands in for the agent's tools while it replays a task. Per tool:
  ``"replay"`` (default: the recorded result for identical arguments; otherwise the
  arguments are checked against the tool's JSON schema and a neutral observation is
  returned), ``"live"`` (the user marked the tool side-effect free: the real function
  runs) or a user-supplied fake (any callable). Every call is counted with its outcome,
  which gives the replayed episode's tool reliability.
* :class:`ReplayAgent` is an Agent Lightning ``LitAgent``: for each rollout it turns the
  candidate resources into a :class:`~agentgym_runtime.policy.model.Policy`
  (:func:`policy_from_resources`), runs the user's episode function on the task with a
  fresh sandbox, and returns the reward: tool reliability combined with the scenario's
  reward and the task's recorded feedback (:func:`agentgym_runtime.rewards.combine`).
* The user's agent comes from ``module:qualname`` (:func:`load_replay_function`): a
  factory named in the job options, or the entrypoint the decorator recorded.
* :func:`run_algorithm` drives an Agent Lightning ``Trainer`` (shared-memory strategy,
  one runner, :class:`LocalOtelTracer`) with this agent and a store.

Example:
    >>> sandbox = ToolSandbox(tools=[{"name": "get_order", "parameters": {"type": "object"}}])
    >>> sandbox.call("get_order", {"id": 1})["outcome"]
    'ok'
    >>> sandbox.call("nope", {})["outcome"], sandbox.reliability
    ('unknown_tool', 0.5)
"""

from __future__ import annotations

import contextvars
import importlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentgym_runtime import rewards, semconv
from agentgym_runtime.policy.model import Demonstration, LLMConfig, Policy
from agentgym_runtime.trainers.dataset import Task
from agentgym_runtime.trainers.lightning import import_agentlightning
from agentgym_runtime.validation import validate_arguments

agl = import_agentlightning()
from agentlightning import LitAgent  # noqa: E402
from agentlightning.tracer.otel import OtelTracer  # noqa: E402

#: What a replayed tool returns when no recorded result matches its (valid) arguments.
NEUTRAL_OBSERVATION = {"status": "ok", "note": "replayed: no recorded result for these arguments"}

#: Resource names understood by :func:`policy_from_resources`.
SYSTEM_PROMPT_RESOURCE = "system_prompt"
DEMONSTRATIONS_RESOURCE = "demonstrations"
TOOL_RESOURCE_PREFIX = "tool:"

EpisodeFn = Callable[[Task, Policy, "ToolSandbox"], Any]
ScenarioRewardFn = Callable[[Task, Any], float | None]

current_sandbox: contextvars.ContextVar[ToolSandbox | None] = contextvars.ContextVar(
    "agentgym_current_sandbox", default=None
)


def _canonical(arguments: Any) -> str:
    return json.dumps(arguments, sort_keys=True, ensure_ascii=False, default=str)


@dataclass
class ToolSandbox:
    """Tools for one replayed episode.

    Args:
        tools: Tool definitions offered (``{name, description, parameters}``).
        recorded: The task's recorded calls (results reused for identical arguments).
        live: Side-effect-free tools by name: the real function runs.
        fakes: User-supplied stand-ins by name.
    """

    tools: Sequence[Mapping[str, Any]] = ()
    recorded: Sequence[Any] = ()
    live: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    fakes: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def for_task(
        cls,
        task: Task,
        *,
        live: Mapping[str, Callable[..., Any]] | None = None,
        fakes: Mapping[str, Callable[..., Any]] | None = None,
    ) -> ToolSandbox:
        """A sandbox with the task's tools and recorded calls."""
        return cls(tools=list(task.tools), recorded=list(task.tool_calls), live=live or {}, fakes=fakes or {})

    def mode(self, name: str) -> str:
        """``"fake"``, ``"live"`` or ``"replay"`` for this tool."""
        if name in self.fakes:
            return "fake"
        if name in self.live:
            return "live"
        return "replay"

    def _record(
        self, name: str, arguments: Any, outcome: str, result: Any, message: str | None = None
    ) -> dict[str, Any]:
        entry = {"name": name, "arguments": arguments, "outcome": outcome, "result": result, "message": message}
        self.calls.append(entry)
        return entry

    def call(self, name: str, arguments: Any) -> dict[str, Any]:
        """Run one tool call in the sandbox; returns ``{name, arguments, outcome, result, message}``."""
        definitions = {str(t.get("name")): t for t in self.tools}
        known = set(definitions) | set(self.live) | set(self.fakes)
        if name not in known:
            return self._record(name, arguments, semconv.ToolOutcome.UNKNOWN_TOOL.value, None, f"unknown tool {name!r}")
        schema = definitions.get(name, {}).get("parameters")
        problems = validate_arguments(schema, arguments)
        if problems:
            message = "; ".join(f"{p['argument']}: {p['message']}" for p in problems)
            return self._record(name, arguments, semconv.ToolOutcome.INVALID_ARGUMENTS.value, None, message)
        runner = self.fakes.get(name) or self.live.get(name)
        if runner is not None:
            try:
                result = runner(**arguments)
            except Exception as exc:
                return self._record(name, arguments, semconv.ToolOutcome.TOOL_ERROR.value, None, repr(exc))
            return self._record(name, arguments, semconv.ToolOutcome.OK.value, result)
        wanted = _canonical(arguments)
        for recorded in self.recorded:
            if recorded.name == name and recorded.ok and _canonical(recorded.arguments) == wanted:
                return self._record(name, arguments, semconv.ToolOutcome.OK.value, recorded.result)
        return self._record(name, arguments, semconv.ToolOutcome.OK.value, dict(NEUTRAL_OBSERVATION))

    @property
    def reliability(self) -> float | None:
        """Share of calls that succeeded (``None``: no calls)."""
        if not self.calls:
            return None
        return float(sum(c["outcome"] == semconv.ToolOutcome.OK.value for c in self.calls) / len(self.calls))


def policy_from_resources(agent: str, resources: Mapping[str, Any], version: int = 1) -> Policy:
    """The candidate :class:`Policy` a set of Agent Lightning resources stands for.

    ``system_prompt`` (PromptTemplate) → system prompt; ``tool:<name>`` (PromptTemplate) → that tool's
    description; ``demonstrations`` (PromptTemplate whose template is a JSON list) → demonstrations;
    an ``LLM`` resource → ``llm``.

    Example:
        >>> policy_from_resources("a", {}).is_baseline
        True
    """
    system_prompt: str | None = None
    tool_descriptions: dict[str, str] = {}
    demonstrations: tuple[Demonstration, ...] = ()
    llm: LLMConfig | None = None
    for name, resource in resources.items():
        template = getattr(resource, "template", None)
        if name == SYSTEM_PROMPT_RESOURCE and template is not None:
            system_prompt = str(template)
        elif name.startswith(TOOL_RESOURCE_PREFIX) and template is not None:
            tool_descriptions[name[len(TOOL_RESOURCE_PREFIX) :]] = str(template)
        elif name == DEMONSTRATIONS_RESOURCE and template is not None:
            demonstrations = tuple(Demonstration.model_validate(d) for d in json.loads(str(template)))
        elif getattr(resource, "resource_type", None) == "llm":
            llm = LLMConfig(
                endpoint=getattr(resource, "endpoint", None),
                model=getattr(resource, "model", None),
                sampling=dict(getattr(resource, "sampling_parameters", {}) or {}),
            )
    return Policy(
        agent=agent,
        version=version,
        system_prompt=system_prompt,
        tool_descriptions=tool_descriptions,
        demonstrations=demonstrations,
        llm=llm,
    )


def demonstrations_resource(demonstrations: Sequence[Demonstration]) -> Any:
    """Demonstrations as a ``PromptTemplate`` resource (a JSON list), the form :func:`policy_from_resources` reads.

    Example:
        >>> demonstrations_resource([]).template
        '[]'
    """
    payload = json.dumps([d.model_dump(mode="json") for d in demonstrations], ensure_ascii=False)
    return agl.PromptTemplate(template=payload, engine="f-string")


def load_replay_function(path: str) -> EpisodeFn:
    """Resolve ``module:qualname`` into an episode function ``(task, policy, sandbox) -> output``.

    The object found is used as is when it takes three parameters (an episode function, or a
    factory's product); a zero-argument callable is a factory and is called once; any other
    callable is the recorded agent entrypoint and is called with the task's input (a dict as
    keyword arguments) while :data:`current_sandbox` holds the sandbox for its tools.

    Raises:
        ValueError: The path is not ``module:qualname`` or names nothing callable.

    Example:
        >>> load_replay_function("json")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ValueError: replay function 'json' must be 'module:qualname'
    """
    import inspect

    module_name, _, qualname = path.partition(":")
    if not module_name or not qualname:
        raise ValueError(f"replay function {path!r} must be 'module:qualname'")
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    target = getattr(target, "__wrapped__", target)
    if not callable(target):
        raise ValueError(f"replay function {path!r} is not callable")
    parameters = inspect.signature(target).parameters
    if len(parameters) == 3:
        return target  # type: ignore[no-any-return]
    if not parameters:
        return load_replay_callable(target())
    return _entrypoint_runner(target)


def load_replay_callable(fn: Callable[..., Any]) -> EpisodeFn:
    """Wrap a factory's product the same way :func:`load_replay_function` does."""
    import inspect

    if len(inspect.signature(fn).parameters) == 3:
        return fn
    return _entrypoint_runner(fn)


def _entrypoint_runner(fn: Callable[..., Any]) -> EpisodeFn:
    def run(task: Task, policy: Policy, sandbox: ToolSandbox) -> Any:
        token = current_sandbox.set(sandbox)
        try:
            if isinstance(task.input, dict):
                return fn(**task.input)
            return fn(task.input)
        finally:
            current_sandbox.reset(token)

    return run


def feedback_score(task: Task) -> float | None:
    """Mean of the task's numeric feedback values (``None``: none).

    Example:
        >>> feedback_score(Task(episode_id="e", agent="a"))
    """
    values = [f.value for f in task.feedback if f.value is not None]
    return sum(values) / len(values) if values else None


class ReplayAgent(LitAgent):  # type: ignore[misc]
    """Agent Lightning ``LitAgent`` that replays recorded tasks through the user's agent.

    Args:
        run_episode: ``(task, policy, sandbox) -> output``: the user's agent on one task.
        agent: The agent's name (for the candidate policy).
        scenario_reward: ``(task, output) -> reward in [0, 1]`` (``None``: not scored).
        live_tools: Side-effect-free tools that run for real.
        fake_tools: Stand-ins per tool name.
        weights: Weights of (tool reliability, scenario reward, feedback) in the reward.

    Example:
        >>> agent = ReplayAgent(lambda task, policy, sandbox: "ok", agent="support")  # doctest: +SKIP
    """

    def __init__(
        self,
        run_episode: EpisodeFn,
        *,
        agent: str,
        scenario_reward: ScenarioRewardFn | None = None,
        live_tools: Mapping[str, Callable[..., Any]] | None = None,
        fake_tools: Mapping[str, Callable[..., Any]] | None = None,
        weights: tuple[float, float, float] = (0.5, 0.5, 0.0),
    ) -> None:
        super().__init__()
        self.run_episode = run_episode
        self.agent_name = agent
        self.scenario_reward = scenario_reward
        self.live_tools = dict(live_tools or {})
        self.fake_tools = dict(fake_tools or {})
        self.weights = weights

    def replay(self, task: Task, policy: Policy) -> tuple[float, ToolSandbox, Any]:
        """Run one task under ``policy``; returns (reward, sandbox, output). Usable without a trainer."""
        sandbox = ToolSandbox.for_task(task, live=self.live_tools, fakes=self.fake_tools)
        output = self.run_episode(task, policy, sandbox)
        scenario = self.scenario_reward(task, output) if self.scenario_reward is not None else None
        reward = rewards.combine(
            tool_reliability=sandbox.reliability,
            task_reward=scenario,
            feedback=feedback_score(task),
            weights=self.weights,
        )
        return (0.0 if reward is None else float(reward)), sandbox, output

    def rollout(self, task: Any, resources: Any, rollout: Any) -> float:
        """Agent Lightning entry point: the task (a ``Task`` as JSON) replayed under the resources."""
        parsed = task if isinstance(task, Task) else Task.model_validate(task)
        reward, _, _ = self.replay(parsed, policy_from_resources(self.agent_name, resources or {}))
        return reward


class LocalOtelTracer(OtelTracer):  # type: ignore[misc]
    """Agent Lightning's ``OtelTracer`` on a private provider: never installs a global tracer provider.

    ``OtelTracer`` would call ``trace.set_tracer_provider`` (a process-wide, set-once switch);
    its spans only need its own provider, so this keeps the host's global provider untouched.
    """

    def _initialize_tracer_provider(self, worker_id: int) -> None:
        if getattr(self, "_initialized", False):
            return
        from agentlightning.tracer.otel import LightningSpanProcessor, LightningStoreOTLPExporter
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        self._tracer_provider = TracerProvider()
        self._lightning_span_processor = LightningSpanProcessor()
        self._tracer_provider.add_span_processor(self._lightning_span_processor)
        self._otlp_span_exporter = LightningStoreOTLPExporter()
        self._simple_span_processor = SimpleSpanProcessor(self._otlp_span_exporter)
        self._tracer_provider.add_span_processor(self._simple_span_processor)
        self._initialized = True


def run_algorithm(
    algorithm: Any,
    agent: Any,
    store: Any,
    train: Sequence[Any],
    val: Sequence[Any] | None = None,
    *,
    initial_resources: Mapping[str, Any] | None = None,
    adapter: Any = None,
) -> None:
    """Run an Agent Lightning algorithm with ``agent`` on one runner thread, sharing ``store``.

    Example:
        >>> run_algorithm(MyAlgorithm(), ReplayAgent(fn, agent="a"), store, train, val)  # doctest: +SKIP
    """
    strategy = agl.SharedMemoryExecutionStrategy(
        n_runners=1, main_thread="algorithm", graceful_delay=1.0, join_timeout=5.0, poll_interval=0.02
    )
    kwargs: dict[str, Any] = {}
    if adapter is not None:
        kwargs["adapter"] = adapter
    tracer = LocalOtelTracer()
    # The runner polls an empty queue every 5 s by default; replays are short, so poll often.
    runner = agl.LitAgentRunner(tracer=tracer, poll_interval=0.05, interval_jitter=0.01)
    trainer = agl.Trainer(
        algorithm=algorithm,
        n_runners=1,
        store=store,
        tracer=tracer,
        runner=runner,
        strategy=strategy,
        initial_resources=dict(initial_resources) if initial_resources else None,
        **kwargs,
    )
    trainer.fit(agent, train_dataset=list(train), val_dataset=list(val) if val is not None else None)


async def evaluate_resources(
    store: Any, tasks: Sequence[Task], resources: Mapping[str, Any], *, mode: str = "val"
) -> float:
    """Enqueue ``tasks`` under ``resources`` (made the latest), wait, and return the mean final reward.

    Called from inside an algorithm's ``run``; rollouts that did not finish count as 0.

    Example:
        >>> score = await evaluate_resources(store, heldout, {"system_prompt": prompt})  # doctest: +SKIP
    """
    if not tasks:
        return 0.0
    update = await store.add_resources(dict(resources))
    ids = [
        (
            await store.enqueue_rollout(input=t.model_dump(mode="json"), mode=mode, resources_id=update.resources_id)
        ).rollout_id
        for t in tasks
    ]
    finished = await store.wait_for_rollouts(rollout_ids=ids, timeout=300)
    total = 0.0
    for rollout in finished:
        spans = await store.query_spans(rollout.rollout_id, "latest")
        reward = agl.find_final_reward(list(spans))
        total += float(reward) if reward is not None else 0.0
    return total / len(tasks)
