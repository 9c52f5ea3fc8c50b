"""GRPO throughput on CPU (and CUDA when present) for a tiny causal LM built from a config.

Side by side in one process, interleaved rounds (machine-load drift hits both):

* **sampling only** (the baseline) — drawing ``group_size`` completions for ``prompts_per_step``
  prompts with the same sampler GRPO uses, no gradients;
* **grpo step** — one full GRPO round of :func:`agentgym_runtime.trainers.grpo.grpo_train`
  (sampling + old/reference log-probs + ``inner_steps`` LoRA updates).

Reported: samples/s of each and the ratio (how much of a GRPO round is spent beyond sampling),
plus the toy task's held-out reward before/after a 20-round run.
Run with ``python benchmarks/bench_grpo.py``.
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _util import machine, median

from agentgym_runtime.trainers.toy_model import WordTokenizer, tiny_llama, toy_grpo_config

ROUNDS = 7


def _model(tokenizer: WordTokenizer, max_positions: int = 32) -> Any:
    return tiny_llama(len(tokenizer.vocab), max_positions=max_positions)


def _toy_config() -> Any:
    return toy_grpo_config(steps=1, eval_samples=1)


def main() -> None:
    import torch

    from agentgym_runtime.trainers.grpo import _Sampler, grpo_train, resolve_device

    device = resolve_device("auto")
    tokenizer = WordTokenizer(["ok", "no", "a", "b", "c", "d", "e", "f", "g", "h"])
    rng = random.Random(0)
    letters = ["a", "b", "c", "d", "e", "f", "g", "h"]
    prompts = [" ".join(rng.choice(letters) for _ in range(3)) for _ in range(12)]
    heldout = [" ".join(rng.choice(letters) for _ in range(3)) for _ in range(6)]

    def reward(index: int, completion: str) -> float:
        return 1.0 if completion.split()[:1] == ["ok"] else 0.0

    config = _toy_config()
    model = _model(tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    sampler_model = _model(tokenizer).to(device).eval()
    sampler = _Sampler(sampler_model, tokenizer, config, device)
    generator = torch.Generator(device=device).manual_seed(0)
    per_round = config.prompts_per_step * config.group_size
    sampling, training = [], []
    grpo_train(_model(tokenizer), tokenizer, prompts, reward, config, device=device)  # warm-up
    for _ in range(ROUNDS):
        start = time.perf_counter()
        sampler.sample(prompts[: config.prompts_per_step], config.group_size, generator)
        sampling.append(per_round / (time.perf_counter() - start))
        _, metrics = grpo_train(_model(tokenizer), tokenizer, prompts, reward, config, device=device)
        training.append(metrics["samples_per_second"])
    full = config.model_copy(update={"steps": 20, "eval_samples": 8})
    _, learned = grpo_train(model, tokenizer, prompts, reward, full, heldout_prompts=heldout, device=device)

    print("## GRPO (LoRA) on a tiny causal LM\n")
    print(f"Machine: {machine()}; device: {device}; model: Llama, {n_params:,} parameters; torch {torch.__version__}.")
    print(
        f"Round: {config.prompts_per_step} prompts x group {config.group_size}, {config.max_new_tokens} new tokens, "
        f"{config.inner_steps} inner steps; median of {ROUNDS} interleaved rounds.\n"
    )
    print("| | samples/s | ratio to sampling only |")
    print("|---|---:|---:|")
    base = median(sampling)
    print(f"| sampling only (baseline) | {base:,.1f} | 1.00 |")
    print(f"| GRPO round (sample + ref + update) | {median(training):,.1f} | {median(training) / base:.2f} |")
    print(
        f"\nToy task (answer starts with 'ok'), 20 rounds: held-out reward "
        f"{learned['heldout_reward_before']:.3f} -> {learned['heldout_reward_after']:.3f} "
        f"(train {learned['train_reward_first_step']:.3f} -> {learned['train_reward_last_step']:.3f}), "
        f"{learned['samples_per_second']:.1f} samples/s over the run.\n"
    )


def _uncached_sample(model: Any, ids: Any, new_tokens: int, generator: Any) -> Any:
    """Baseline: sample by re-running the whole sequence for every new token (no KV cache)."""
    import torch

    sequence = ids
    with torch.no_grad():
        for _ in range(new_tokens):
            logits = model(input_ids=sequence, use_cache=False).logits[:, -1, :]
            token = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)
            sequence = torch.cat([sequence, token], dim=1)
    return sequence


def kv_cache_side_by_side() -> None:
    """The sampler (KV cache, left-padded batch) vs re-running the sequence, on a 90-token prompt."""
    import torch

    from agentgym_runtime.trainers.grpo import GRPOConfig, _Sampler

    words = [f"w{i}" for i in range(40)]
    tokenizer = WordTokenizer(words)
    model = _model(tokenizer, max_positions=160).eval()
    prompt = " ".join(words[i % 40] for i in range(90))
    config = GRPOConfig(max_new_tokens=40, temperature=1.0)
    # An EOS never comes early: both sides generate all 40 tokens.
    sampler = _Sampler(model, _NoEos(tokenizer), config, "cpu")
    ids = torch.tensor([tokenizer.encode(prompt)] * 64)
    cached_s, uncached_s = [], []
    for _ in range(3):
        start = time.perf_counter()
        sampler.sample([prompt], 64, torch.Generator().manual_seed(0))
        cached_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        _uncached_sample(model, ids, 40, torch.Generator().manual_seed(0))
        uncached_s.append(time.perf_counter() - start)
    cached, uncached = median(cached_s), median(uncached_s)
    print("| 64 samples x 40 new tokens, 90-token prompt | seconds (median of 3, alternating) |")
    print("|---|---:|")
    print(f"| re-run the whole sequence per token (baseline) | {uncached:.3f} |")
    print(f"| agentgym sampler (KV cache) | {cached:.3f} (ratio {uncached / cached:.1f}x faster) |")


class _NoEos(WordTokenizer):
    def __init__(self, inner: WordTokenizer) -> None:
        self.__dict__.update(inner.__dict__)
        self.eos_token_id = -1  # never sampled


if __name__ == "__main__":
    main()
    kv_cache_side_by_side()
