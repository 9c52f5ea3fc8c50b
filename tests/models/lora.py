"""LoRA adapters for the tiny test model: random ones (they change every output) and ones trained on given turns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

#: One turn to learn: (messages, tools, the assistant's reply), all OpenAI style.
Turn = tuple[Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]] | None, Mapping[str, Any]]


def random_adapter(model_dir: Path, out: Path, seed: int, target: str | None = None) -> Path:
    """An adapter with random non-zero ``lora_B`` on ``q_proj``/``v_proj`` (of ``target``'s model if given)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(target or model_dir))
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # non-zero: the adapter changes the outputs
    peft_model.save_pretrained(str(out))
    return out


def trained_adapter(model_dir: Path, tokenizer: Any, out: Path, turns: Sequence[Turn], epochs: int = 60) -> Path:
    """An adapter that learnt ``turns`` by heart (LoRA on attention, a trained copy of the head).

    Each turn is rendered with the model's chat template exactly as the engine renders it, and only the
    completion is learnt.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from agentgym_runtime.models.chat_format import split_prompt_completion

    pairs = [split_prompt_completion(tokenizer, [*messages, reply], tools) for messages, tools, reply in turns]
    encoded = [
        (tokenizer.encode(p, add_special_tokens=False), tokenizer.encode(c, add_special_tokens=False)) for p, c in pairs
    ]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], modules_to_save=["lm_head"])
    peft_model = get_peft_model(model, lora)
    optimiser = torch.optim.Adam([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(epochs):
        for prompt, completion in encoded:
            labels = torch.tensor([[-100] * len(prompt) + completion])
            peft_model(input_ids=torch.tensor([prompt + completion]), labels=labels).loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    peft_model.save_pretrained(str(out))
    return out
