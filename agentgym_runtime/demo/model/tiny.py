r"""The tiny tool-calling causal LM of the demo: built from a config, trained here, cached on disk.

It stands in for the user's production model: a GPT-2-style transformer of about 0.3 million
parameters (2 layers, width 96), with a byte-level BPE tokenizer trained locally on scenario
text, warm-started for a few hundred steps on the scenario's train tasks (with systematic
mistakes, see :mod:`agentgym_runtime.demo.model.data`). Entities (numbers, emails, paths, names) are
delexicalised into slot tokens before the model sees them and put back in its output
(:func:`~agentgym_runtime.demo.model.format.delexicalize`): a model this small learns the call
structure in minutes on a CPU but would need far longer to learn to copy digits. Nothing is
downloaded. torch, transformers, tokenizers and peft are imported only here (the ``train`` extra).

It is served like any model (:attr:`DemoModel.engine`): by the shared
:class:`~agentgym_runtime.models.engine.ChatEngine` in the demo's own serving format
(:class:`~agentgym_runtime.demo.model.serving.DemoFormat`), which loads each LoRA adapter once and
serves the one each call asks for.

Code that drives ``model``/``tokenizer`` directly (the GRPO trainer) must do the same:
``text, slots = delexicalize(render_prompt(...))``, generate from ``text``, then
``relexicalize(completion, slots)`` before :func:`~agentgym_runtime.demo.model.format.score_completion`.

Example:
    >>> from agentgym_runtime.demo.model.tiny import load_or_build_demo_model  # doctest: +SKIP
    >>> model = load_or_build_demo_model("customer_support", home="/tmp/agentgym")  # doctest: +SKIP
    >>> model.complete(["tools: get_order\\nuser: status of order 1234?\\nnext:"])  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentgym_runtime.demo.model.data import corpus_texts, warm_start_examples
from agentgym_runtime.demo.model.format import FORMAT_VERSION, delexicalize
from agentgym_runtime.errors import ConfigurationError, MissingExtraError
from agentgym_runtime.scenarios.base import Scenario
from agentgym_runtime.scenarios.registry import get_scenario

if TYPE_CHECKING:
    from agentgym_runtime.models.engine import ChatEngine

#: Bump when the build recipe changes: it is part of the cache key.
RECIPE_VERSION = 2
BUILD_FILE = "agentgym_build.json"
_PROGRESS = bool(os.environ.get("AGENTGYM_DEMO_PROGRESS"))


@dataclass(frozen=True)
class TinyModelConfig:
    """Architecture and warm-start recipe of the demo model (all part of the cache key).

    Attributes:
        vocab_size: BPE vocabulary size.
        n_embd: Hidden size.
        n_layer: Transformer blocks.
        n_head: Attention heads.
        n_positions: Longest sequence (prompt + completion), in tokens.
        train_tasks: Train tasks the warm start uses.
        steps: Optimiser steps.
        batch_size: Sequences per step.
        learning_rate: Peak AdamW learning rate.
        max_new_tokens: Longest completion generated.
    """

    vocab_size: int = 600
    n_embd: int = 96
    n_layer: int = 2
    n_head: int = 4
    n_positions: int = 256
    train_tasks: int = 500
    steps: int = 400
    batch_size: int = 32
    learning_rate: float = 5e-3
    max_new_tokens: int = 40


def _require() -> tuple[Any, Any, Any]:
    try:
        import tokenizers
        import torch
        import transformers
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise MissingExtraError("demo model", "train", exc.name or "torch") from exc
    return torch, transformers, tokenizers


def cache_key(scenario: str, config: TinyModelConfig, seed: int) -> str:
    """Hash of everything that determines the built weights."""
    blob = json.dumps(
        {
            "scenario": scenario,
            "config": asdict(config),
            "seed": seed,
            "format": FORMAT_VERSION,
            "recipe": RECIPE_VERSION,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class DemoModel:
    """The tiny LM and its tokenizer, served by the shared engine (batched greedy completion, LoRA adapters).

    Attributes:
        scenario: The scenario it was warm-started on.
        path: Where its files live.
        model: The ``transformers`` model (``GPT2LMHeadModel``), the plain base weights (training reads them).
        tokenizer: A ``PreTrainedTokenizerFast``.
        config: The :class:`TinyModelConfig` it was built with.
    """

    def __init__(self, scenario: str, path: Path, model: Any, tokenizer: Any, config: TinyModelConfig) -> None:
        self.scenario = scenario
        self.path = path
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self._engine: ChatEngine | None = None
        self._lock = threading.Lock()

    @property
    def num_parameters(self) -> int:
        """Parameters of the base model."""
        return int(sum(p.numel() for p in self.model.parameters()))

    @property
    def engine(self) -> ChatEngine:
        """The engine serving this model (created on first use): per-call LoRA adapters, each loaded once.

        It serves a copy of the weights: peft adds the adapters' layers to the model it wraps, and
        :attr:`model` stays the plain base that training and direct generation use.
        """
        with self._lock:
            if self._engine is None:
                from agentgym_runtime.demo.model.serving import DemoFormat
                from agentgym_runtime.models.engine import ChatEngine

                context = self.config.n_positions - self.config.max_new_tokens
                self._engine = ChatEngine.for_model(
                    copy.deepcopy(self.model),
                    self.tokenizer,
                    DemoFormat(self.tokenizer, context),
                    model_path=str(self.path),
                    name=f"{self.scenario}-tiny",
                    max_new_tokens=self.config.max_new_tokens,
                )
            return self._engine

    def complete(
        self, prompts: Sequence[str], *, adapter: str | os.PathLike[str] | None = None, batch_size: int = 64
    ) -> list[tuple[str, int, int]]:
        """Greedy completions of rendered ``prompts``: ``(text, input_tokens, output_tokens)`` each.

        Raises:
            AdapterError: No LoRA adapter at ``adapter``, or one trained on another base model.
        """
        served = self.engine.complete(prompts, adapter=Path(adapter) if adapter else None, batch_size=batch_size)
        return [(g.text, g.prompt_tokens, g.completion_tokens) for g in served]


def _train_tokenizer(texts: list[str], vocab_size: int) -> Any:
    _, transformers, tokenizers = _require()
    from tokenizers import decoders, models, pre_tokenizers, trainers

    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>")


def build_demo_model(
    scenario: Scenario | str,
    path: Path,
    *,
    seed: int = 0,
    config: TinyModelConfig | None = None,
    threads: int | None = None,
) -> DemoModel:
    """Train the tokenizer and warm-start the model for ``scenario``; save both into ``path``.

    Args:
        scenario: The scenario (or its name) whose train tasks warm-start the model.
        path: Directory the model and tokenizer are saved into.
        seed: Seed of the data, the initial weights and the batches.
        config: Architecture and recipe (default :class:`TinyModelConfig`).
        threads: Intra-op threads of the warm start; ``None`` picks :func:`build_threads`. The
            thread count changes the order of floating-point sums, so a build that must be
            reproduced bit for bit (a golden record) pins it.
    """
    torch, transformers, _ = _require()
    config = config or TinyModelConfig()
    scen = get_scenario(scenario) if isinstance(scenario, str) else scenario
    examples = []
    for raw_prompt, raw_completion in warm_start_examples(scen, n_tasks=config.train_tasks, seed=seed):
        prompt, slots = delexicalize(raw_prompt)
        examples.append((prompt, delexicalize(raw_completion, slots, grow=False)[0]))
    tokenizer = _train_tokenizer(corpus_texts(examples), config.vocab_size)
    torch.manual_seed(seed)
    model_config = transformers.GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=config.n_positions,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        n_inner=4 * config.n_embd,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = transformers.GPT2LMHeadModel(model_config)
    rows: list[tuple[list[int], int]] = []
    for prompt, completion in examples:
        p_ids = tokenizer.encode(prompt)
        c_ids = [*tokenizer.encode(" " + completion), tokenizer.eos_token_id]
        seq = (p_ids + c_ids)[-config.n_positions :]
        rows.append((seq, max(0, len(seq) - len(c_ids))))
    before = torch.get_num_threads()
    torch.set_num_threads(threads or build_threads(_usable_cores(), os.getloadavg()[0]))
    try:
        _train(torch, model, rows, config, seed, tokenizer.pad_token_id)
    finally:
        torch.set_num_threads(before)
    model.eval()
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return DemoModel(scen.name, path, model, tokenizer, config)


def build_threads(cores: int, load: float) -> int:
    """Intra-op threads for the warm start: the cores nothing else is using, at least one.

    ``load`` is the 1-minute load average, which counts this process too (it was busy importing
    and preparing data just before), so about one unit of it is ours. Both directions were
    measured on a 2-core machine: idle, two threads built code_review's model in 84 s against one
    thread's 137 s (same held-out behaviour); busy with another run, two spinning threads made
    the build ~3x slower than one (426 s vs 150 s).

    Args:
        cores: Cores this process may run on.
        load: The 1-minute load average.

    Example:
        >>> build_threads(2, 0.9), build_threads(2, 1.3), build_threads(2, 2.4), build_threads(16, 5.0)
        (2, 2, 1, 12)
    """
    others = max(0.0, load - 1.0)
    return max(1, min(cores, round(cores - others)))


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _train(
    torch: Any, model: Any, rows: list[tuple[list[int], int]], config: TinyModelConfig, seed: int, pad: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.01)
    warmup = max(1, config.steps // 10)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, config.steps - warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model.train()
    for step in range(config.steps):
        picks = torch.randint(len(rows), (config.batch_size,), generator=generator).tolist()
        batch = [rows[i] for i in picks]
        width = max(len(seq) for seq, _ in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (seq, completion_start) in enumerate(batch):
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
            labels[row, completion_start : len(seq)] = torch.tensor(seq[completion_start:])
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if _PROGRESS and step % 50 == 0:
            print(f"step {step} loss {loss.item():.3f} t={time.perf_counter():.1f}", flush=True)
    model.eval()


def default_home() -> Path:
    """The agentgym home of the current settings (``AGENTGYM_HOME`` or ``./.agentgym``)."""
    from agentgym_runtime.config import Settings

    return Settings().home


def model_dir(scenario: str, home: str | os.PathLike[str] | None = None) -> Path:
    """``<home>/models/<scenario>-tiny``."""
    return Path(home if home is not None else default_home()) / "models" / f"{scenario}-tiny"


def load_demo_model(path: str | os.PathLike[str]) -> DemoModel:
    """Load a demo model saved by :func:`build_demo_model`.

    Raises:
        ConfigurationError: ``path`` holds no demo model.
    """
    _, transformers, _ = _require()
    where = Path(path)
    build = where / BUILD_FILE
    if not build.exists():
        raise ConfigurationError(f"no demo model at {where} ({BUILD_FILE} missing)")
    info = json.loads(build.read_text())
    tokenizer = transformers.PreTrainedTokenizerFast.from_pretrained(str(where))
    model = transformers.GPT2LMHeadModel.from_pretrained(str(where))
    model.eval()
    return DemoModel(info["scenario"], where, model, tokenizer, TinyModelConfig(**info["config"]))


_loaded: dict[str, DemoModel] = {}
_build_lock = threading.Lock()


def load_or_build_demo_model(
    scenario: Scenario | str,
    home: str | os.PathLike[str] | None = None,
    seed: int = 0,
    *,
    config: TinyModelConfig | None = None,
) -> DemoModel:
    """The demo model for ``scenario``, built once and cached under ``<home>/models/<scenario>-tiny``.

    A cached build is reused when its recipe (config, seed, format) hashes to the same key;
    otherwise the model is built (a few minutes on a CPU) and saved there.

    Example:
        >>> model = load_or_build_demo_model("customer_support", home="/tmp/ag")  # doctest: +SKIP
        >>> model.num_parameters > 500_000  # doctest: +SKIP
        True
    """
    scen = get_scenario(scenario) if isinstance(scenario, str) else scenario
    config = config or TinyModelConfig()
    key = cache_key(scen.name, config, seed)
    target = model_dir(scen.name, home)
    with _build_lock:
        memo = _loaded.get(str(target.resolve()))
        if memo is not None and _key_of(target) == key:
            return memo
        if _key_of(target) != key:
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
            started = time.perf_counter()
            try:
                build_demo_model(scen, staging, seed=seed, config=config)
                info = {
                    "key": key,
                    "scenario": scen.name,
                    "seed": seed,
                    "config": asdict(config),
                    "build_seconds": round(time.perf_counter() - started, 2),
                }
                (staging / BUILD_FILE).write_text(json.dumps(info, indent=2))
                if target.exists():
                    shutil.rmtree(target)
                staging.rename(target)
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)
        model = load_demo_model(target)
        _loaded[str(target.resolve())] = model
        return model


def _key_of(path: Path) -> str | None:
    try:
        return str(json.loads((path / BUILD_FILE).read_text())["key"])
    except (OSError, ValueError, KeyError):
        return None
