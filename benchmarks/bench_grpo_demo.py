"""GRPO on the demo model: rounds with uniform-reward groups in the update, or left out.

The workload the demo's training job runs: the customer_support demo model (built once into
``benchmarks/.bench-home``, a few minutes), version 0 run greedily on 252 held-out-distribution
tasks as the recorded episodes, the demo's prompts, rewards and guides, 16 prompts x 4 samples a
round. Side by side in one process, alternating: the same rounds with every group in the
optimiser step (the baseline) and with groups whose samples all earned the same reward left out
(``skip_uniform_groups``, the default). Reported: seconds per round, the ratio, the groups left
out, and the train reward of the last round (both learn the same).
Run with ``python benchmarks/bench_grpo_demo.py``.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _util import machine, median

HOME = Path(__file__).parent / ".bench-home"
EPISODES = 252
ROUNDS = 20
REPEATS = 2


def recorded_episodes(model: Any, scenario: Any, n: int) -> list[Any]:
    """Version 0's episodes on ``n`` held-out tasks, as the trace store would hold them."""
    from agentgym_runtime.demo.model.evaluate import run_episodes
    from agentgym_runtime.trainers.dataset import RecordedToolCall, Task

    episodes = []
    for index, run in enumerate(run_episodes(model, scenario, scenario.tasks("heldout", n, seed=1))):
        calls = [
            RecordedToolCall(name=c.name, arguments=c.arguments, result=c.result, outcome=c.outcome) for c in run.calls
        ]
        episodes.append(
            Task(
                episode_id=f"bench-{index}",
                agent="bench",
                input={"question": run.task.prompt, "task_id": run.task.id},
                output=run.answer,
                tool_calls=calls,
                tool_reliability=run.ok / len(calls) if calls else None,
            )
        )
    return episodes


def main() -> None:
    import torch

    from agentgym_runtime.demo import loop as demo
    from agentgym_runtime.demo.model.tiny import load_or_build_demo_model
    from agentgym_runtime.scenarios import get_scenario
    from agentgym_runtime.trainers.grpo import GRPOConfig, _prompts, _with_prompt, grpo_train

    torch.set_num_threads(1)  # as the demo's job runs
    model = load_or_build_demo_model("customer_support", HOME, 0)
    episodes = recorded_episodes(model, get_scenario("customer_support"), EPISODES)
    pairs = _prompts(episodes, demo.grpo_prompt)
    score, guide = _with_prompt(demo.grpo_reward), _with_prompt(demo.grpo_guide)
    config = GRPOConfig(
        steps=ROUNDS,
        prompts_per_step=16,
        group_size=4,
        inner_steps=2,
        learning_rate=2.5e-3,
        max_new_tokens=model.config.max_new_tokens,
        failed_episode_weight=3.0,
    )
    weights = [3.0 if (t.tool_reliability is not None and t.tool_reliability < 1) else 1.0 for t, _ in pairs]
    seconds: dict[bool, list[float]] = {False: [], True: []}
    metrics: dict[bool, dict[str, Any]] = {}
    for _ in range(REPEATS):
        for skip in (False, True):
            start = time.perf_counter()
            _, metrics[skip] = grpo_train(
                copy.deepcopy(model.model),
                model.tokenizer,
                [prompt for _, prompt in pairs],
                lambda i, text: float(score(pairs[i][0], text, prompt=pairs[i][1])),
                config.model_copy(update={"skip_uniform_groups": skip}),
                guides=lambda i: list(guide(pairs[i][0], prompt=pairs[i][1])),
                prompt_weights=weights,
            )
            seconds[skip].append((time.perf_counter() - start) / ROUNDS)
    print("## GRPO on the demo model: uniform-reward groups in the update, or left out\n")
    print(f"Machine: {machine()}; torch {torch.__version__}, one thread.")
    print(
        f"Demo model ({model.num_parameters:,} parameters), {len(pairs)} prompts of {EPISODES} recorded episodes, "
        f"{ROUNDS} rounds of 16 prompts x 4 samples; median of {REPEATS} alternating runs each.\n"
    )
    print("| | s / round | ratio | groups left out | train reward, last round |")
    print("|---|---:|---:|---:|---:|")
    base = median(seconds[False])
    for skip, label in ((False, "every group in the update (baseline)"), (True, "uniform-reward groups left out")):
        print(
            f"| {label} | {median(seconds[skip]):.2f} | {median(seconds[skip]) / base:.2f} | "
            f"{metrics[skip]['skipped_groups']} of {ROUNDS * 16} | {metrics[skip]['train_reward_last_step']:.3f} |"
        )
    print()


if __name__ == "__main__":
    main()
