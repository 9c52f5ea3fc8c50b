"""``apo``: Agent Lightning's ``APO`` optimises the system prompt and tool descriptions.

The user configures an OpenAI-compatible endpoint: ``options["base_url"]``, ``options["model"]``
and the environment variable holding the key (``options["api_key_env"]``, default
``OPENAI_API_KEY``; keys are read from the environment, never stored). Agent Lightning's
``APO`` (``agentlightning.algorithm.apo.APO``: beam search over textual gradients, its POML
prompts rendered by the ``poml`` package, gradient and edit calls through an ``AsyncOpenAI``
client to that endpoint) optimises one ``PromptTemplate`` resource per run, so the trainer
runs it in stages, each in its own ``Trainer`` over the job's DuckDB LightningStore:

1. ``system_prompt`` (seed: ``options["seed_prompt"]``, else the recorded system prompt);
2. then, unless ``options["optimize_tools"]`` is false, ``tool:<name>`` for each tool offered
   in the recorded tasks (seed: its recorded description), with the best system prompt and
   the other descriptions fixed (:attr:`~.lightning.replay.ReplayAgent.base_resources`).

Candidates are scored by replaying tasks through the user's agent
(:class:`~.lightning.replay.ReplayAgent`, tools in the replay sandbox): APO's rollouts on
the training tasks feed its gradients (each rollout leaves the replayed conversation as an
``openai.chat.completion`` span for ``TraceToMessages``), its validation rollouts on the
held-out tasks pick the beam. A stage's result is kept only if it raises the held-out reward.
The candidate policy carries the system prompt and the tool descriptions that were kept;
``metrics`` hold the held-out reward before and after and one entry per stage.

Example:
    >>> APOTrainer.name
    'apo'
"""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any, ClassVar

from agentgym_runtime.trainers.base import ProgressFn, TrainerUnavailable, TrainingJobSpec, TrainingResult
from agentgym_runtime.trainers.dataset import Task
from agentgym_runtime.trainers.lightning.common import job_store_path, replay_agent_from_spec, require_modules

DEFAULT_SEED_PROMPT = "You are a helpful assistant. Use the tools you are given when they help."

#: Modules the trainer needs in the training environment, and the extra that brings each.
REQUIRED_MODULES = {"agentlightning": "train", "openai": "train", "poml": "train"}


def _endpoint(options: dict[str, Any]) -> tuple[str, str, str]:
    base_url = options.get("base_url")
    model = options.get("model")
    if not base_url or not model:
        raise TrainerUnavailable(
            "the 'apo' trainer needs an OpenAI-compatible endpoint: set options['base_url'] (e.g. "
            "'http://localhost:8000/v1') and options['model']; the key is read from the environment variable "
            "named by options['api_key_env'] (default OPENAI_API_KEY)"
        )
    key = os.environ.get(str(options.get("api_key_env", "OPENAI_API_KEY")), "") or "none"
    return str(base_url).rstrip("/"), str(model), key


def check_endpoint(base_url: str, key: str, timeout: float = 5.0) -> None:
    """Raise :class:`TrainerUnavailable` if nothing answers HTTP at ``base_url`` (any HTTP status is an answer).

    Example:
        >>> check_endpoint("http://127.0.0.1:9", "k", timeout=0.5)  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        TrainerUnavailable: the APO endpoint http://127.0.0.1:9 is unreachable ...
    """
    import httpx

    try:
        httpx.get(f"{base_url}/models", headers={"Authorization": f"Bearer {key}"}, timeout=timeout)
    except httpx.HTTPError as exc:
        raise TrainerUnavailable(
            f"the APO endpoint {base_url} is unreachable ({type(exc).__name__}: {exc}); start the server or set "
            "options['base_url'] to a reachable OpenAI-compatible endpoint"
        ) from None


def offered_tools(tasks: list[Task]) -> dict[str, str]:
    """Tool name → recorded description, for every tool offered in ``tasks`` (first seen first).

    Example:
        >>> offered_tools([Task(episode_id="e", agent="a", tools=[{"name": "t", "description": "T"}])])
        {'t': 'T'}
    """
    tools: dict[str, str] = {}
    for task in tasks:
        for tool in task.tools:
            name = tool.get("name")
            if name:
                tools.setdefault(str(name), str(tool.get("description") or ""))
    return tools


def make_apo(client: Any, model: str, stage: str, options: dict[str, Any], train_size: int, val_size: int) -> Any:
    """Agent Lightning's ``APO`` for one stage, its prompt versions named ``<stage>:v<n>`` in the store.

    ``APO`` names its candidates ``v0``, ``v1``, … and stores each under that resources id; the
    stages share one store, so the stage name keeps their resources apart. ``candidates``
    counts the prompts it created (the seed included).

    Example:
        >>> algorithm = make_apo(client, "gpt-4.1-mini", "system_prompt", {}, 8, 4)  # doctest: +SKIP
    """
    from agentlightning.algorithm.apo import APO

    class StagedAPO(APO):  # type: ignore[misc]
        """``APO`` with stage-qualified prompt versions."""

        candidates = 0

        def _create_versioned_prompt(self, prompt_template: Any, *, score: float | None = None) -> Any:
            versioned = super()._create_versioned_prompt(prompt_template, score=score)
            versioned.version = f"{stage}:{versioned.version}"
            self.candidates += 1
            return versioned

    return StagedAPO(
        client,
        gradient_model=str(options.get("gradient_model") or model),
        apply_edit_model=str(options.get("apply_edit_model") or model),
        diversity_temperature=float(options.get("temperature", 1.0)),
        gradient_batch_size=int(options.get("gradient_batch_size", min(4, max(train_size, 1)))),
        val_batch_size=int(options.get("val_batch_size", val_size)),
        beam_width=int(options.get("beam_width", 2)),
        branch_factor=int(options.get("branch_factor", 2)),
        beam_rounds=int(options.get("rounds", 2)),
        rollout_batch_timeout=float(options.get("rollout_timeout_s", 600.0)),
    )


class APOTrainer:
    """The ``apo`` trainer (see the module docstring).

    Options: ``base_url``, ``model``, ``api_key_env``; APO's ``rounds`` (beam rounds, 2), ``beam_width`` (2),
    ``branch_factor`` (2), ``gradient_batch_size`` (up to 4), ``val_batch_size`` (all held-out tasks),
    ``temperature`` (1.0), ``gradient_model`` / ``apply_edit_model`` (default ``model``); ``optimize_tools``
    (true), ``seed_prompt`` (default: the recorded system prompt), ``max_retries`` (2), ``replay`` / ``reward``.

    Example:
        >>> APOTrainer().check_available(TrainingJobSpec(run_id="r", agent="a", trainer="apo",
        ...     snapshot_dir="s", output_dir="o"))  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        TrainerUnavailable: the 'apo' trainer needs an OpenAI-compatible endpoint ...
    """

    name: ClassVar[str] = "apo"

    def check_available(self, spec: TrainingJobSpec) -> None:
        """Endpoint configured and answering; ``agentlightning``, ``openai`` and ``poml`` installed."""
        base_url, _, key = _endpoint(spec.options)
        require_modules(self.name, REQUIRED_MODULES)
        check_endpoint(base_url, key)

    def train(self, spec: TrainingJobSpec, progress: ProgressFn) -> TrainingResult:
        """Load the snapshot and :meth:`fit` with the replay agent from the spec."""
        from agentgym_runtime.trainers.lightning.bridge import load_snapshot_tasks

        self.check_available(spec)
        agent = replay_agent_from_spec(spec)
        if agent is None:
            raise TrainerUnavailable(
                "apo scores prompts by replaying tasks through the agent: set options['replay'] to "
                "'module:qualname' of an episode function, or record the agent with an entrypoint"
            )
        train, heldout = load_snapshot_tasks(spec)
        # APO samples templates and batches with the module-level RNG; the job is its own process.
        random.seed(spec.seed)
        return self.fit(train, heldout, agent, options=spec.options, store_path=job_store_path(spec), progress=progress)

    def fit(
        self,
        train: list[Task],
        heldout: list[Task],
        replay_agent: Any,
        *,
        options: dict[str, Any],
        store_path: Any,
        progress: ProgressFn | None = None,
    ) -> TrainingResult:
        """Optimise the system prompt, then each tool description, with APO; return the candidate."""
        import openai

        from agentgym_runtime.trainers.lightning import import_agentlightning
        from agentgym_runtime.trainers.lightning.replay import SYSTEM_PROMPT_RESOURCE, TOOL_RESOURCE_PREFIX
        from agentgym_runtime.trainers.lightning.store import DuckDBLightningStore

        agl = import_agentlightning()
        require_modules(self.name, REQUIRED_MODULES)
        report = progress or (lambda fraction, message: None)
        base_url, model, key = _endpoint(options)
        check_endpoint(base_url, key)
        evaluation = heldout or train
        if not evaluation:
            raise TrainerUnavailable("the snapshot has no tasks: record episodes before running apo")
        gradient_tasks = train or evaluation
        recorded = next((t.system_instructions for t in train if isinstance(t.system_instructions, str)), None)
        seed_prompt = str(options.get("seed_prompt") or recorded or DEFAULT_SEED_PROMPT)
        client = openai.AsyncOpenAI(
            base_url=base_url, api_key=key, max_retries=int(options.get("max_retries", 2)), timeout=120
        )
        seed_tools = offered_tools([*evaluation, *gradient_tasks])
        stages = [SYSTEM_PROMPT_RESOURCE]
        if bool(options.get("optimize_tools", True)):
            stages += [f"{TOOL_RESOURCE_PREFIX}{name}" for name in seed_tools]
        current: dict[str, str] = {
            SYSTEM_PROMPT_RESOURCE: seed_prompt,
            **{f"{TOOL_RESOURCE_PREFIX}{name}": text for name, text in seed_tools.items()},
        }

        def tools_of(values: dict[str, str], changed: set[str]) -> dict[str, str]:
            return {
                name[len(TOOL_RESOURCE_PREFIX) :]: text
                for name, text in values.items()
                if name.startswith(TOOL_RESOURCE_PREFIX) and name in changed
            }

        changed: set[str] = set()
        before = self._score(replay_agent, evaluation, seed_prompt, {})
        score = before
        stage_metrics: list[dict[str, Any]] = []
        train_json = [t.model_dump(mode="json") for t in gradient_tasks]
        val_json = [t.model_dump(mode="json") for t in evaluation]
        report(
            0.05,
            f"APO with {model} at {base_url}: {len(stages)} stage(s) ({', '.join(stages)}), "
            f"{len(gradient_tasks)} train / {len(evaluation)} held-out tasks; held-out reward {before:.3f}",
        )
        store = DuckDBLightningStore(store_path)
        try:
            for index, resource in enumerate(stages):
                fixed = {
                    name: agl.PromptTemplate(template=text, engine="f-string")
                    for name, text in current.items()
                    if name != resource and (name == SYSTEM_PROMPT_RESOURCE or name in changed)
                }
                replay_agent.base_resources = fixed
                algorithm = make_apo(client, model, resource, options, len(gradient_tasks), len(evaluation))
                self._run(
                    algorithm,
                    replay_agent,
                    store,
                    train_json,
                    val_json,
                    {resource: agl.PromptTemplate(template=current[resource], engine="f-string")},
                )
                best = str(algorithm.get_best_prompt().template)
                trial = {**current, resource: best}
                trial_changed = changed | {resource}
                trial_score = self._score(
                    replay_agent, evaluation, trial[SYSTEM_PROMPT_RESOURCE], tools_of(trial, trial_changed)
                )
                kept = best != current[resource] and trial_score > score
                stage_metrics.append(
                    {
                        "resource": resource,
                        "heldout_reward_before": score,
                        "heldout_reward_best": trial_score,
                        "kept": kept,
                        "prompts": int(algorithm.candidates),
                    }
                )
                if kept:
                    current, changed, score = trial, trial_changed, trial_score
                report(
                    0.1 + 0.85 * (index + 1) / len(stages),
                    f"stage {index + 1}/{len(stages)} {resource}: held-out reward {trial_score:.3f} "
                    f"({'kept' if kept else 'not kept'})",
                )
        finally:
            replay_agent.base_resources = {}
            asyncio.run(store.close())
        system_prompt = current[SYSTEM_PROMPT_RESOURCE] if SYSTEM_PROMPT_RESOURCE in changed else None
        tools = tools_of(current, changed)
        improved = score > before
        report(1.0, f"held-out reward {before:.3f} -> {score:.3f}")
        return TrainingResult(
            trainer=self.name,
            system_prompt=system_prompt,
            tool_descriptions=tools,
            metrics={
                "heldout_reward_before": before,
                "heldout_reward_after": score,
                "train_tasks": len(train),
                "heldout_tasks": len(heldout),
                "stages": stage_metrics,
                "prompts_scored": sum(s["prompts"] for s in stage_metrics),
                "algorithm": "agentlightning.APO",
                "model": model,
                "base_url": base_url,
            },
            notes=None if improved else "no APO candidate beat the seed prompt and descriptions on the held-out tasks",
        )

    @staticmethod
    def _run(
        algorithm: Any, agent: Any, store: Any, train: list[Any], val: list[Any], resources: dict[str, Any]
    ) -> None:
        from agentgym_runtime.trainers.lightning import import_agentlightning
        from agentgym_runtime.trainers.lightning.replay import run_algorithm

        agl = import_agentlightning()
        run_algorithm(algorithm, agent, store, train, val, initial_resources=resources, adapter=agl.TraceToMessages())

    @staticmethod
    def _score(replay_agent: Any, tasks: list[Task], prompt: str, tools: dict[str, str]) -> float:
        from agentgym_runtime.recording.policy import Policy

        policy = Policy(agent=replay_agent.agent_name, version=1, system_prompt=prompt, tool_descriptions=tools)
        return float(sum(replay_agent.replay(t, policy)[0] for t in tasks) / len(tasks))
