"""The replay agent: re-run recorded tasks through the user's agent with candidate resources.

* :class:`~agentgym_runtime.recording.sandbox.ToolSandbox` (defined in :mod:`agentgym_runtime.recording.sandbox`,
  re-exported here) stands in for the agent's tools while it replays a task. Per tool:
  ``"replay"`` (default: the recorded result for identical arguments; otherwise the
  arguments are checked against the tool's JSON schema and a neutral observation is
  returned), ``"live"`` (the user marked the tool side-effect free: the real function
  runs) or a user-supplied fake (any callable). Every call is counted with its outcome,
  which gives the replayed episode's tool reliability.
* :class:`ReplayAgent` is an Agent Lightning ``LitAgent``: for each rollout it turns the
  candidate resources into a :class:`~agentgym_runtime.recording.policy.Policy`
  (:func:`policy_from_resources`), runs the user's episode function on the task with a
  fresh sandbox, and returns the reward: tool reliability combined with the scenario's
  reward and the task's recorded feedback (:func:`agentgym_runtime.recording.rewards.combine`).
  The sandbox is active (:func:`agentgym_runtime.recording.sandbox.use_sandbox`) while the episode
  runs, so ``@agentgym.tool`` / ``Toolbox`` tools and LangChain, AutoGen and CrewAI tools
  called by the user's agent reach the sandbox by themselves. Each rollout also leaves an
  ``openai.chat.completion`` span (prompt, output, the sandboxed tool calls as child spans)
  so that ``TraceToMessages`` (APO's textual gradients) sees what the agent did.
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

import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

# The replay drives the user's agent like the decorator does: loading the adapters plugs their
# framework hooks into the sandbox, so framework tools answer from it even if the replayed entry
# point never imported agentgym's adapters itself.
import agentgym_runtime.adapters  # noqa: F401
from agentgym_runtime.recording import rewards
from agentgym_runtime.recording.policy import Demonstration, LLMConfig, Policy
from agentgym_runtime.recording.sandbox import NEUTRAL_OBSERVATION, ToolSandbox, current_sandbox, use_sandbox
from agentgym_runtime.trainers.dataset import RecordedToolCall, Task
from agentgym_runtime.trainers.lightning import import_agentlightning

agl = import_agentlightning()
from agentlightning import LitAgent  # noqa: E402
from agentlightning.tracer.otel import OtelTracer  # noqa: E402

logger = logging.getLogger(__name__)

#: Resource names understood by :func:`policy_from_resources`.
SYSTEM_PROMPT_RESOURCE = "system_prompt"
DEMONSTRATIONS_RESOURCE = "demonstrations"
TOOL_RESOURCE_PREFIX = "tool:"

EpisodeFn = Callable[[Task, Policy, "ToolSandbox"], Any]
ScenarioRewardFn = Callable[[Task, Any], float | None]

__all__ = [
    "DEMONSTRATIONS_RESOURCE",
    "NEUTRAL_OBSERVATION",
    "SYSTEM_PROMPT_RESOURCE",
    "TOOL_RESOURCE_PREFIX",
    "LocalOtelTracer",
    "ReplayAgent",
    "ToolSandbox",
    "current_sandbox",
    "demonstrations_resource",
    "evaluate_resources",
    "feedback_score",
    "load_replay_callable",
    "load_replay_function",
    "policy_from_resources",
    "run_algorithm",
]


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

    from agentgym_runtime.trainers.lightning.common import import_object

    module_name, _, qualname = path.rpartition(":")
    if not module_name or not qualname:
        raise ValueError(f"replay function {path!r} must be 'module:qualname'")
    try:
        target: Any = import_object(path)
    except AttributeError as exc:
        raise ValueError(
            f"replay function {path!r}: {exc}; name a module-level function with "
            "trainer_options={'replay': 'module:function'}"
        ) from exc
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
    # ReplayAgent.replay activates the sandbox around every episode function; activating it here
    # too keeps the runner usable on its own.
    def run(task: Task, policy: Policy, sandbox: ToolSandbox) -> Any:
        with use_sandbox(sandbox), candidate_policy(policy):
            if isinstance(task.input, dict):
                return fn(**task.input)
            return fn(task.input)

    return run


@contextmanager
def candidate_policy(policy: Policy) -> Iterator[Policy]:
    """Within the block, the candidate is the agent's policy.

    ``agentgym.current_policy()`` returns it (plain agents) and the router pins it for the
    agent's calls (framework agents, through the adapters).

    Example:
        >>> from agentgym_runtime.recording.context import current_agent_var
        >>> with candidate_policy(Policy(agent="bot", version=3)):
        ...     current_agent_var.get().policy.version
        3
    """
    from agentgym_runtime.policy.router import seeded
    from agentgym_runtime.recording.context import AgentScope, current_agent_var

    token = current_agent_var.set(AgentScope(name=policy.agent, policy=policy))
    try:
        with seeded(policy):
            yield policy
    finally:
        current_agent_var.reset(token)


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

    Attributes:
        base_resources: Resources every rollout gets under the ones it is given (a rollout's own
            resource of the same name wins). An algorithm that optimises one resource at a time,
            like Agent Lightning's ``APO``, sees its candidate combined with the others fixed here.

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
        self.base_resources: dict[str, Any] = {}
        #: Replays run and replays that raised (with the first error), for the trainer's metrics:
        #: a run whose replays all fail must say why, not report a score of 0.
        self.replays = 0
        self.replay_errors = 0
        self.first_replay_error: str | None = None

    def replay(self, task: Task, policy: Policy) -> tuple[float, ToolSandbox, Any]:
        """Run one task under ``policy``; returns (reward, sandbox, output). Usable without a trainer.

        The sandbox is active while the episode function runs, so the agent's tools reach it
        whether the function calls ``sandbox.call`` itself or runs a framework agent whose
        tools do.
        """
        sandbox = ToolSandbox.for_task(task, live=self.live_tools, fakes=self.fake_tools)
        self.replays += 1
        try:
            with use_sandbox(sandbox):
                output = self.run_episode(task, policy, sandbox)
        except Exception as exc:
            self.replay_errors += 1
            if self.first_replay_error is None:
                self.first_replay_error = f"{type(exc).__name__}: {exc}"
            raise
        scenario = self.scenario_reward(task, output) if self.scenario_reward is not None else None
        reward = rewards.combine(
            tool_reliability=sandbox.reliability,
            task_reward=scenario,
            feedback=feedback_score(task),
            weights=self.weights,
        )
        return (0.0 if reward is None else float(reward)), sandbox, output

    def replay_metrics(self) -> dict[str, Any]:
        """``replays``, ``replay_errors`` and the first ``replay_error``, for a trainer's metrics."""
        metrics: dict[str, Any] = {"replays": self.replays, "replay_errors": self.replay_errors}
        if self.first_replay_error is not None:
            metrics["replay_error"] = self.first_replay_error
        return metrics

    def rollout(self, task: Any, resources: Any, rollout: Any) -> float:
        """Agent Lightning entry point: the task (a ``Task`` as JSON) replayed under the resources."""
        parsed = task if isinstance(task, Task) else Task.model_validate(task)
        policy = policy_from_resources(self.agent_name, {**self.base_resources, **dict(resources or {})})
        reward, sandbox, output = self.replay(parsed, policy)
        try:
            self._trace(parsed, policy, sandbox, output)
        except Exception:  # the trace only informs the algorithm; the reward stands without it
            logger.warning("could not trace the replayed rollout", exc_info=True)
        return reward

    def _trace(self, task: Task, policy: Policy, sandbox: ToolSandbox, output: Any) -> None:
        """Leave the replayed conversation in the rollout's spans, the form ``TraceToMessages`` reads."""
        from agentgym_runtime.trainers.lightning.bridge import LLM_SPAN_NAME, as_text, llm_span_attributes

        try:
            tracer = self.get_tracer()
        except Exception:  # no trainer or runner: replay() used on its own
            return
        tools = [
            {**tool, "description": policy.tool_descriptions.get(str(tool.get("name")), tool.get("description"))}
            for tool in task.tools
        ]
        calls = [
            RecordedToolCall(
                name=call["name"],
                call_id=f"replay_{index}",
                arguments=call["arguments"],
                result=call["result"],
                outcome=call["outcome"],
                error_message=call["message"],
            )
            for index, call in enumerate(sandbox.calls)
        ]
        replayed = task.model_copy(
            update={
                "output": output,
                "tools": tools,
                "tool_calls": calls,
                "system_instructions": policy.system_prompt or task.system_instructions,
            }
        )
        with tracer.operation_context(LLM_SPAN_NAME, attributes=llm_span_attributes(replayed)):
            for call in calls:
                attributes = {
                    "tool.name": call.name or "",
                    "tool.parameters": as_text(call.arguments if call.arguments is not None else {}),
                    "tool.call.id": call.call_id or "",
                    "tool.call.type": "function",
                    "agentgym.tool.outcome": call.outcome,
                    "agentgym.tool.result": as_text(call.result if call.ok else call.error_message),
                }
                with tracer.operation_context(f"execute_tool {call.name}", attributes=attributes):
                    pass


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
