"""The in-process engine and LangChain chat model on a tiny random Llama built here, with LoRA adapters.

Adapters: two with random non-zero ``lora_B`` (they change every output) and one trained with the ``sft``
trainer's loop to call ``get_order`` and then answer, so a LangChain agent runs a whole episode on it.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("peft")
pytest.importorskip("langchain")

import torch
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage, convert_to_openai_messages
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool

import agentgym_runtime as agentgym
from agentgym_runtime.models.chat_format import ChatTemplateError, PadTokenError
from agentgym_runtime.models.engine import AdapterError, ChatEngine
from agentgym_runtime.models.formats import ContentFilter
from agentgym_runtime.models.langchain import TransformersChatModel
from agentgym_runtime.recording.policy import LLMConfig, Policy
from tests.models.lora import random_adapter, trained_adapter
from tests.trainers.chat_toy import build_model, build_tokenizer

QUESTION = "where is my order 7?"
ANSWER = "Order 7 has shipped."
NEW_TOKENS = 40


@tool
def get_order(order_id: int) -> str:
    """Look up an order."""
    return "shipped"


TOOLS = [convert_to_openai_tool(get_order)]


def _agent_turns() -> list[tuple[list[dict[str, Any]], dict[str, Any]]]:
    """The two turns of the support agent, as the chat model sees them: (messages, the assistant's reply)."""
    call = {"name": "get_order", "args": {"order_id": 7}, "id": "c1", "type": "tool_call"}
    first = [HumanMessage(QUESTION)]
    second = [*first, AIMessage("", tool_calls=[call]), ToolMessage("shipped", tool_call_id="c1")]
    return [
        (convert_to_openai_messages(first), convert_to_openai_messages([AIMessage("", tool_calls=[call])])[0]),
        (convert_to_openai_messages(second), {"role": "assistant", "content": ANSWER}),
    ]


def _trained_adapter(model_dir: Path, engine: ChatEngine, out: Path) -> Path:
    """An adapter that learnt the agent's two turns by heart (measured: the loss falls from 6.4 to 0.04)."""
    return trained_adapter(model_dir, engine.tokenizer, out, [(m, TOOLS, reply) for m, reply in _agent_turns()])


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("engine")
    model_dir = build_model(root / "model")
    engine = ChatEngine(str(model_dir), max_new_tokens=NEW_TOKENS)
    return {
        "model": model_dir,
        "engine": engine,
        "a1": random_adapter(model_dir, root / "a1", seed=1),
        "a2": random_adapter(model_dir, root / "a2", seed=2),
        "trained": _trained_adapter(model_dir, engine, root / "trained"),
        "root": root,
    }


def _merged_text(model_dir: Path, adapter: Path, engine: ChatEngine, messages: list[dict[str, Any]]) -> str:
    """What peft's merged model writes greedily for the same prompt (cut at the end of the turn)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from agentgym_runtime.models.chat_format import end_of_turn_markers, strip_end_of_turn

    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(model_dir)), str(adapter))
    merged = merged.merge_and_unload().eval()
    tokenizer = engine.tokenizer
    inputs = tokenizer(engine.prompt(messages, TOOLS), return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = merged.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    text = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=False)
    return strip_end_of_turn(text, end_of_turn_markers(tokenizer))


def test_an_adapter_changes_the_output_and_serves_what_the_merged_model_writes(toy: dict[str, Any]) -> None:
    engine: ChatEngine = toy["engine"]
    messages = [{"role": "user", "content": QUESTION}]
    base = engine.generate(messages, TOOLS)
    tuned = engine.generate(messages, TOOLS, adapter=toy["a1"])
    assert base.adapter is None and tuned.adapter is not None and len(tuned.adapter) == 16
    assert tuned.text != base.text
    assert tuned.text == _merged_text(toy["model"], toy["a1"], engine, messages)
    assert engine.generate(messages, TOOLS).text == base.text  # the base model is untouched by the adapter
    # Loaded once: a second call with the adapter does not load it again.
    loaded = set(engine._loaded)
    assert engine.generate(messages, TOOLS, adapter=toy["a1"]).text == tuned.text
    assert engine._loaded == loaded


def test_the_trained_adapter_calls_the_tool_in_the_models_format(toy: dict[str, Any]) -> None:
    engine: ChatEngine = toy["engine"]
    (first, _), (second, _) = _agent_turns()
    call = engine.generate(first, TOOLS, adapter=toy["trained"])
    assert [(c.name, c.arguments) for c in call.parsed.tool_calls] == [("get_order", {"order_id": 7})]
    assert call.parsed.content == "" and call.text.startswith("<tool_call>")
    assert call.text == _merged_text(toy["model"], toy["trained"], engine, first)
    answer = engine.generate(second, TOOLS, adapter=toy["trained"])
    assert answer.parsed.content == ANSWER and not answer.parsed.is_tool_call
    assert not engine.generate(first, TOOLS).parsed.tool_calls  # the random base model calls nothing


def test_two_policies_adapters_interleaved_on_two_threads_each_get_their_own_output(
    toy: dict[str, Any], agentgym_runtime: Any
) -> None:
    engine: ChatEngine = toy["engine"]
    policies = {
        name: Policy(agent=name, version=1, llm=LLMConfig(model=str(toy["model"]), adapter=str(toy[adapter])))
        for name, adapter in (("alpha", "a1"), ("beta", "a2"))
    }
    agentgym_runtime.policy_resolver = lambda agent, session_id: policies.get(agent)
    chat = TransformersChatModel.from_engine(engine, max_new_tokens=NEW_TOKENS).bind_tools([get_order])
    request = [HumanMessage(QUESTION)]

    def text(message: Any) -> str:
        return str(message.content) + json.dumps(message.tool_calls) + json.dumps(message.invalid_tool_calls)

    expected = {
        "alpha": engine.generate(convert_to_openai_messages(request), TOOLS, adapter=toy["a1"]),
        "beta": engine.generate(convert_to_openai_messages(request), TOOLS, adapter=toy["a2"]),
    }
    assert expected["alpha"].text != expected["beta"].text
    seen: dict[str, list[str | None]] = {"alpha": [], "beta": []}
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(agent: str) -> None:
        try:
            barrier.wait()
            for _ in range(3):
                with agentgym.episode(agent=agent):
                    message = chat.invoke(request)
                seen[agent].append(message.response_metadata["adapter"])
                assert message.content == expected[agent].parsed.content, text(message)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(name,)) for name in policies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert seen == {name: [expected[name].adapter] * 3 for name in policies}
    outside = chat.invoke(request)  # no episode: the base model
    assert outside.response_metadata["adapter"] is None


def test_a_langchain_agent_decorated_with_train_online_serves_the_pinned_adapter_and_records_its_tool_calls(
    toy: dict[str, Any], agentgym_runtime: Any, recorded: Any
) -> None:
    from langchain.agents import create_agent

    policy = Policy(agent="support", version=1, llm=LLMConfig(model=str(toy["model"]), adapter=str(toy["trained"])))
    agentgym_runtime.policy_resolver = lambda agent, session_id: policy if agent == "support" else None
    llm = TransformersChatModel.from_engine(toy["engine"], max_new_tokens=NEW_TOKENS)
    agent = agentgym.train_online(name="support")(create_agent(llm, tools=[get_order]))

    result = agent.invoke({"messages": [HumanMessage(QUESTION)]})

    messages = result["messages"]
    assert [type(m).__name__ for m in messages] == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage"]
    assert messages[1].tool_calls[0]["name"] == "get_order" and messages[1].tool_calls[0]["args"] == {"order_id": 7}
    assert messages[2].content == "shipped" and messages[3].content == ANSWER
    assert agentgym_runtime.flush()
    (episode,) = recorded.episodes("support")
    calls = recorded.tool_calls(episode["episode_id"])
    assert [(c["tool_name"], c["outcome"], c["policy_version"]) for c in calls] == [("get_order", "ok", 1)]


def test_streaming_yields_the_text_of_the_non_streaming_call(toy: dict[str, Any]) -> None:
    engine: ChatEngine = toy["engine"]
    llm = TransformersChatModel.from_engine(engine, max_new_tokens=NEW_TOKENS, adapter=str(toy["trained"]))
    bound = llm.bind_tools([get_order])
    (first, _), (second, _) = _agent_turns()
    for messages in (first, second):
        whole = bound.invoke(messages)
        chunks = list(bound.stream(messages))
        joined = chunks[0]
        for chunk in chunks[1:]:
            joined += chunk
        assert joined.content == whole.content
        assert [(c["name"], c["args"]) for c in joined.tool_calls] == [(c["name"], c["args"]) for c in whole.tool_calls]
    assert len(chunks) > 2  # the answer came in pieces, not all at the end
    # The engine's own stream: pieces join to the parsed content, the result equals generate()'s.
    stream = engine.stream(second, TOOLS, adapter=toy["a2"])
    pieces = list(stream)
    plain = engine.generate(second, TOOLS, adapter=toy["a2"])
    assert stream.result == plain and "".join(pieces) == plain.parsed.content


def test_content_filter_holds_back_tool_calls_and_markers() -> None:
    hermes = ContentFilter("hermes", ("<|im_end|>",))
    assert [hermes.feed(p) for p in ["Let me ", "check.<tool", '_call>{"name"', "}</tool_call>"]] == [
        "Let me",
        " check.",
        "",
        "",
    ]
    assert hermes.finish("Let me check.") == ""
    bare = ContentFilter("llama3", ("<|eot_id|>",))
    assert [bare.feed(p) for p in [" ", '{"name": "a"', ', "parameters": {}}']] == ["", "", ""]
    assert bare.finish("") == ""
    prose = ContentFilter("json", ("<|eot_id|>",))
    assert [prose.feed(p) for p in ["Done", " now<|eot", "_id|>"]] == ["Done", " now", ""]
    assert prose.finish("Done now") == ""


def test_bad_input_gives_clear_errors(toy: dict[str, Any], tmp_path: Path) -> None:
    messages = [{"role": "user", "content": QUESTION}]
    no_template = build_model(tmp_path / "no-template", template=None)
    with pytest.raises(ChatTemplateError, match="has no chat template"):
        ChatEngine(str(no_template)).generate(messages)

    no_pad = tmp_path / "no-pad"
    build_tokenizer(no_pad, pad=False)
    for name in ("config.json", "model.safetensors"):
        (no_pad / name).write_bytes((toy["model"] / name).read_bytes())
    with pytest.raises(PadTokenError, match="has no pad token"):
        ChatEngine(str(no_pad)).generate(messages)
    assert ChatEngine(str(no_pad), pad_token="eos", max_new_tokens=2).generate(messages).completion_tokens <= 2

    engine: ChatEngine = toy["engine"]
    with pytest.raises(AdapterError, match="holds no LoRA adapter"):
        engine.generate(messages, adapter=tmp_path)
    # An adapter whose config names another base model is refused before anything is loaded.
    from transformers import LlamaConfig, LlamaForCausalLM

    other = tmp_path / "other-model"
    LlamaForCausalLM(
        LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    ).save_pretrained(str(other))
    foreign = random_adapter(toy["model"], tmp_path / "foreign", seed=3, target=str(other))
    loaded = set(engine._loaded)
    with pytest.raises(AdapterError, match=r"trained on base model .*other-model"):
        engine.generate(messages, adapter=foreign)
    # One that claims this base model but does not fit its weights is refused too, and leaves nothing behind.
    config = json.loads((foreign / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(toy["model"])
    (foreign / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(AdapterError, match="does not fit base model"):
        engine.generate(messages, adapter=foreign)
    assert engine._loaded == loaded
    base = engine.generate(messages)
    assert engine.generate(messages, adapter=toy["a1"]).text != base.text  # the engine still serves


def test_the_autogen_client_serves_the_same_engine_calls_and_streams(toy: dict[str, Any]) -> None:
    import asyncio

    pytest.importorskip("autogen_core")
    from autogen_core import FunctionCall
    from autogen_core.models import AssistantMessage, FunctionExecutionResultMessage, UserMessage
    from autogen_core.models import FunctionExecutionResult as Result

    from agentgym_runtime.models.autogen import TransformersChatCompletionClient

    client = TransformersChatCompletionClient(
        str(toy["model"]), engine=toy["engine"], adapter=str(toy["trained"]), max_new_tokens=NEW_TOKENS
    )
    tools = [TOOLS[0]["function"]]
    first = [UserMessage(content=QUESTION, source="user")]
    called = asyncio.run(client.create(first, tools=tools))
    assert called.finish_reason == "function_calls"
    assert [(c.name, json.loads(c.arguments)) for c in called.content] == [("get_order", {"order_id": 7})]
    call = FunctionCall(id="c1", name="get_order", arguments='{"order_id": 7}')
    second = [
        *first,
        AssistantMessage(content=[call], source="support"),
        FunctionExecutionResultMessage(content=[Result(content="shipped", name="get_order", call_id="c1")]),
    ]
    answer = asyncio.run(client.create(second, tools=tools))
    assert (answer.finish_reason, answer.content) == ("stop", ANSWER)

    async def collect() -> list[Any]:
        return [item async for item in client.create_stream(second, tools=tools)]

    items = asyncio.run(collect())
    assert "".join(items[:-1]) == ANSWER and items[-1].content == ANSWER
    used = called.usage.completion_tokens + 2 * answer.usage.completion_tokens
    assert client.total_usage().completion_tokens == used
