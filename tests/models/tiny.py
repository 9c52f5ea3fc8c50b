"""Tiny tokenizers (and models) built offline, with the chat templates of the main model families.

The templates are trimmed copies of the real ones: ChatML without tools (SmolLM2's, verbatim),
Qwen 2.5's Hermes ``<tool_call>`` template, Llama 3.1's JSON tool calling and Mistral's
``[AVAILABLE_TOOLS]``/``[TOOL_CALLS]`` template. The tokenizer is a byte-level BPE trained in
milliseconds on a few lines, so any text round-trips through it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

# SmolLM2-135M-Instruct's template, verbatim: plain ChatML, no tool support.
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

QWEN = """{%- if tools %}<|im_start|>system
{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}

{% endif %}# Tools

<tools>
{% for tool in tools %}{{ tool | tojson }}
{% endfor %}</tools>

For each function call, return a json object within <tool_call></tool_call> XML tags.<|im_end|>
{% elif messages[0]['role'] == 'system' %}<|im_start|>system
{{ messages[0]['content'] }}<|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == 'system' %}
{%- elif message.role == 'assistant' %}<|im_start|>assistant
{{ message.content }}{% for tc in message.tool_calls or [] %}{% if message.content or not loop.first %}
{% endif %}<tool_call>
{"name": "{{ tc.function.name }}", "arguments": {{ tc.function.arguments | tojson }}}
</tool_call>{% endfor %}<|im_end|>
{% elif message.role == 'tool' %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% else %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""

LLAMA3 = """{{- bos_token }}{%- if tools %}<|start_header_id|>system<|end_header_id|>

Respond with a JSON object {"name": function name, "parameters": dictionary of argument name and its value}.
{% for t in tools %}{{ t | tojson }}
{% endfor %}<|eot_id|>{%- endif %}
{%- for message in messages %}
{%- if message.role == 'assistant' and message.tool_calls %}<|start_header_id|>assistant<|end_header_id|>

{% for tc in message.tool_calls %}{% if not loop.first %}
{% endif %}{"name": "{{ tc.function.name }}", "parameters": {{ tc.function.arguments | tojson }}}{% endfor %}<|eot_id|>
{%- elif message.role == 'tool' %}<|start_header_id|>ipython<|end_header_id|>

{{ message.content }}<|eot_id|>
{%- else %}<|start_header_id|>{{ message.role }}<|end_header_id|>

{{ message.content }}<|eot_id|>
{%- endif %}{%- endfor %}
{%- if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>

{% endif %}"""

MISTRAL = """{{- bos_token }}{%- set ns = namespace(last_user=-1) %}
{%- for m in messages %}{% if m.role == 'user' %}{% set ns.last_user = loop.index0 %}{% endif %}{% endfor %}
{%- for message in messages %}
{%- if message.role == 'user' %}{% if loop.index0 == ns.last_user and tools %}[AVAILABLE_TOOLS]{{ tools | tojson }}[/AVAILABLE_TOOLS]{% endif %}[INST]{{ message.content }}[/INST]
{%- elif message.role == 'assistant' and message.tool_calls %}[TOOL_CALLS][{% for tc in message.tool_calls %}{"name": "{{ tc.function.name }}", "arguments": {{ tc.function.arguments | tojson }}}{% if not loop.last %}, {% endif %}{% endfor %}]{{ eos_token }}
{%- elif message.role == 'assistant' %}{{ message.content }}{{ eos_token }}
{%- elif message.role == 'tool' %}[TOOL_RESULTS]{{ message.content }}[/TOOL_RESULTS]
{%- endif %}{%- endfor %}"""

TEMPLATES = {"chatml": CHATML, "qwen": QWEN, "llama3": LLAMA3, "mistral": MISTRAL}
SPECIALS = {
    "chatml": ("<|im_start|>", "<|im_end|>", "<|im_end|>"),
    "qwen": ("<|im_start|>", "<|im_end|>", "<|im_end|>"),
    "llama3": ("<|begin_of_text|>", "<|eot_id|>", "<|eot_id|>"),
    "mistral": ("<s>", "</s>", "</s>"),
}
CORPUS = [
    '<tool_call>\n{"name": "get_order", "arguments": {"order_id": 1234}}\n</tool_call>',
    '{"name": "refund_order", "parameters": {"order_id": 7, "reason": "damaged"}}',
    "Hi, this is Ana. What is the status of order 1234? Your order has shipped.",
    "[TOOL_CALLS][INST][/INST] user assistant system tool 0123456789 abcdefghijklmnopqrstuvwxyz",
]


@cache
def _backend(family: str) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bos, eos, _ = SPECIALS[family]
    extra = ["[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]"]
    specials = list(dict.fromkeys([bos, eos, "<pad>", *(extra if family == "mistral" else [])]))
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    return tokenizer.to_str()


def tiny_tokenizer(family: str, *, pad: bool = True, template: str | None = None) -> Any:
    """A fresh ``PreTrainedTokenizerFast`` of ``family`` (``chatml``, ``qwen``, ``llama3``, ``mistral``)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    bos, eos, _ = SPECIALS[family]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_backend(family)),
        bos_token=bos,
        eos_token=eos,
        pad_token="<pad>" if pad else None,
        name_or_path=f"tiny-{family}",
    )
    tokenizer.chat_template = TEMPLATES[family] if template is None else (template or None)
    return tokenizer
