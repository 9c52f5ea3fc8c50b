"""A whitespace tokenizer and a tiny Llama built from a config: GRPO tests and benchmarks run offline.

Example:
    >>> WordTokenizer(["a", "b"]).encode("b a")
    [3, 2]
"""

from __future__ import annotations

from typing import Any


class WordTokenizer:
    """Whitespace tokenizer over a fixed vocabulary; ids 0 and 1 are padding and EOS."""

    def __init__(self, words: list[str]) -> None:
        self.vocab = ["<pad>", "<eos>", *words]
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.pad_token_id, self.eos_token_id = 0, 1

    def encode(self, text: str) -> list[int]:
        """Token ids of whitespace-separated words."""
        return [self.index[w] for w in text.split()]

    def decode(self, ids: list[int]) -> str:
        """Words of ``ids`` joined by spaces."""
        return " ".join(self.vocab[i] for i in ids)


def tiny_llama(vocab_size: int, seed: int = 0, max_positions: int = 32) -> Any:
    """A 2-layer, width-32 Llama with random weights (seeded); also used by ``benchmarks/bench_grpo.py``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=max_positions,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
    )
    return LlamaForCausalLM(config)


def toy_grpo_config(**overrides: Any) -> Any:
    """GRPO settings for the toy Llama: LoRA r4 on attention, MLP output and head; 4 prompts x 8 samples."""
    from agentgym_runtime.trainers.grpo import GRPOConfig

    values: dict[str, Any] = {
        "steps": 20,
        "group_size": 8,
        "prompts_per_step": 4,
        "max_new_tokens": 3,
        "learning_rate": 5e-2,
        "lora_r": 4,
        "lora_alpha": 8,
        "target_modules": ["q_proj", "v_proj", "o_proj", "down_proj", "lm_head"],
    }
    return GRPOConfig(**{**values, **overrides})
