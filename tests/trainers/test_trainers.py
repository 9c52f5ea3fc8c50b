"""The job-side trainers on tasks built here: demos (replay), apo (local endpoint), grpo (tiny LM), verl (checks)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from agentgym_runtime.recording.policy import Policy
from agentgym_runtime.trainers.base import GPUNotAvailableError, TrainerUnavailable, TrainingJobSpec
from agentgym_runtime.trainers.dataset import RecordedToolCall, Task
from agentgym_runtime.trainers.toy_model import WordTokenizer, tiny_llama, toy_grpo_config
from tests.trainers.openai_stub import CRITIQUE, IMPROVED_DESCRIPTION, IMPROVED_PROMPT, MARKER, TOOL_MARKER

pytest.importorskip("agentlightning")

TOOLS = [
    {"name": "refund_order", "description": "Refund", "parameters": {"type": "object", "required": ["order_id"]}},
    {"name": "track_order", "description": "Track", "parameters": {"type": "object", "required": ["order_id"]}},
]


def _task(i: int, kind: str, reward: float | None) -> Task:
    tool = "refund_order" if kind == "refund" else "track_order"
    text = f"please {kind} my order {i}" if kind == "refund" else f"where is my parcel {i}, {kind} it"
    return Task(
        episode_id=f"e{kind}{i}",
        session_id=f"s{kind}{i}",
        agent="support",
        input=text,
        output=f"done {tool}",
        tools=TOOLS,
        tool_calls=[RecordedToolCall(name=tool, call_id="c1", arguments={"order_id": i}, result="ok", outcome="ok")],
        reward=reward,
    )


def demo_following_agent(task: Task, policy: Policy, sandbox: Any) -> str:
    """A scripted agent: copies the tool of the demonstration whose input shares most words; guesses otherwise."""
    words = set(str(task.input).split())
    best = max(policy.demonstrations, key=lambda d: len(words & set(str(d.input).split())), default=None)
    tool = best.tool_calls[0].name if best is not None and best.tool_calls else "lookup_order"
    sandbox.call(tool, {"order_id": 1})
    return tool


def expected_tool(task: Task, output: Any) -> float:
    return 1.0 if output == task.tool_calls[0].name else 0.0


def test_demos_keeps_the_set_that_wins_on_heldout_replay(tmp_path: Path) -> None:
    from agentgym_runtime.trainers.demos import DemosTrainer
    from agentgym_runtime.trainers.lightning.replay import ReplayAgent
    from agentgym_runtime.trainers.lightning.store import DuckDBLightningStore

    train = [_task(i, "refund", 1.0) for i in range(3)] + [_task(i, "track", 0.9) for i in range(3, 6)]
    train.append(_task(9, "refund", 0.1))  # low reward: never a demonstration
    heldout = [_task(20, "refund", None), _task(21, "track", None)]
    agent = ReplayAgent(demo_following_agent, agent="support", scenario_reward=expected_tool)
    progress: list[tuple[float, str]] = []
    result = DemosTrainer().fit(
        train,
        heldout,
        replay_agent=agent,
        store_path=tmp_path / "lightning.duckdb",
        options={"k_values": [1, 2], "diversity": 0.7, "embedder": "lexical"},
        progress=lambda f, m: progress.append((f, m)),
    )
    assert result.trainer == "demos"
    metrics = result.metrics
    assert metrics["scored_by"] == "replay"
    assert metrics["candidates"] == 6
    # No demonstrations: the agent calls a tool that does not exist (reliability 0, reward 0).
    assert metrics["heldout_reward_before"] == 0.0
    # One demonstration: both tasks call a real tool (reliability 1) but only one the right one
    # (scenario reward 1 and 0): (1 + 0.5) / 2. Two diverse ones (refund + track) get both right.
    assert metrics["set_scores"]["k1"] == pytest.approx(0.75)
    assert metrics["heldout_reward_after"] == pytest.approx(1.0)
    assert sorted(d.tool_calls[0].name for d in result.demonstrations) == ["refund_order", "track_order"]
    assert progress[-1][0] == 1.0

    # The replayed rollouts and their reward spans are in the job's own DuckDB store.
    store = DuckDBLightningStore(tmp_path / "lightning.duckdb")
    rollouts = asyncio.run(store.query_rollouts())
    assert len(rollouts) == len(train) + 3 * len(heldout)
    assert sorted({r.mode for r in rollouts}) == ["train", "val"]
    assert {r.status for r in rollouts} == {"succeeded"}
    asyncio.run(store.close())


def test_demos_without_replay_scores_by_similarity(tmp_path: Path) -> None:
    from agentgym_runtime.trainers.demos import DemosTrainer

    train = [_task(i, "refund", 1.0) for i in range(2)] + [_task(5, "track", 1.0)]
    heldout = [_task(20, "refund", None)]
    result = DemosTrainer().fit(
        train, heldout, replay_agent=None, store_path=tmp_path / "l.duckdb", options={"embedder": "lexical"}
    )
    assert result.metrics["scored_by"] == "proxy"
    assert result.metrics["heldout_reward_before"] == 0.0
    assert result.metrics["heldout_reward_after"] > 0.5
    assert result.demonstrations[0].input.startswith("please refund")


def test_bridge_rollouts_are_read_by_agent_lightning_adapters(tmp_path: Path) -> None:
    import agentlightning as agl

    from agentgym_runtime.trainers.lightning.bridge import load_tasks_into_store
    from agentgym_runtime.trainers.lightning.store import DuckDBLightningStore

    store = DuckDBLightningStore(tmp_path / "l.duckdb")
    task = _task(1, "refund", 0.75).model_copy(update={"system_instructions": "You are support."})
    ids = asyncio.run(load_tasks_into_store(store, [task], tokenize=lambda text: [ord(c) % 50 for c in text]))
    spans = asyncio.run(store.query_spans(ids[0]))
    assert agl.find_final_reward(list(spans)) == 0.75
    messages = agl.TraceToMessages().adapt(list(spans))
    assert len(messages) == 1
    chat = messages[0]["messages"]
    assert [m["role"] for m in chat] == ["system", "user", "assistant"]
    assert chat[1]["content"] == "please refund my order 1"
    assert chat[2]["tool_calls"][0]["function"] == {"name": "refund_order", "arguments": '{"order_id": 1}'}
    assert [t["function"]["name"] for t in messages[0]["tools"]] == ["refund_order", "track_order"]
    triplets = agl.TracerTraceToTriplet().adapt(list(spans))
    assert len(triplets) == 1
    assert triplets[0].reward == 0.75
    assert triplets[0].response["token_ids"] == [ord(c) % 50 for c in "done refund_order"]
    restored = Task.model_validate(asyncio.run(store.get_rollout_by_id(ids[0])).input)
    assert restored == task
    asyncio.run(store.close())


def test_sandbox_replays_validates_and_counts() -> None:
    from agentgym_runtime.trainers.lightning.replay import NEUTRAL_OBSERVATION, ToolSandbox

    task = _task(1, "refund", 1.0).model_copy(
        update={
            "tool_calls": [
                RecordedToolCall(name="refund_order", arguments={"order_id": 1}, result={"refunded": 1}, outcome="ok")
            ]
        }
    )
    sandbox = ToolSandbox.for_task(task, fakes={"track_order": lambda order_id: f"at depot ({order_id})"})
    assert sandbox.call("refund_order", {"order_id": 1})["result"] == {"refunded": 1}
    assert sandbox.call("refund_order", {"order_id": 2})["result"] == NEUTRAL_OBSERVATION
    bad = sandbox.call("refund_order", {})
    assert bad["outcome"] == "invalid_arguments"
    assert "order_id" in bad["message"]
    assert sandbox.call("track_order", {"order_id": 3})["result"] == "at depot (3)"
    assert sandbox.call("cancel_order", {"order_id": 3})["outcome"] == "unknown_tool"
    assert sandbox.reliability == pytest.approx(3 / 5)


def _spec(tmp_path: Path, trainer: str, **options: Any) -> TrainingJobSpec:
    return TrainingJobSpec(
        run_id="r1",
        agent="support",
        trainer=trainer,
        snapshot_dir=str(tmp_path / "snap"),
        output_dir=str(tmp_path / "out"),
        options=options,
    )


def test_verl_refuses_without_cuda_and_validates_its_config(tmp_path: Path) -> None:
    import torch

    from agentgym_runtime.trainers.verl import VERLConfig, VERLTrainer

    with pytest.raises(ValueError, match="n_gpus_per_node"):
        VERLConfig.model_validate({"model_path": "/m", "n_gpus_per_node": 0})
    with pytest.raises(ValueError, match="extra"):
        VERLConfig.model_validate({"model_path": "/m", "bogus": 1})
    config = VERLConfig.model_validate({"model_path": "/models/qwen", "n_gpus_per_node": 2, "train_batch_size": 8})
    verl_dict = config.to_verl_config()
    assert verl_dict["actor_rollout_ref"]["model"]["path"] == "/models/qwen"
    assert verl_dict["trainer"]["n_gpus_per_node"] == 2
    assert verl_dict["data"]["train_batch_size"] == 8
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the no-GPU path cannot be shown here")
    with pytest.raises(GPUNotAvailableError, match=r"verl needs CUDA.*trainer='grpo'"):
        VERLTrainer().check_available(_spec(tmp_path, "verl", model_path="/models/qwen"))


# --- apo: Agent Lightning's APO against a local OpenAI-compatible endpoint ------------------


def prompt_following_agent(task: Task, policy: Policy, sandbox: Any) -> str:
    """Right tool only when the system prompt says which; its argument only when the tool description says so."""
    tool = task.tool_calls[0].name or "" if policy.system_prompt and MARKER in policy.system_prompt else "lookup_order"
    arguments = {"order_id": 1} if TOOL_MARKER in policy.tool_descriptions.get(tool, "") else {}
    sandbox.call(tool, arguments)
    return tool


def test_apo_runs_agent_lightning_apo_on_prompt_and_tool_descriptions(
    tmp_path: Path, openai_stub: dict[str, Any]
) -> None:
    from agentgym_runtime.trainers.apo import APOTrainer
    from agentgym_runtime.trainers.lightning.replay import ReplayAgent
    from agentgym_runtime.trainers.lightning.store import DuckDBLightningStore

    train = [_task(i, "refund", 1.0) for i in range(2)] + [_task(3, "track", 1.0)]
    heldout = [_task(20, "refund", None), _task(21, "track", None)]
    agent = ReplayAgent(prompt_following_agent, agent="support", scenario_reward=expected_tool)
    progress: list[str] = []
    result = APOTrainer().fit(
        train,
        heldout,
        agent,
        options={
            "base_url": openai_stub["base_url"],
            "model": "stub",
            "rounds": 1,
            "beam_width": 1,
            "branch_factor": 1,
            "seed_prompt": "Be helpful.",
        },
        store_path=tmp_path / "lightning.duckdb",
        progress=lambda fraction, message: progress.append(message),
    )
    assert result.trainer == "apo"
    assert result.metrics["algorithm"] == "agentlightning.APO"
    assert result.system_prompt == IMPROVED_PROMPT
    assert result.tool_descriptions == {"refund_order": IMPROVED_DESCRIPTION, "track_order": IMPROVED_DESCRIPTION}
    # Seed: unknown tool (0). Prompt: right tool without its argument (reliability 0, scenario 1: 0.5).
    # Refund description too: the refund task scores 1, the track task 0.5. Both descriptions: 1.
    assert result.metrics["heldout_reward_before"] == 0.0
    assert result.metrics["heldout_reward_after"] == 1.0
    assert result.metrics["stages"] == [
        {
            "resource": "system_prompt",
            "heldout_reward_before": 0.0,
            "heldout_reward_best": 0.5,
            "kept": True,
            "prompts": 2,
        },
        {
            "resource": "tool:refund_order",
            "heldout_reward_before": 0.5,
            "heldout_reward_best": 0.75,
            "kept": True,
            "prompts": 2,
        },
        {
            "resource": "tool:track_order",
            "heldout_reward_before": 0.75,
            "heldout_reward_best": 1.0,
            "kept": True,
            "prompts": 2,
        },
    ]
    assert result.metrics["prompts_scored"] == 6
    assert progress[-1] == "held-out reward 0.000 -> 1.000"
    # One beam round, width 1, one branch: per stage a textual gradient then an edit, all to the configured model.
    requests = openai_stub["requests"]
    assert [(r["kind"], r["model"]) for r in requests] == [("gradient", "stub"), ("edit", "stub")] * 3
    # APO rendered its POML prompts: the gradient saw the seed prompt and the replayed rollouts' traces
    # (the agent's call of the tool that does not exist), the edit saw the critique.
    first_gradient = json.dumps(requests[0]["body"]["messages"])
    assert "Be helpful." in first_gradient
    assert "lookup_order" in first_gradient
    assert CRITIQUE in json.dumps(requests[1]["body"]["messages"])
    # The stages' rollouts live in the job's own store, each candidate under a stage-qualified resources id.
    store = DuckDBLightningStore(tmp_path / "lightning.duckdb")
    rollouts = asyncio.run(store.query_rollouts())
    assert {r.status for r in rollouts} == {"succeeded"}
    assert {r.resources_id.split(":v")[0] for r in rollouts} == {
        "system_prompt",
        "tool:refund_order",
        "tool:track_order",
    }
    asyncio.run(store.close())


def test_apo_reports_a_missing_or_unreachable_endpoint(tmp_path: Path) -> None:
    import socket

    from agentgym_runtime.trainers.apo import APOTrainer

    with pytest.raises(TrainerUnavailable, match=r"options\['base_url'\]"):
        APOTrainer().check_available(_spec(tmp_path, "apo"))
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    spec = _spec(tmp_path, "apo", base_url=f"http://127.0.0.1:{port}/v1", model="m")
    with pytest.raises(TrainerUnavailable, match=rf"APO endpoint http://127.0.0.1:{port}/v1 is unreachable"):
        APOTrainer().check_available(spec)


# --- grpo on a toy task with a tiny causal LM built here -----------------------------------


def test_grpo_raises_heldout_reward_on_a_toy_task_and_saves_the_adapter(tmp_path: Path) -> None:
    import random

    from agentgym_runtime.trainers.grpo import grpo_train, save_adapter

    tokenizer = WordTokenizer(["ok", "no", "a", "b", "c", "d", "e", "f", "g", "h"])
    model = tiny_llama(len(tokenizer.vocab))
    rng = random.Random(0)
    letters = ["a", "b", "c", "d", "e", "f", "g", "h"]
    train = [" ".join(rng.choice(letters) for _ in range(3)) for _ in range(12)]
    heldout: list[str] = []
    while len(heldout) < 6:  # prompts never seen in training
        prompt = " ".join(rng.choice(letters) for _ in range(3))
        if prompt not in train and prompt not in heldout:
            heldout.append(prompt)

    def reward(index: int, completion: str) -> float:  # the toy task: answer starts with "ok"
        return 1.0 if completion.split()[:1] == ["ok"] else 0.0

    peft_model, metrics = grpo_train(
        model,
        tokenizer,
        train,
        reward,
        toy_grpo_config(),
        heldout_prompts=heldout,
    )
    assert metrics["samples"] == 20 * 4 * 8
    assert metrics["samples_per_second"] > 0
    assert metrics["heldout_reward_before"] < 0.2  # ~1/12: an untrained model rarely says "ok" first
    assert metrics["heldout_reward_after"] >= metrics["heldout_reward_before"] + 0.3
    assert metrics["train_reward_last_step"] > metrics["train_reward_first_step"]
    adapter_dir = save_adapter(peft_model, tmp_path / "out")
    assert (adapter_dir / "adapter_model.safetensors").is_file()
    assert json.loads((adapter_dir / "adapter_config.json").read_text())["r"] == 4


def test_grpo_needs_a_model_path(tmp_path: Path) -> None:
    from agentgym_runtime.trainers.grpo import GRPOTrainer, grpo_loss

    with pytest.raises(TrainerUnavailable, match=r"options\['model_path'\]"):
        GRPOTrainer().check_available(_spec(tmp_path, "grpo"))
    import torch

    # Clipping: a ratio of e (far above 1.2) with a positive advantage contributes 1.2 * A, not e * A.
    logps, old = torch.ones(1, 1), torch.zeros(1, 1)
    loss, stats = grpo_loss(logps, old, logps, torch.ones(1), torch.ones(1, 1), clip_epsilon=0.2, beta=0.0)
    assert float(loss) == pytest.approx(-1.2)
    assert stats["clip_fraction"] == 1.0


# --- a job spec on a real snapshot of recorded episodes -------------------------------------


def snapshot_replay(task: Task, policy: Policy, sandbox: Any) -> str:
    """Replay function named by ``options['replay']``: follows the first demonstration's tool, else guesses."""
    demo = policy.demonstrations[0] if policy.demonstrations else None
    tool = demo.tool_calls[0].name if demo is not None and demo.tool_calls else "find_order"
    sandbox.call(tool, {"order_id": task.input["order_id"]})
    return tool


def record_snapshot(runtime: Any, recorded: Any, tmp_path: Path) -> None:
    """Eight episodes of a scripted support agent in four sessions (two call a misspelt tool), snapshotted."""
    import agentgym_runtime as agentgym
    from agentgym_runtime.recording.capture import start_llm_call
    from agentgym_runtime.recording.context import RequestedToolCall
    from agentgym_runtime.trainers.dataset import write_snapshot

    @agentgym.tool
    def get_order(order_id: int) -> dict[str, Any]:
        """Look up an order."""
        return {"id": order_id, "status": "shipped"}

    def support(question: str, order_id: int, typo: bool = False) -> str:
        call = start_llm_call(
            model="scripted",
            provider="test",
            tools=[get_order.definition()],
            input_messages=[{"role": "user", "content": question}],
            system_instructions="Be exact.",
        )
        name = "get_ordr" if typo else "get_order"
        call.finish(requested=[RequestedToolCall.from_raw(name, f"c{order_id}", json.dumps({"order_id": order_id}))])
        return "sorry" if typo else f"order {order_id} is {get_order(order_id=order_id)['status']}"

    agents = [agentgym.train_online(name="support", session_id=f"s{k}")(support) for k in range(4)]
    for i in range(8):
        agents[i % 4](f"where is order {i}?", i, typo=i % 4 == 1)
    assert agentgym.flush()
    assert len(recorded.episodes("support")) == 8
    write_snapshot(runtime.store, "support", tmp_path / "snap", run_id="r1")


def test_demos_job_on_a_recorded_snapshot(agentgym_runtime: Any, recorded: Any, tmp_path: Path) -> None:
    from agentgym_runtime.trainers.demos import DemosTrainer

    record_snapshot(agentgym_runtime, recorded, tmp_path)
    spec = _spec(
        tmp_path, "demos", replay=f"{__name__}:snapshot_replay", heldout_fraction=0.25, k_values=[1], embedder="lexical"
    )
    trainer = DemosTrainer()
    trainer.check_available(spec)
    result = trainer.train(spec, lambda fraction, message: None)
    assert result.metrics["heldout_tasks"] == 2  # one session of four held out
    assert result.metrics["candidates"] == 4  # the six training episodes minus the two that called get_ordr
    assert result.metrics["heldout_reward_before"] == 0.0  # find_order does not exist
    assert result.metrics["heldout_reward_after"] == 1.0
    assert [c.name for c in result.demonstrations[0].tool_calls] == ["get_order"]
    assert (tmp_path / "out" / "lightning.duckdb").is_file()


def render_letters(task: Task) -> str:
    """Prompt option for the grpo job: three words of the tiny vocabulary picked by the order id."""
    letters = ["a", "b", "c", "d", "e", "f", "g", "h"]
    i = int(task.input["order_id"])
    return " ".join(letters[(i * k) % 8] for k in (1, 3, 5))


def says_ok(task: Task, completion: str) -> float:
    """Reward option for the grpo job."""
    return 1.0 if completion.split()[:1] == ["ok"] else 0.0


def guide_ok(task: Task) -> list[str]:
    """Guide option for the grpo job: the completion that worked."""
    return ["ok"]


def test_grpo_job_trains_from_a_snapshot_and_writes_the_adapter(
    agentgym_runtime: Any, recorded: Any, tmp_path: Path
) -> None:
    import torch
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from agentgym_runtime.trainers.grpo import GRPOTrainer

    record_snapshot(agentgym_runtime, recorded, tmp_path)
    words = ["<pad>", "<eos>", "<unk>", "ok", "no", "a", "b", "c", "d", "e", "f", "g", "h"]
    backend = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    model_dir = tmp_path / "tiny-llama"
    tokenizer.save_pretrained(model_dir)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(words),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=32,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
    )
    LlamaForCausalLM(config).save_pretrained(model_dir)

    spec = _spec(
        tmp_path,
        "grpo",
        model_path=str(model_dir),
        reward=f"{__name__}:says_ok",
        prompt=f"{__name__}:render_letters",
        guide=f"{__name__}:guide_ok",
        steps=2,
        group_size=4,
        prompts_per_step=2,
        max_new_tokens=2,
        eval_samples=2,
        heldout_fraction=0.25,
    )
    spec = spec.model_copy(update={"device": "cpu"})
    trainer = GRPOTrainer()
    trainer.check_available(spec)
    progress: list[str] = []
    result = trainer.train(spec, lambda fraction, message: progress.append(message))
    assert result.adapter == "adapter"
    assert result.llm is not None
    assert (result.llm.adapter, result.llm.model) == ("adapter", str(model_dir))
    assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").is_file()
    assert result.metrics["samples"] == 2 * 2 * 4
    guided = result.metrics["guided_samples"]
    assert 1 <= guided <= 2 * 2  # at most one guide per group, only in groups where no sample said "ok"
    assert (result.metrics["train_tasks"], result.metrics["heldout_tasks"]) == (6, 2)
    assert 0.0 <= result.metrics["heldout_reward_after"] <= 1.0
    assert progress[0] == "GRPO on 6 prompts of 6 tasks (cpu)"
    assert progress[-1] == "adapter saved"
