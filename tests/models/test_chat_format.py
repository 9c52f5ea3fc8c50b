"""Chat templates and tool-call formats: rendering recorded chats and parsing completions."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from agentgym_runtime.errors import ConfigurationError
from agentgym_runtime.models.chat_format import (
    TOOL_CALL_FORMATS,
    ChatTemplateError,
    PadTokenError,
    ToolCall,
    control_strings,
    detect_format,
    end_of_turn_markers,
    parse_completion,
    render_chat,
    render_tool_calls,
    require_pad_token,
    split_prompt_completion,
    strip_end_of_turn,
    supports_tools,
)
from tests.models.tiny import tiny_tokenizer

TOOLS = [
    {
        "name": "get_order",
        "description": "Look up an order.",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "integer"}}, "required": ["order_id"]},
    }
]
FAMILIES = {"chatml": "hermes", "qwen": "hermes", "llama3": "llama3", "mistral": "mistral"}

names = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True)
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
arguments = st.dictionaries(st.text(max_size=10), json_values, max_size=4)
calls = st.lists(st.builds(ToolCall, names, arguments), min_size=1, max_size=3)
prose = st.text(
    st.characters(blacklist_characters="<[{", blacklist_categories=("Cs",)), min_size=1, max_size=40
).filter(lambda s: s.strip() != "")


def _same(parsed: tuple[ToolCall, ...], expected: list[ToolCall]) -> bool:
    # JSON has one number type: compare through it (1.0 == 1, -0.0 == 0.0) rather than by Python type.
    def dump(c: ToolCall) -> str:
        return json.dumps([c.name, c.arguments], sort_keys=True)

    return [dump(c) for c in parsed] == [dump(c) for c in expected]


@pytest.mark.parametrize("fmt", TOOL_CALL_FORMATS)
@settings(max_examples=60, deadline=None)
@given(expected=calls)
def test_rendered_tool_calls_parse_back_in_every_format(fmt: Any, expected: list[ToolCall]) -> None:
    parsed = parse_completion(render_tool_calls(expected, fmt), fmt)
    assert _same(parsed.tool_calls, expected)
    assert parsed.invalid_tool_calls == ()
    assert parsed.content == ""


MARKUP = ("<tool_call>", "</tool_call>", "[TOOL_CALLS]", "[ARGS]", "<|python_tag|>", '\\"</tool_call>')


@pytest.mark.parametrize("fmt", TOOL_CALL_FORMATS)
@settings(max_examples=40, deadline=None)
@given(
    expected=st.lists(
        st.builds(
            ToolCall, names, st.dictionaries(st.sampled_from(MARKUP) | st.text(max_size=4), st.sampled_from(MARKUP))
        ),
        min_size=1,
        max_size=3,
    ),
    text=prose,
)
def test_arguments_that_spell_the_formats_markup_parse_back(fmt: Any, expected: list[ToolCall], text: str) -> None:
    # An argument holding "</tool_call>" once ended a hermes call in the middle of its JSON string.
    parsed = parse_completion(
        # Prose may come before the calls in the formats that mark them; the bare formats are the call alone.
        (f"{text}\n" if fmt in ("hermes", "mistral") else "") + render_tool_calls(expected, fmt),
        fmt,
    )
    assert _same(parsed.tool_calls, expected)
    assert parsed.invalid_tool_calls == ()


def test_a_broken_call_still_ends_at_its_closing_tag() -> None:
    # An unterminated string hides every later tag from the string-aware scan: the first closing
    # tag ends the broken call, and the next call still parses.
    text = '<tool_call>{"name": "a", "arguments": {"x": "oops</tool_call> <tool_call>{"name": "b", "arguments": {}}</tool_call>'
    parsed = parse_completion(text, "hermes")
    assert [c.name for c in parsed.tool_calls] == ["b"]
    assert [c.name for c in parsed.invalid_tool_calls] == ["a"]
    mistral = parse_completion(
        '[TOOL_CALLS][{"name": "a", "arguments": {"x": "oops}}][TOOL_CALLS][{"name": "b", "arguments": {}}]', "mistral"
    )
    assert [c.name for c in mistral.tool_calls] == ["b"] and len(mistral.invalid_tool_calls) == 1


@pytest.mark.parametrize("fmt", ["hermes", "mistral"])
@settings(max_examples=40, deadline=None)
@given(text=prose, expected=calls)
def test_text_before_the_calls_is_kept_as_content(fmt: Any, text: str, expected: list[ToolCall]) -> None:
    parsed = parse_completion(f"{text}\n{render_tool_calls(expected, fmt)}", fmt)
    assert _same(parsed.tool_calls, expected)
    assert parsed.content == text.strip()


@pytest.mark.parametrize("family", sorted(FAMILIES))
@settings(max_examples=25, deadline=None)
@given(expected=calls, question=prose)
def test_template_render_then_parse_round_trips(family: str, expected: list[ToolCall], question: str) -> None:
    """A recorded turn rendered by the family's template, tokenized and decoded, parses back to its calls.

    Unless its text spells one of the tokenizer's control tokens: training leaves such a turn out
    (``test_a_turn_that_spells_a_control_token_cannot_round_trip``).
    """
    tokenizer = _tokenizer(family)
    recorded = json.dumps([question, [[c.name, c.arguments] for c in expected]])
    assume(not any(control in recorded for control in control_strings(tokenizer)))
    messages = [
        {"role": "user", "content": question},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": f"c{i}", "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
                for i, c in enumerate(expected)
            ],
        },
    ]
    prompt, completion = split_prompt_completion(tokenizer, messages, TOOLS)
    assert prompt.endswith(("assistant\n", "assistant<|end_header_id|>\n\n", "[/INST]"))
    decoded = tokenizer.decode(tokenizer.encode(completion, add_special_tokens=False), skip_special_tokens=False)
    parsed = parse_completion(strip_end_of_turn(decoded, end_of_turn_markers(tokenizer)), detect_format(tokenizer))
    assert _same(parsed.tool_calls, expected)
    assert parsed.content == ""


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_turn_that_spells_a_control_token_cannot_round_trip(family: str) -> None:
    # Hypothesis found it: an argument named "<|im_end|>" ends a Qwen turn in the middle of the call.
    # Tokenized, the text is the control token; the end-of-turn cut stops there. The training data
    # loader therefore leaves such samples out (tests/trainers/test_sft_chat_data.py).
    tokenizer = _tokenizer(family)
    marker = end_of_turn_markers(tokenizer)[-1]
    assert marker in control_strings(tokenizer)
    expected = [ToolCall("a", {marker: None})]
    messages = [
        {"role": "user", "content": "0"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c0", "type": "function", "function": {"name": "a", "arguments": json.dumps({marker: None})}}
            ],
        },
    ]
    _, completion = split_prompt_completion(tokenizer, messages, TOOLS)
    decoded = tokenizer.decode(tokenizer.encode(completion, add_special_tokens=False), skip_special_tokens=False)
    parsed = parse_completion(strip_end_of_turn(decoded, end_of_turn_markers(tokenizer)), detect_format(tokenizer))
    assert not _same(parsed.tool_calls, expected)
    assert parsed.tool_calls == () and len(parsed.invalid_tool_calls) == 1


_TOKENIZERS: dict[str, Any] = {}


def _tokenizer(family: str) -> Any:
    if family not in _TOKENIZERS:
        _TOKENIZERS[family] = tiny_tokenizer(family)
    return _TOKENIZERS[family]


@pytest.mark.parametrize(("family", "fmt", "tools"), [(f, FAMILIES[f], f != "chatml") for f in sorted(FAMILIES)])
def test_format_and_tool_support_are_read_from_the_template(family: str, fmt: str, tools: bool) -> None:
    tokenizer = _tokenizer(family)
    assert detect_format(tokenizer) == fmt
    assert supports_tools(tokenizer) is tools


def test_template_without_tools_gets_a_tool_block_and_text_turns() -> None:
    tokenizer = _tokenizer("chatml")
    messages = [
        {"role": "system", "content": "You are a support agent."},
        {"role": "user", "content": "Where is order 7?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "a", "function": {"name": "get_order", "arguments": '{"order_id": 7}'}}],
        },
        {"role": "tool", "tool_call_id": "a", "content": '{"status": "shipped"}'},
    ]
    text = render_chat(tokenizer, messages, TOOLS)
    tool_line = json.dumps({"type": "function", "function": TOOLS[0]})
    assert text == (
        "<|im_start|>system\nYou are a support agent.\n\n# Tools\n\n"
        "You may call one or more functions to assist with the user query.\n\n"
        f"You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{tool_line}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments within "
        '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n'
        "</tool_call><|im_end|>\n"
        "<|im_start|>user\nWhere is order 7?<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_order", "arguments": {"order_id": 7}}\n</tool_call><|im_end|>\n'
        '<|im_start|>user\n<tool_response>\n{"status": "shipped"}\n</tool_response><|im_end|>\n'
        "<|im_start|>assistant\n"
    )


def test_template_with_tools_gets_them_from_apply_chat_template() -> None:
    text = render_chat(_tokenizer("qwen"), [{"role": "user", "content": "hi"}], TOOLS)
    assert '{"type": "function", "function": {"name": "get_order"' in text
    assert "You may call one or more functions" not in text  # no second, hand-written tool block
    assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


def test_completions_that_are_not_tool_calls_come_back_as_text() -> None:
    for fmt in TOOL_CALL_FORMATS:
        parsed = parse_completion("  Your order 7 has shipped.  ", fmt)
        assert (parsed.content, parsed.tool_calls, parsed.invalid_tool_calls) == ("Your order 7 has shipped.", (), ())
        assert not parsed.is_tool_call
    assert parse_completion('{"answer": "shipped"}', "json").content == '{"answer": "shipped"}'


def test_broken_calls_are_invalid_with_the_reason_and_name() -> None:
    hermes = parse_completion('<tool_call>\n{"name": "get_order", "arguments": {"order_id": 7}\n</tool_call>', "hermes")
    assert hermes.tool_calls == ()
    assert hermes.invalid_tool_calls[0].name == "get_order"
    assert hermes.invalid_tool_calls[0].error.startswith("the tool call is not valid JSON: ")
    llama = parse_completion('{"name": "get_order", "parameters": "order 7"}', "llama3")
    assert llama.invalid_tool_calls[0].error.startswith("arguments of 'get_order' are not a JSON object")
    mistral = parse_completion("[TOOL_CALLS]get_order[ARGS]{bad", "mistral")
    assert (mistral.invalid_tool_calls[0].name, mistral.tool_calls) == ("get_order", ())
    unnamed = parse_completion('<tool_call>{"arguments": {}}</tool_call>', "hermes")
    assert unnamed.invalid_tool_calls[0].error == "the tool call has no 'name'"


def test_other_syntaxes_of_each_family_parse() -> None:
    assert parse_completion('[TOOL_CALLS]get_order[ARGS]{"order_id": 7}', "mistral").tool_calls == (
        ToolCall("get_order", {"order_id": 7}),
    )
    assert parse_completion(
        '<|python_tag|>{"name": "a", "parameters": {}}; {"name": "b", "parameters": {}}', "llama3"
    ).tool_calls == (
        ToolCall("a", {}),
        ToolCall("b", {}),
    )
    assert parse_completion('```json\n{"name": "a", "arguments": "{\\"x\\": 1}"}\n```', "json").tool_calls == (
        ToolCall("a", {"x": 1}),
    )
    # A model that stops before the closing tag still asked for the tool.
    assert parse_completion('<tool_call>\n{"name": "a", "arguments": {}}', "hermes").tool_calls == (ToolCall("a", {}),)


def test_a_model_without_a_chat_template_is_refused_with_the_fix() -> None:
    tokenizer = tiny_tokenizer("chatml", template="")
    with pytest.raises(ChatTemplateError, match=r"model 'tiny-chatml' has no chat template .*tokenizer.chat_template"):
        render_chat(tokenizer, [{"role": "user", "content": "hi"}])


def test_a_tokenizer_without_a_pad_token_is_refused_with_the_fix() -> None:
    with pytest.raises(
        PadTokenError,
        match=r"tokenizer of 'tiny-llama3' has no pad token .*tokenizer.pad_token = tokenizer.eos_token.*'<\|eot_id\|>'",
    ):
        require_pad_token(tiny_tokenizer("llama3", pad=False))
    require_pad_token(_tokenizer("llama3"))  # has one: no error


def test_an_unknown_format_and_a_refusing_template_are_clear_errors() -> None:
    with pytest.raises(
        ConfigurationError, match="unknown tool-call format 'xml'; known formats: hermes, llama3, mistral, json"
    ):
        parse_completion("x", "xml")  # type: ignore[arg-type]
    strict = tiny_tokenizer("chatml", template="{{ raise_exception('only user turns') }}")
    with pytest.raises(
        ChatTemplateError, match="the chat template of 'tiny-chatml' refused the conversation: only user turns"
    ):
        render_chat(strict, [{"role": "user", "content": "hi"}])
    with pytest.raises(ChatTemplateError, match="the last message must be the assistant's turn"):
        split_prompt_completion(_tokenizer("qwen"), [{"role": "user", "content": "hi"}])


def test_format_option_overrides_detection() -> None:
    tokenizer = _tokenizer("chatml")
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "tool_calls": [{"function": {"name": "get_order", "arguments": {"order_id": 1}}}]},
    ]
    _, completion = split_prompt_completion(tokenizer, messages, TOOLS, fmt="json")
    assert completion == '{"name": "get_order", "arguments": {"order_id": 1}}<|im_end|>\n'
