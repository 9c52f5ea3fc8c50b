"""A tiny chat model built here: a byte-level BPE tokenizer with a ChatML template, and a small Llama.

Recorded traces of a scripted support agent (``record_support``) feed the chat-data and ``sft`` tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import agentgym_runtime as agentgym
from agentgym_runtime.recording.capture import start_llm_call
from agentgym_runtime.recording.context import RequestedToolCall

#: Plain ChatML, no tool support (like SmolLM2's): tools go into the system message as a tool block.
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
#: A compact Qwen-style template with tool support (tool names only, to keep the fast tests' prompts short).
QWEN_LIKE = (
    "{% if tools %}<|im_start|>system\n{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}\n{% endif %}"
    "tools:{% for t in tools %} {{ t['function']['name'] }}{% endfor %}<|im_end|>\n{% endif %}"
    "{% for m in messages %}{% if m['role'] == 'system' and tools %}"
    "{% elif m['role'] == 'assistant' and m['tool_calls'] %}<|im_start|>assistant\n{% for c in m['tool_calls'] %}"
    "<tool_call>\n{\"name\": \"{{ c['function']['name'] }}\", \"arguments\": {{ c['function']['arguments'] | tojson }}}"
    "\n</tool_call>{% endfor %}<|im_end|>\n"
    "{% elif m['role'] == 'tool' %}<|im_start|>user\n<tool_response>\n{{ m['content'] }}\n</tool_response><|im_end|>\n"
    "{% else %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SYSTEM = "You are a support agent."


@agentgym.tool
def get_order(order_id: int) -> dict[str, Any]:
    """Look up an order."""
    if order_id == 13:
        raise RuntimeError("order database unavailable")
    return {"id": order_id, "status": "shipped"}


@agentgym.tool
def refund_order(order_id: int) -> dict[str, Any]:
    """Refund an order."""
    return {"id": order_id, "refunded": True}


TOOLS = {"get_order": get_order, "refund_order": refund_order}
PHRASES = {"get_order": "where is my order {n}?", "refund_order": "please refund order {n}"}


def _call(name: str, n: int, call_id: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps({"order_id": n})}}


def support_agent(agent: str, model: str = "teacher-large") -> Any:
    """A scripted agent: asks for ``tool`` (``typo`` first asks for a tool that does not exist), then answers."""

    def support(question: str, tool: str, n: int, typo: bool = False) -> str:
        definitions = [get_order.definition(), refund_order.definition()]
        messages: list[dict[str, Any]] = [{"role": "user", "content": question}]
        if typo:
            call = start_llm_call(
                model=model, tools=definitions, input_messages=list(messages), system_instructions=SYSTEM
            )
            bad = _call("get_ordr", n, f"x{n}")
            call.finish(
                output_messages=[{"role": "assistant", "content": "", "tool_calls": [bad]}],
                requested=[RequestedToolCall.from_raw("get_ordr", f"x{n}", json.dumps({"order_id": n}))],
            )
            messages += [
                {"role": "assistant", "content": "", "tool_calls": [bad]},
                {"role": "tool", "tool_call_id": f"x{n}", "content": "unknown tool 'get_ordr'"},
            ]
        call = start_llm_call(model=model, tools=definitions, input_messages=list(messages), system_instructions=SYSTEM)
        good = _call(tool, n, f"c{n}")
        call.finish(
            output_messages=[{"role": "assistant", "content": "", "tool_calls": [good]}],
            requested=[RequestedToolCall.from_raw(tool, f"c{n}", json.dumps({"order_id": n}))],
        )
        try:
            result = json.dumps(TOOLS[tool](order_id=n))
        except RuntimeError as exc:
            result = f"error: {exc}"
        messages += [
            {"role": "assistant", "content": "", "tool_calls": [good]},
            {"role": "tool", "tool_call_id": f"c{n}", "content": result},
        ]
        call = start_llm_call(model=model, tools=definitions, input_messages=list(messages), system_instructions=SYSTEM)
        answer = f"done: {result}"
        call.finish(output_messages=[{"role": "assistant", "content": answer}])
        return answer

    return agentgym.train_online(name=agent)(support)


def record_support(agent: str, numbers: list[int], *, model: str = "teacher-large", typo_every: int = 0) -> None:
    """Run the scripted agent once per number, alternating the two tools (one session per episode).

    Sessions are named after the agent and the number, so the held-out split (a seeded hash of the
    session ids) is the same in every run.
    """
    run = support_agent(agent, model)
    for k, n in enumerate(numbers):
        tool = "get_order" if k % 2 == 0 else "refund_order"
        with agentgym.episode(session_id=f"{agent}-{n}"):
            run(PHRASES[tool].format(n=n), tool, n, typo=bool(typo_every) and k % typo_every == 0)


def build_tokenizer(directory: Path, *, pad: bool = True, template: str | None = CHATML) -> Any:
    """A byte-level BPE tokenizer trained here on rendered support conversations, saved to ``directory``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from agentgym_runtime.models.chat_format import ToolCall, render_tool_calls, tool_block

    block = tool_block([get_order.definition(), refund_order.definition()], "hermes")
    corpus = [f"<|im_start|>system\n{SYSTEM}\n\n{block}<|im_end|>\n"]
    for n in range(100):
        for tool, phrase in PHRASES.items():
            corpus.append(f"<|im_start|>user\n{phrase.format(n=n)}<|im_end|>\n<|im_start|>assistant\n")
            corpus.append(render_tool_calls([ToolCall(tool, {"order_id": n})], "hermes"))
    special = ["<pad>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=700, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<pad>" if pad else None
    )
    if template is not None:
        tokenizer.chat_template = template
    tokenizer.save_pretrained(str(directory))
    return tokenizer


def build_model(directory: Path, *, seed: int = 0, pad: bool = True, template: str | None = CHATML) -> Path:
    """Tokenizer + a 2-layer, width-64 Llama with random weights, saved as a Hugging Face model directory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(directory, pad=pad, template=template)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id if pad else None,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(str(directory))
    return directory
