"""``apo``: automatic prompt optimisation of the system prompt against an OpenAI-compatible endpoint.

The user configures the endpoint: ``options["base_url"]``, ``options["model"]`` and the
environment variable holding the key (``options["api_key_env"]``, default ``OPENAI_API_KEY``;
keys are read from the environment, never stored). The system prompt is an Agent Lightning
``PromptTemplate`` resource named ``system_prompt``; candidates are scored by replaying
held-out tasks through the user's agent (:class:`~.lightning.replay.ReplayAgent`), with the
rollouts in the job's DuckDB LightningStore.

The algorithm is Agent Lightning's ``APO`` (beam search over textual gradients, with the
``TraceToMessages`` adapter) when its ``apo`` extra (the ``poml`` package) is installed.
Without it, :func:`make_textual_gradient_algorithm` runs the same loop as an Agent
Lightning ``Algorithm`` with plain chat prompts: critique the prompt from the worst
rollouts, ask for an edited prompt, keep it if it scores better on the held-out tasks;
then the same for each tool's description (resources ``tool:<name>``), unless
``options["optimize_tools"]`` is false. Agent Lightning's ``APO`` optimises one
``PromptTemplate``, so on that path only the system prompt is optimised.
``metrics["algorithm"]`` says which ran.

Example:
    >>> APOTrainer.name
    'apo'
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from typing import Any, ClassVar

from agentgym_runtime.trainers.base import ProgressFn, TrainerUnavailable, TrainingJobSpec, TrainingResult
from agentgym_runtime.trainers.dataset import Task
from agentgym_runtime.trainers.lightning.common import job_store_path, replay_agent_from_spec, require_modules

DEFAULT_SEED_PROMPT = "You are a helpful assistant. Use the tools you are given when they help."

CRITIQUE_INSTRUCTIONS = (
    "You improve system prompts for a tool-using AI agent. Here is the current system prompt:\n"
    "<prompt>\n{prompt}\n</prompt>\n"
    "It scored {score:.3f} (0 to 1) on these tasks, the worst first:\n{examples}\n"
    "Explain briefly what in the prompt makes the agent fail."
)
TOOL_EDIT_INSTRUCTIONS = (
    "An AI agent calls the tool {tool!r} (JSON schema of its arguments: {schema}). Its current tool description "
    "is:\n<description>\n{description}\n</description>\nWith it the agent scores {score:.3f} (0 to 1). Write an "
    "improved tool description that makes the agent call it correctly. Reply with the description text only."
)
EDIT_INSTRUCTIONS = (
    "Current system prompt:\n<prompt>\n{prompt}\n</prompt>\nCritique:\n{critique}\n"
    "Write an improved system prompt. Reply with the prompt text only."
)


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


def _algorithm_base() -> type:
    from agentgym_runtime.trainers.lightning import import_agentlightning

    return import_agentlightning().Algorithm  # type: ignore[no-any-return]


def make_textual_gradient_algorithm(
    client: Any,
    model: str,
    heldout: list[Task],
    *,
    rounds: int = 2,
    temperature: float = 0.7,
    optimize_tools: bool = True,
) -> Any:
    """APO's loop (critique → edit → keep if better on held-out) as an Agent Lightning algorithm.

    Example:
        >>> algo = make_textual_gradient_algorithm(client, "m", heldout)  # doctest: +SKIP
    """
    from agentgym_runtime.trainers.lightning import import_agentlightning
    from agentgym_runtime.trainers.lightning.bridge import as_text
    from agentgym_runtime.trainers.lightning.replay import SYSTEM_PROMPT_RESOURCE, TOOL_RESOURCE_PREFIX

    agl = import_agentlightning()

    class TextualGradientAPO(_algorithm_base()):  # type: ignore[misc]
        """Beam of width one over textual-gradient edits of the ``system_prompt`` resource."""

        def __init__(self) -> None:
            super().__init__()
            self.history: list[tuple[str, float]] = []
            self.best_prompt: str | None = None
            self.best_score = float("-inf")
            self.tool_descriptions: dict[str, str] = {}

        def _resources(self, prompt: str, tools: dict[str, str]) -> dict[str, Any]:
            resources = {SYSTEM_PROMPT_RESOURCE: agl.PromptTemplate(template=prompt, engine="f-string")}
            for tool, description in tools.items():
                resources[f"{TOOL_RESOURCE_PREFIX}{tool}"] = agl.PromptTemplate(template=description, engine="f-string")
            return resources

        async def _score(
            self, prompt: str, tools: dict[str, str] | None = None
        ) -> tuple[float, list[tuple[float, Task]]]:
            store = self.get_store()
            resources = self._resources(prompt, tools if tools is not None else self.tool_descriptions)
            update = await store.add_resources(resources)
            ids = [
                (
                    await store.enqueue_rollout(
                        input=t.model_dump(mode="json"), mode="val", resources_id=update.resources_id
                    )
                ).rollout_id
                for t in heldout
            ]
            done = {r.rollout_id: r for r in await store.wait_for_rollouts(rollout_ids=ids, timeout=600)}
            scored: list[tuple[float, Task]] = []
            for rollout_id, task in zip(ids, heldout, strict=True):
                reward = None
                if rollout_id in done:
                    reward = agl.find_final_reward(list(await store.query_spans(rollout_id, "latest")))
                scored.append((float(reward) if reward is not None else 0.0, task))
            score = sum(r for r, _ in scored) / max(len(scored), 1)
            self.history.append((prompt, score))
            return score, scored

        async def _chat(self, content: str) -> str:
            response = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": content}], temperature=temperature
            )
            return str(response.choices[0].message.content or "").strip()

        async def run(self, train_dataset: Any = None, val_dataset: Any = None) -> None:
            seed = self.get_initial_resources()[SYSTEM_PROMPT_RESOURCE].template
            current = str(seed)
            score, scored = await self._score(current)
            self.best_prompt, self.best_score = current, score
            for _ in range(rounds):
                worst = sorted(scored, key=lambda item: item[0])[:4]
                examples = "\n".join(f"- task: {as_text(t.input)} -> reward {r:.2f}" for r, t in worst)
                critique = await self._chat(
                    CRITIQUE_INSTRUCTIONS.format(prompt=current, score=score, examples=examples)
                )
                candidate = await self._chat(EDIT_INSTRUCTIONS.format(prompt=current, critique=critique))
                if not candidate:
                    continue
                candidate_score, candidate_scored = await self._score(candidate)
                if candidate_score > self.best_score:
                    self.best_prompt, self.best_score = candidate, candidate_score
                    current, score, scored = candidate, candidate_score, candidate_scored
            if not optimize_tools:
                return
            # Then each tool's description, one edit per tool and round, kept only if the score rises.
            offered: dict[str, dict[str, Any]] = {}
            for task in heldout:
                for tool in task.tools:
                    offered.setdefault(str(tool.get("name")), dict(tool))
            for _ in range(rounds):
                for name, tool in offered.items():
                    description = self.tool_descriptions.get(name, str(tool.get("description") or ""))
                    candidate = await self._chat(
                        TOOL_EDIT_INSTRUCTIONS.format(
                            tool=name,
                            schema=as_text(tool.get("parameters") or {}),
                            description=description,
                            score=self.best_score,
                        )
                    )
                    if not candidate:
                        continue
                    trial = {**self.tool_descriptions, name: candidate}
                    trial_score, _ = await self._score(current, trial)
                    if trial_score > self.best_score:
                        self.tool_descriptions, self.best_score = trial, trial_score

    return TextualGradientAPO()


class APOTrainer:
    """The ``apo`` trainer (see the module docstring).

    Options: ``base_url``, ``model``, ``api_key_env``, ``rounds`` (2), ``beam_width`` (2, Agent Lightning's APO),
    ``optimize_tools`` (true),
    ``seed_prompt`` (default: the recorded system prompt), ``replay`` / ``reward``.

    Example:
        >>> APOTrainer().check_available(TrainingJobSpec(run_id="r", agent="a", trainer="apo",
        ...     snapshot_dir="s", output_dir="o"))  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        TrainerUnavailable: the 'apo' trainer needs an OpenAI-compatible endpoint ...
    """

    name: ClassVar[str] = "apo"

    def check_available(self, spec: TrainingJobSpec) -> None:
        """Endpoint configured and answering; ``agentlightning`` and ``openai`` installed."""
        base_url, _, key = _endpoint(spec.options)
        require_modules(self.name, {"agentlightning": "train", "openai": "train"})
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
        """Optimise the system prompt on ``train``/``heldout`` with ``replay_agent``; return the candidate."""
        import openai

        from agentgym_runtime.trainers.lightning import import_agentlightning
        from agentgym_runtime.trainers.lightning.replay import SYSTEM_PROMPT_RESOURCE, run_algorithm
        from agentgym_runtime.trainers.lightning.store import DuckDBLightningStore

        agl = import_agentlightning()
        report = progress or (lambda fraction, message: None)
        base_url, model, key = _endpoint(options)
        check_endpoint(base_url, key)
        evaluation = heldout or train
        if not evaluation:
            raise TrainerUnavailable("the snapshot has no tasks: record episodes before running apo")
        recorded = next((t.system_instructions for t in train if isinstance(t.system_instructions, str)), None)
        seed_prompt = str(options.get("seed_prompt") or recorded or DEFAULT_SEED_PROMPT)
        client = openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=120)
        rounds = int(options.get("rounds", 2))
        if importlib.util.find_spec("poml") is not None:
            algorithm = agl.APO(
                client,
                gradient_model=model,
                apply_edit_model=model,
                beam_rounds=rounds,
                beam_width=int(options.get("beam_width", 2)),
                branch_factor=int(options.get("branch_factor", 2)),
                gradient_batch_size=min(4, max(len(train), 1)),
                val_batch_size=len(evaluation),
            )
            name = "agentlightning.APO"
        else:
            algorithm = make_textual_gradient_algorithm(
                client, model, evaluation, rounds=rounds, optimize_tools=bool(options.get("optimize_tools", True))
            )
            name = "textual-gradient (agentlightning Algorithm; APO needs the 'poml' package)"
        report(0.1, f"APO with {model} at {base_url}: {rounds} rounds on {len(evaluation)} held-out tasks")
        store = DuckDBLightningStore(store_path)
        seed_resource = agl.PromptTemplate(template=seed_prompt, engine="f-string")
        try:
            run_algorithm(
                algorithm,
                replay_agent,
                store,
                [t.model_dump(mode="json") for t in train] or [t.model_dump(mode="json") for t in evaluation],
                [t.model_dump(mode="json") for t in evaluation],
                initial_resources={SYSTEM_PROMPT_RESOURCE: seed_resource},
                adapter=agl.TraceToMessages(),
            )
        finally:
            asyncio.run(store.close())
        best = algorithm.get_best_prompt().template if hasattr(algorithm, "get_best_prompt") else algorithm.best_prompt
        if best is None:
            raise RuntimeError("APO produced no prompt; see the job log")
        tools: dict[str, str] = dict(getattr(algorithm, "tool_descriptions", {}))
        before = self._score(replay_agent, evaluation, seed_prompt, {})
        after = self._score(replay_agent, evaluation, str(best), tools)
        report(1.0, f"held-out reward {before:.3f} -> {after:.3f}")
        improved = after > before
        return TrainingResult(
            trainer=self.name,
            system_prompt=str(best) if improved else None,
            tool_descriptions=tools if improved else {},
            metrics={
                "heldout_reward_before": before,
                "heldout_reward_after": after if improved else before,
                "best_prompt_reward": after,
                "prompts_scored": len(getattr(algorithm, "history", [])) or None,
                "algorithm": name,
                "model": model,
                "base_url": base_url,
            },
            notes=None if improved else "no candidate prompt beat the seed prompt on the held-out tasks",
        )

    @staticmethod
    def _score(replay_agent: Any, tasks: list[Task], prompt: str, tools: dict[str, str]) -> float:
        from agentgym_runtime.policy.model import Policy

        policy = Policy(agent=replay_agent.agent_name, version=1, system_prompt=prompt, tool_descriptions=tools)
        return float(sum(replay_agent.replay(t, policy)[0] for t in tasks) / len(tasks))
