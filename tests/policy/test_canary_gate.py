"""Every canary is judged by itself, and every decision is visible: ``policies list/show/evaluate/canary``."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

import agentgym_runtime as agentgym
from agentgym_runtime.cli.app import build_app
from agentgym_runtime.errors import ConfigurationError
from agentgym_runtime.policy.gate import GateConfig
from agentgym_runtime.policy.registry import PolicyStatus
from agentgym_runtime.policy.router import RouterConfig
from agentgym_runtime.recording.runtime import Runtime
from tests.policy.helpers import scripted_episode


def _run(home: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(build_app(), ["policies", *args, "--home", str(home)], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def _json(home: Path, *args: str) -> Any:
    code, out = _run(home, *args, "--json")
    assert code == 0, out
    return json.loads(out[out.index("{") if out.lstrip().startswith("{") else out.index("[") :])


def test_the_serving_router_judges_every_canary_from_the_settings(agentgym_runtime: Runtime) -> None:
    assert agentgym_runtime.router.config == RouterConfig.from_settings(agentgym_runtime.settings)
    assert agentgym_runtime.router.config.evaluate_every == 20
    assert agentgym_runtime.router.config.gate.min_tool_calls == 200
    assert agentgym_runtime.router.config.max_canary_wait_s == 86_400.0


def test_a_better_canary_is_promoted_by_itself_and_the_decision_is_shown(agentgym_runtime: Runtime) -> None:
    settings = agentgym_runtime.settings.model_copy(update={"canary_min_tool_calls": 50, "canary_evaluate_every": 10})
    router = agentgym_runtime.router
    router.set_config(RouterConfig.from_settings(settings))
    registry = agentgym_runtime.policies
    agentgym.promote("support", registry.register("support", system_prompt="better").version, canary=0.5)
    rng = random.Random(5)
    for i in range(600):  # the gate's final look is at 200 canary tool calls (100 canary episodes)
        scripted_episode("support", f"u{i}", {0: 0.55, 1: 1.0}, rng)
        if registry.state("support").canary is None:
            break
    # The gate decides on a background thread: a loaded machine (two training jobs beside this test)
    # once took longer than 10 s to get to it.
    deadline = time.time() + 60
    while registry.state("support").canary is not None and time.time() < deadline:
        time.sleep(0.05)
    state = registry.state("support")
    assert (state.live, state.canary, state.status_of(1)) == (1, None, PolicyStatus.LIVE)
    promoted = [e for e in registry.events("support") if e.to_status == "live" and e.version == 1]
    assert len(promoted) == 1 and promoted[0].actor == "gate"
    agentgym_runtime.shutdown()
    home = agentgym_runtime.settings.home
    shown = _json(home, "show", "support")
    last = shown["last_decision"]
    assert (shown["version"], shown["status"], last["action"], last["actor"]) == (1, "live", "promote", "gate")
    assert last["z"] >= last["boundary_z"] > 0 and 0 < last["alpha_spent"] < 0.05 + 1e-9
    assert last["reason"].startswith("gate: better: tool reliability v1 ")
    listed = _json(home, "list")
    assert [(a["agent"], a["live"], a["last_decision"]["action"]) for a in listed] == [("support", 1, "promote")]
    assert [(v["version"], v["status"]) for v in listed[0]["versions"]] == [(0, "retired"), (1, "live")]


def test_a_held_canary_says_which_minimum_is_missing(agentgym_runtime: Runtime) -> None:
    registry = agentgym_runtime.policies
    agentgym.register_policy("support", system_prompt="new")
    code, out = _run(agentgym_runtime.settings.home, "canary", "support", "1", "--share", "0.5")
    assert code == 0 and "support@v1 is the canary for 50% of sessions" in out
    rng = random.Random(1)
    versions = [scripted_episode("support", f"u{i}", {0: 0.5, 1: 1.0}, rng) for i in range(8)]
    agentgym_runtime.shutdown()  # the CLI is another process: release the DuckDB file
    home = agentgym_runtime.settings.home
    decision = _json(home, "evaluate", "support")
    canary_calls, live_calls = 2 * versions.count(1), 2 * versions.count(0)
    assert decision["action"] == "hold"
    assert decision["reason"] == (f"not enough tool calls yet: v1 {canary_calls}, v0 {live_calls} (need 200 each)")
    assert decision["numbers"]["candidate"]["tool_calls"] == canary_calls
    code, out = _run(home, "list")
    assert code == 0, out
    assert "gate: hold (not enough tool calls yet: v1" in out and "(need 200 each))" in out
    assert registry.state("support").canary == 1  # held: still the canary


def test_a_canary_that_waits_too_long_is_rolled_back_with_the_reason(agentgym_runtime: Runtime) -> None:
    router = agentgym_runtime.router
    router.set_config(RouterConfig(gate=GateConfig(min_tool_calls=100), max_canary_wait_s=0.05))
    registry = agentgym_runtime.policies
    agentgym.promote("support", registry.register("support", system_prompt="new").version, canary=0.5)
    rng = random.Random(2)
    for i in range(4):
        scripted_episode("support", f"u{i}", {0: 0.5, 1: 0.5}, rng)
    time.sleep(0.1)
    decision = router.evaluate("support")
    assert decision.action == "rollback"
    assert decision.reason.startswith("canary undecided after ") and "(limit 0.05s): not enough tool calls yet" in (
        decision.reason
    )
    state = registry.state("support")
    assert (state.live, state.canary, state.status_of(1)) == (0, None, PolicyStatus.ROLLED_BACK)
    last = registry.last_decision("support")
    assert last is not None and last.to_status == "rolled_back" and last.details["max_canary_wait_s"] == 0.05


def test_unknown_agents_are_errors_listing_the_known_ones(agentgym_runtime: Runtime) -> None:
    agentgym.register_policy("support", system_prompt="x")
    agentgym_runtime.shutdown()
    home = agentgym_runtime.settings.home
    for args in (
        ("show", "nosuch"),
        ("evaluate", "nosuch"),
        ("list", "--agent", "nosuch"),
        ("diff", "nosuch", "0", "1"),
    ):
        code, out = _run(home, *args)
        assert code == 1, (args, out)
        assert "no policies registered for agent 'nosuch'; agents with policies: support" in " ".join(out.split())
    assert _json(home, "diff", "support", "0", "1")["changed"]["system_prompt"] == ["", "x"]


def test_the_settings_choose_promotion_on_non_inferiority_its_margin_and_the_final_look(
    agentgym_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = agentgym_runtime.settings.model_copy(
        update={"canary_promotion": "non_inferiority", "canary_margin": 0.03, "canary_undecided": "promote"}
    )
    gate = RouterConfig.from_settings(settings).gate
    assert (gate.promotion, gate.margin, gate.undecided) == ("non_inferiority", 0.03, "promote")
    live = agentgym_runtime.router.config.gate
    assert (live.promotion, live.margin, live.undecided) == ("superiority", 0.02, "rollback")
    with pytest.raises(ValidationError, match="canary_promotion"):
        agentgym.Settings(canary_promotion="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="canary_undecided"):
        agentgym.Settings(canary_undecided="hold")  # type: ignore[arg-type]
    monkeypatch.setenv("AGENTGYM_CANARY_UNDECIDED", "promote")
    assert RouterConfig.from_settings(agentgym.Settings()).gate.undecided == "promote"
    with pytest.raises(ValidationError, match="canary_margin"):
        agentgym.Settings(canary_margin=0.7)


def echo(question: str) -> str:
    """A module-level agent the training jobs of the decorator test could replay."""
    return question


def test_the_decorator_sets_the_offline_gate_a_candidate_must_pass(
    agentgym_runtime: Runtime, no_registered_training: None
) -> None:
    replay = {"replay": "tests.policy.test_canary_gate:echo"}

    @agentgym.train_online(name="strict", trainer="demos", gpu="cpu", trainer_options=replay, max_heldout_drop=0.0)
    def strict(question: str) -> str:
        return question

    @agentgym.train_online(name="default", trainer="demos", gpu="cpu", trainer_options=replay)
    def default(question: str) -> str:
        return question

    assert strict("a") == "a" and default("b") == "b"
    assert agentgym_runtime.scheduler.config_for("strict").max_heldout_drop == 0.0
    assert agentgym_runtime.scheduler.config_for("default").max_heldout_drop == 0.02
    with pytest.raises(ConfigurationError, match=r"invalid training options for agent 'bad': max_heldout_drop"):
        agentgym.train_online(name="bad", trainer="demos", gpu="cpu", trainer_options=replay, max_heldout_drop=-0.1)(
            default
        )
