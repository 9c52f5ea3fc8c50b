"""The demo model: built from a config, cached, 60-70% held-out reliability, LangChain tool calls, LoRA."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

import agentgym_runtime as agentgym  # noqa: E402
from agentgym_runtime.demo.model import tiny  # noqa: E402
from agentgym_runtime.demo.model.chat import TinyToolCallingChatModel, messages_to_prompt  # noqa: E402
from agentgym_runtime.demo.model.evaluate import EvaluationResult, evaluate_model  # noqa: E402
from agentgym_runtime.demo.model.format import parse_completion, render_call, render_prompt, score_completion  # noqa: E402
from agentgym_runtime.demo.model.tiny import BUILD_FILE, DemoModel, load_or_build_demo_model  # noqa: E402
from agentgym_runtime.recording.policy import LLMConfig, Policy  # noqa: E402
from agentgym_runtime.scenarios import get_scenario  # noqa: E402

SCENARIO = "customer_support"
pytestmark = pytest.mark.slow  # builds the demo model once per session (minutes on a loaded 2-core CPU)


@pytest.fixture(scope="session")
def baseline(demo: DemoModel) -> EvaluationResult:
    return evaluate_model(demo, SCENARIO, "heldout", n=240, seed=0)


def test_model_is_built_from_a_config_and_saved_under_the_home(demo: DemoModel, demo_home: Path) -> None:
    where = demo_home / "models" / "customer_support-tiny"
    assert demo.path == where
    assert (where / "model.safetensors").exists()
    assert (where / "tokenizer.json").exists()
    info = json.loads((where / BUILD_FILE).read_text())
    assert info["scenario"] == SCENARIO and info["seed"] == 0
    assert 200_000 <= demo.num_parameters <= 5_000_000
    assert type(demo.model).__name__ == "GPT2LMHeadModel"
    # the tokenizer was trained here: a small vocabulary that round-trips scenario text exactly
    assert len(demo.tokenizer) <= 700
    text = '{"name": "get_order", "arguments": {"order_id": 9137}}'
    assert demo.tokenizer.decode(demo.tokenizer.encode(text)) == text


def test_cached_build_is_reused_with_the_same_weights(demo: DemoModel, demo_home: Path) -> None:
    build_file = demo.path / BUILD_FILE
    stamp = build_file.stat().st_mtime_ns
    tiny._loaded.clear()  # forget the in-process copy: the next load must come from disk
    again = load_or_build_demo_model(SCENARIO, home=demo_home, seed=0)
    assert again is not demo
    assert build_file.stat().st_mtime_ns == stamp  # not rebuilt
    for (name, a), (_, b) in zip(demo.model.state_dict().items(), again.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert load_or_build_demo_model(SCENARIO, home=demo_home, seed=0) is again  # memoised in process
    # another recipe is another cache key: the stale build is not reused
    assert tiny.cache_key(SCENARIO, tiny.TinyModelConfig(steps=1), 0) != json.loads(build_file.read_text())["key"]


def test_version_0_heldout_tool_reliability_is_60_to_70_percent(baseline: EvaluationResult) -> None:
    assert baseline.episodes == 240
    assert 0.55 <= baseline.tool_reliability <= 0.75, baseline.to_dict()
    # the failures are the systematic mistakes, of every kind
    for outcome in ("unknown_tool", "invalid_arguments"):
        assert baseline.outcomes.get(outcome, 0) > 0, baseline.outcomes
    assert baseline.task_success >= 0.5
    assert baseline.llm_calls_per_episode > 2.0  # retries after mistakes cost extra calls
    assert baseline.tokens_per_episode > 0


def test_completions_parse_and_score(demo: DemoModel) -> None:
    support = get_scenario(SCENARIO)
    task = next(t for t in support.tasks("heldout", 50, seed=0) if t.pitfall is None)
    text, n_in, n_out = demo.complete([render_prompt(task, support.tools())])[0]
    assert n_in > 10 and n_out > 3
    parsed = parse_completion(text)
    assert parsed.kind == "tool_call" and parsed.name == task.expected_calls[0].name
    good = render_call(task.expected_calls[0].name, task.expected_calls[0].arguments)
    assert score_completion(task, good).reward == 1.0
    assert score_completion(task, good[:-1]).outcome == "invalid_arguments"
    assert score_completion(task, '{"answer": "x"}').outcome == "no_call"


def _langchain_tools(scenario: Any, world: Any) -> list[Any]:
    from langchain_core.tools import StructuredTool

    return [StructuredTool.from_function(t.fn, name=t.name, description=t.description) for t in scenario.tools(world)]


def test_langchain_agent_executes_the_models_tool_calls(demo: DemoModel) -> None:
    from langchain.agents import create_agent
    from langchain_core.messages import AIMessage, ToolMessage

    support = get_scenario(SCENARIO)
    task = next(t for t in support.tasks("heldout", 50, seed=0) if t.pitfall is None and t.intent == "cancel")
    world = support.new_world(task.world_seed)
    order_id = task.expected_calls[0].arguments["order_id"]
    assert world.orders[order_id].status == "processing"
    agent = create_agent(TinyToolCallingChatModel.from_demo_model(demo), tools=_langchain_tools(support, world))
    result = agent.invoke({"messages": [{"role": "user", "content": task.prompt}]})
    messages = result["messages"]
    calls = [c for m in messages if isinstance(m, AIMessage) for c in m.tool_calls]
    assert calls[0]["name"] == "cancel_order" and calls[0]["args"] == {"order_id": order_id}
    assert any(isinstance(m, ToolMessage) and m.status == "success" for m in messages)
    assert world.orders[order_id].status == "cancelled"  # the tool really ran
    assert "cancelled" in messages[-1].content
    assert messages[1].usage_metadata["input_tokens"] > 0


def test_malformed_output_becomes_an_invalid_tool_call(demo: DemoModel) -> None:
    from langchain_core.messages import HumanMessage

    support = get_scenario(SCENARIO)
    task = next(t for t in support.tasks("heldout", 200, seed=0) if t.pitfall == "malformed_json")
    chat = TinyToolCallingChatModel.from_demo_model(demo).bind_tools(_langchain_tools(support, None))
    message = chat.invoke([HumanMessage(task.prompt)])
    assert message.tool_calls == []
    assert len(message.invalid_tool_calls) == 1
    assert message.invalid_tool_calls[0]["name"] == "open_ticket"
    assert message.invalid_tool_calls[0]["error"] == "arguments are not valid JSON"


def test_prompt_from_a_langchain_conversation_matches_the_training_format() -> None:
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    messages = [
        HumanMessage("Where is order 5001?"),
        AIMessage("", tool_calls=[{"name": "get_order", "args": {"order_id": 5001}, "id": "c1", "type": "tool_call"}]),
        ToolMessage("{'order_id': 5001, 'status': 'shipped'}", tool_call_id="c1"),
    ]
    assert messages_to_prompt(messages, [{"type": "function", "function": {"name": "get_order"}}]) == (
        "tools: get_order\nuser: Where is order 5001?\n"
        'call: {"name": "get_order", "arguments": {"order_id": 5001}}\n'
        'result: {"order_id": 5001, "status": "shipped"}\nnext:'
    )


@pytest.fixture
def adapter_dir(demo: DemoModel, tmp_path: Path) -> Iterator[Path]:
    import copy

    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    peft_model = get_peft_model(
        copy.deepcopy(demo.model), LoraConfig(r=4, lora_alpha=32, target_modules=["c_attn"], fan_in_fan_out=True)
    )
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # non-zero: the adapter changes the outputs
    path = tmp_path / "adapter"
    peft_model.save_pretrained(path)
    assert (path / "adapter_model.safetensors").exists()
    return path


def test_lora_adapter_named_by_the_pinned_policy_is_loaded(
    demo: DemoModel, adapter_dir: Path, agentgym_runtime: Any
) -> None:
    from langchain_core.messages import HumanMessage

    support = get_scenario(SCENARIO)
    prompts = [render_prompt(t, support.tools()) for t in support.tasks("heldout", 8, seed=0)]
    base = demo.complete(prompts)
    tuned = demo.complete(prompts, adapter=adapter_dir)
    assert [t for t, _, _ in tuned] != [t for t, _, _ in base]
    loaded = set(demo.engine._loaded)
    assert len(loaded) == 1  # the adapter was loaded once, into the engine's one model ...
    assert [t for t, _, _ in demo.complete(prompts, adapter=adapter_dir)] == [t for t, _, _ in tuned]
    assert demo.engine._loaded == loaded  # ... and served again without loading it again
    assert [t for t, _, _ in demo.complete(prompts)] == [t for t, _, _ in base]  # base weights untouched

    policy = Policy(agent="support", version=1, llm=LLMConfig(adapter=str(adapter_dir)))
    agentgym_runtime.policy_resolver = lambda agent, session_id: policy if agent == "support" else None
    chat = TinyToolCallingChatModel.from_demo_model(demo).bind_tools(_langchain_tools(support, None))
    request = [HumanMessage(support.tasks("heldout", 8, seed=0)[0].prompt)]
    outside = chat.invoke(request)
    with agentgym.episode(agent="support"):
        assert agentgym.current_policy() == policy
        inside = chat.invoke(request)
    expected_base = parse_completion(base[0][0])
    expected_tuned = parse_completion(tuned[0][0])
    assert (outside.tool_calls[0]["name"] if outside.tool_calls else outside.content) == (
        expected_base.name or expected_base.answer
    )
    got = inside.tool_calls or inside.invalid_tool_calls
    assert (got[0]["name"] if got else inside.content) == (expected_tuned.name or expected_tuned.answer or tuned[0][0])


def test_raw_model_path_used_by_grpo_scores_slotted_completions(demo: DemoModel) -> None:
    from agentgym_runtime.demo.model.format import delexicalize

    support = get_scenario(SCENARIO)
    task = next(t for t in support.tasks("heldout", 50, seed=0) if t.pitfall is None and t.intent == "order_status")
    text, slots = delexicalize(render_prompt(task, support.tools()))
    assert set(slots) == {"<w1>", "<n1>"}  # the customer's name and the order number
    assert slots["<n1>"] == str(task.expected_calls[0].arguments["order_id"])
    assert slots["<w1>"] in task.prompt and "<n1>" in text and slots["<n1>"] not in text
    ids = torch.tensor([demo.tokenizer.encode(text)])
    with torch.inference_mode():
        out = demo.model.generate(input_ids=ids, max_new_tokens=40, do_sample=False, pad_token_id=0)
    completion = demo.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    assert "<n1>" in completion  # the model writes slots ...
    score = score_completion(task, completion)  # ... and scoring fills them from the task's prompt
    assert score.outcome == "ok" and score.matches_expected and score.reward == 1.0


@pytest.mark.parametrize("name", ["code_review", "qa_testing"])
def test_every_scenario_builds_a_version_0_with_60_to_70_percent_reliability(name: str, demo_home: Path) -> None:
    """The other scenarios' demo models: the same recipe lands their version 0 in the same band."""
    model = load_or_build_demo_model(name, home=demo_home, seed=0)
    assert model.path == demo_home / "models" / f"{name}-tiny"
    result = evaluate_model(model, name, "heldout", n=240, seed=0)
    assert result.episodes == 240
    assert 0.55 <= result.tool_reliability <= 0.75, result.to_dict()
    for outcome in ("unknown_tool", "invalid_arguments"):
        assert result.outcomes.get(outcome, 0) > 0, result.outcomes
    assert result.task_success >= 0.5
    assert result.llm_calls_per_episode > 2.0
