"""The router: pinning, canary share and stickiness, cross-process visibility, refusal, fallback, gate."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from dataclasses import replace

import pytest

import agentgym_runtime as agentgym
from agentgym_runtime import services
from agentgym_runtime.policy.apply import apply_to_messages
from agentgym_runtime.policy.gate import GateConfig, obrien_fleming_spending, sequential_boundaries
from agentgym_runtime.policy.registry import PolicyRegistry, PolicyStatus
from agentgym_runtime.policy.router import PolicyRouter, RouterConfig, fallback_to_incumbent, sticky_bucket
from agentgym_runtime.policy.statistics import ClusterSums
from agentgym_runtime.recording.capture import start_llm_call
from agentgym_runtime.recording.runtime import Runtime
from agentgym_runtime.testing import Recorded
from tests.policy.helpers import scripted_episode


def test_baseline_until_registered_then_promotion_is_seen_by_the_next_call(agentgym_runtime: Runtime) -> None:
    with agentgym.episode(agent="support") as ep:
        assert agentgym.current_policy() == agentgym.Policy.baseline("support")
    assert ep.policy_version == 0
    v1 = agentgym.register_policy("support", system_prompt="Be exact.")
    with agentgym.episode(agent="support"):
        assert agentgym.current_policy().version == 0  # a candidate serves nothing
    agentgym.promote("support", v1.version)
    with agentgym.episode(agent="support") as ep:
        assert agentgym.current_policy() == v1
    assert ep.policy_version == 1


def test_canary_share_is_within_tolerance_and_sticky_per_session(agentgym_runtime: Runtime) -> None:
    registry = agentgym_runtime.policies
    registry.promote("bot", registry.register("bot", system_prompt="live").version)
    registry.start_canary("bot", registry.register("bot", system_prompt="canary").version, 0.2)
    router = agentgym_runtime.router
    sessions = [f"user-{i}" for i in range(4000)]
    first = {s: router.resolve("bot", s).version for s in sessions}
    on_canary = sum(1 for v in first.values() if v == 2)
    assert set(first.values()) == {1, 2}
    assert abs(on_canary - 800) < 4 * (4000 * 0.2 * 0.8) ** 0.5  # 4 sigma: 800 +- 101
    for s in sessions[:200]:
        assert {router.resolve("bot", s).version for _ in range(5)} == {first[s]}
    assert all((first[s] == 2) == (sticky_bucket("bot", 2, s) < 0.2) for s in sessions)
    # Another process (a fresh router on the same files) puts each session on the same side.
    other = PolicyRouter(PolicyRegistry(registry.root))
    assert all(other.resolve("bot", s).version == first[s] for s in sessions[:500])
    # Without a session id, each episode draws anew.
    draws = [router.resolve("bot", None).version for _ in range(2000)]
    assert abs(draws.count(2) - 400) < 4 * (2000 * 0.2 * 0.8) ** 0.5


def test_pin_overrides_live_and_canary_until_unpinned(agentgym_runtime: Runtime) -> None:
    registry = agentgym_runtime.policies
    registry.register("bot", system_prompt="one")
    registry.promote("bot", registry.register("bot", system_prompt="two").version)
    registry.start_canary("bot", 1, 1.0)
    router = agentgym_runtime.router
    assert router.resolve("bot", "s").version == 1
    registry.pin("bot", 0, reason="incident")
    assert {router.resolve("bot", f"s{i}").version for i in range(50)} == {0}
    registry.unpin("bot")
    assert router.resolve("bot", "s").version == 1
    with pytest.raises(agentgym.PolicyConflictError, match="no version of 'bot' is pinned"):
        registry.unpin("bot")


_WATCHER = """
import sys, time
from pathlib import Path
from agentgym_runtime.policy.registry import PolicyRegistry
from agentgym_runtime.policy.router import PolicyRouter
router = PolicyRouter(PolicyRegistry(Path(sys.argv[1])))
assert router.resolve("bot", None).version == 0
print("ready", flush=True)
deadline = time.time() + 10
while time.time() < deadline:
    if router.resolve("bot", None).version == 1:
        print("seen", repr(time.time()), flush=True)
        break
    time.sleep(0.001)
"""


def test_another_process_sees_a_promotion_within_one_second(agentgym_runtime: Runtime) -> None:
    registry = agentgym_runtime.policies
    v1 = registry.register("bot", system_prompt="new")
    watcher = subprocess.Popen([sys.executable, "-c", _WATCHER, str(registry.root)], stdout=subprocess.PIPE, text=True)
    assert watcher.stdout is not None
    assert watcher.stdout.readline().strip() == "ready"
    time.sleep(0.3)  # the watcher has cached the pointers
    promoted_at = time.time()
    agentgym.promote("bot", v1.version)
    line = watcher.stdout.readline().split()
    watcher.wait(timeout=10)
    assert line[0] == "seen"
    assert 0.0 <= float(line[1]) - promoted_at < 1.0


def test_artifact_tampered_after_promotion_is_refused_and_current_policy_stays(agentgym_runtime: Runtime) -> None:
    registry = agentgym_runtime.policies
    registry.promote("bot", registry.register("bot", system_prompt="good").version)
    router = agentgym_runtime.router
    router.set_config(RouterConfig(refresh_interval_s=0.01))
    assert router.resolve("bot", None).system_prompt == "good"
    other = PolicyRegistry(registry.root)  # another process promotes v2, then its file is altered
    other.promote("bot", other.register("bot", system_prompt="fine").version)
    policy_file = registry.artifact_path("bot", 2) / "policy.json"
    policy_file.write_text(policy_file.read_text().replace("fine", "evil"))
    time.sleep(0.05)
    with agentgym.episode(agent="bot") as ep:
        assert agentgym.current_policy().system_prompt == "good"
    assert ep.policy_version == 1
    assert "sha256 mismatch for policy.json" in router.refused[("bot", 2)]
    assert router.stats()["refused"] == {"bot@v2": router.refused[("bot", 2)]}
    with pytest.raises(agentgym.PolicyArtifactError, match="sha256 mismatch"):
        agentgym.load_policy("bot@v2")


def _answer(policy: agentgym.Policy) -> str:
    if policy.llm is not None and policy.llm.endpoint:
        raise ConnectionError(f"connection refused: {policy.llm.endpoint}")
    return f"answer from v{policy.version}"


def _support_agent(question: str, session_id: str) -> tuple[str, list[int]]:
    """A plain agent that applies its pinned policy and falls back when the endpoint is down."""
    seen = []
    with agentgym.episode(agent="support", session_id=session_id):
        policy = agentgym.current_policy()
        assert policy is not None
        seen.append(policy.version)
        call = start_llm_call(
            model="m", input_messages=apply_to_messages(policy, [{"role": "user", "content": question}])
        )
        try:
            text = _answer(policy)
            call.finish(output_messages=[{"role": "assistant", "content": text}])
        except ConnectionError as exc:
            call.fail(exc)
            fallback = fallback_to_incumbent(exc, services.current().router)
            assert fallback is not None
            assert agentgym.current_policy() == fallback
            seen.append(fallback.version)
            retry = start_llm_call(model="m", input_messages=[{"role": "user", "content": question}])
            text = _answer(fallback)
            retry.finish(output_messages=[{"role": "assistant", "content": text}])
    return text, seen


def test_endpoint_down_falls_back_to_incumbent_and_repeated_failures_roll_back(
    agentgym_runtime: Runtime, recorded: Recorded
) -> None:
    registry = agentgym_runtime.policies
    down = registry.register("support", system_prompt="new", llm={"endpoint": "http://127.0.0.1:9/v1", "model": "x"})
    agentgym.promote("support", down.version, canary=1.0)
    results = [_support_agent("where is 7?", f"s{i}") for i in range(4)]
    assert results[:3] == [("answer from v0", [1, 0])] * 3
    assert results[3] == ("answer from v0", [0])  # rolled back after the third failure
    state = registry.state("support")
    assert (state.canary, state.status_of(1)) == (None, PolicyStatus.ROLLED_BACK)
    event = registry.events("support")[-1]
    assert (event.version, event.to_status, event.actor) == (1, "rolled_back", "router")
    assert event.reason == "3 LLM failures within 60s (ConnectionError)"
    assert event.details["last_error"] == "ConnectionError: connection refused: http://127.0.0.1:9/v1"
    chats = recorded.query(
        "SELECT s.episode_id, s.policy_version, s.status_code, s.error_type FROM spans s "
        "WHERE s.operation = 'chat' ORDER BY s.start_unix_nano"
    )
    assert [(c["policy_version"], c["status_code"], c["error_type"]) for c in chats] == [
        (1, "ERROR", "ConnectionError"),
        (0, "UNSET", None),
    ] * 3 + [(0, "UNSET", None)]
    roots = recorded.query(
        "SELECT policy_version, json_extract(attributes, '$.\"agentgym.policy.fallback_from\"') AS fallback "
        "FROM spans WHERE operation = 'invoke_agent' ORDER BY start_unix_nano"
    )
    assert [(r["policy_version"], r["fallback"]) for r in roots] == [(1, "1")] * 3 + [(0, None)]
    episodes = recorded.episodes("support")
    assert [e["policy_version"] for e in episodes] == [1, 1, 1, 0]  # the failure counts against v1


def _gate_router(runtime: Runtime, **kwargs: object) -> PolicyRouter:
    # The default reward is the episode's tool reliability; these tests exercise the reliability
    # test itself, so the reward comparison is kept out of the way (it has unit tests in test_gate).
    router = runtime.router
    router.set_config(
        RouterConfig(
            gate=GateConfig(confidence=0.95, min_tool_calls=100, min_episodes=30, min_rewarded=10_000), **kwargs
        )
    )  # type: ignore[arg-type]
    return router


def test_gate_promotes_a_better_canary_automatically(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    router = _gate_router(agentgym_runtime)
    registry = agentgym_runtime.policies
    agentgym.promote("support", registry.register("support", system_prompt="better").version, canary=0.5)
    rng = random.Random(7)
    for i in range(30):
        scripted_episode("support", f"u{i}", {0: 0.6, 1: 0.95}, rng)
    held = router.evaluate("support")
    assert held.action == "hold" and held.reason.startswith("not enough tool calls yet")
    versions = [scripted_episode("support", f"u{i}", {0: 0.6, 1: 0.95}, rng) for i in range(30, 260)]
    assert 90 < versions.count(1) < 140
    decision = router.evaluate("support")
    assert decision.action == "promote", decision.reason
    truth = recorded.query(
        "SELECT policy_version, sum(tool_calls) AS calls, sum(tool_calls - tool_failures) AS ok FROM episodes "
        "GROUP BY policy_version ORDER BY policy_version"
    )
    assert decision.numbers["candidate"]["tool_calls"] == truth[1]["calls"]
    assert decision.numbers["candidate"]["tool_successes"] == truth[1]["ok"]
    assert decision.numbers["incumbent"]["tool_successes"] == truth[0]["ok"]
    assert decision.numbers["reliability_p_better"] < 0.05
    assert registry.state("support").live == 1
    registry.sync_store()
    events = recorded.query(
        "SELECT to_status, actor, reason, details FROM policy_events WHERE actor = 'gate' AND version = 1 ORDER BY occurred_at"
    )
    assert [(e["to_status"], e["actor"]) for e in events] == [("canary", "gate"), ("live", "gate")]
    assert events[0]["reason"].startswith("gate: hold (not enough tool calls yet")
    assert json.loads(events[1]["details"])["candidate"]["tool_calls"] == truth[1]["calls"]
    assert events[1]["reason"].startswith("gate: better: tool reliability v1 ")


def test_arm_stats_sum_tool_calls_per_session_for_the_cluster_robust_test(
    agentgym_runtime: Runtime, recorded: Recorded
) -> None:
    router = _gate_router(agentgym_runtime)
    rng = random.Random(3)
    # Three sessions of v0: two episodes of 2 calls in "a", one of 3 in "b", and one without a session.
    for session, calls in (("a", 2), ("a", 2), ("b", 3), (None, 1)):
        scripted_episode("support", session, {0: 0.5}, rng, calls=calls)
    agentgym_runtime.flush()
    truth = recorded.query(
        "SELECT coalesce(session_id, episode_id) AS unit, sum(tool_calls) AS n, "
        "sum(tool_calls - tool_failures) AS k FROM episodes GROUP BY unit ORDER BY unit"
    )
    assert sorted(row["n"] for row in truth) == [1, 3, 4]
    stats = router.arm_stats("support", 0, None)
    assert stats.clusters is not None
    assert (stats.episodes, stats.tool_calls, stats.clusters.clusters, stats.clusters.trials) == (4, 8, 3, 8)
    assert stats.clusters == ClusterSums.of([(row["n"], row["k"]) for row in truth])
    assert stats.clusters.successes == stats.tool_successes


def test_gate_promotes_a_canary_over_an_incumbent_that_calls_no_tool(
    agentgym_runtime: Runtime, recorded: Recorded
) -> None:
    # Regression: v0 answering in prose (no tool call at all, a base model before training) left the
    # canary on hold forever ("not enough tool calls yet"); the gate now compares tool use.
    router = _gate_router(agentgym_runtime)
    router.set_config(replace(router.config, gate=GateConfig(min_tool_calls=10, min_episodes=10, min_rewarded=10_000)))
    registry = agentgym_runtime.policies
    agentgym.promote("support", registry.register("support", system_prompt="trained").version, canary=0.5)
    rng = random.Random(3)
    versions = [scripted_episode("support", f"u{i}", {0: 1.0, 1: 1.0}, rng, calls={0: 0, 1: 1}) for i in range(40)]
    decision = router.evaluate("support")
    assert decision.action == "promote", decision.reason
    truth = {
        r["policy_version"]: r["n"]
        for r in recorded.query("SELECT policy_version, count(*) AS n FROM episodes GROUP BY 1")
    }
    assert truth == {0: versions.count(0), 1: versions.count(1)}
    assert decision.numbers["metric"] == "tool_use"
    assert decision.numbers["candidate"]["tool_episodes"] == versions.count(1)
    assert (decision.numbers["incumbent"]["episodes"], decision.numbers["incumbent"]["tool_episodes"]) == (
        versions.count(0),
        0,
    )
    assert registry.state("support").live == 1


def test_gate_rolls_back_a_regression_in_the_background(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    router = _gate_router(agentgym_runtime, evaluate_every=40)
    registry = agentgym_runtime.policies
    agentgym.promote("support", registry.register("support", system_prompt="worse").version, canary=0.5)
    rng = random.Random(11)
    for i in range(300):
        scripted_episode("support", f"u{i}", {0: 0.95, 1: 0.5}, rng)
        if registry.state("support").canary is None:
            break
    # The background judgement writes the pointers, then appends its event (both under the agent's
    # lock); this test reads without the lock, so it waits for both.
    deadline = time.time() + 10
    while time.time() < deadline and (
        registry.state("support").canary is not None
        or not any(e.to_status == "rolled_back" for e in registry.events("support"))
    ):
        time.sleep(0.05)
    state = registry.state("support")
    assert (state.live, state.canary, state.status_of(1)) == (0, None, PolicyStatus.ROLLED_BACK)
    rollback = [e for e in registry.events("support") if e.to_status == "rolled_back"]
    assert len(rollback) == 1 and rollback[0].actor == "gate"
    assert rollback[0].reason is not None and rollback[0].reason.startswith("gate: regression: tool reliability v1")
    assert rollback[0].details["reliability_p_worse"] < 0.05
    assert [d.action for _, d in router.decisions][-1] == "rollback"


def test_repeated_looks_are_a_sequential_test_logged_look_by_look(
    agentgym_runtime: Runtime, recorded: Recorded
) -> None:
    # evaluate_every makes every evaluation one look of the group-sequential gate; it is set out of
    # reach here so that the explicit evaluate() calls below are the only looks (no thread timing).
    router = _gate_router(agentgym_runtime, evaluate_every=1_000_000)  # planned: 4 x 100 canary calls
    registry = agentgym_runtime.policies
    agentgym.promote("support", registry.register("support", system_prompt="better").version, canary=0.5)
    rng = random.Random(5)
    decisions = []
    served = 0
    while registry.state("support").canary is not None and served < 2000:
        for _ in range(40):
            scripted_episode("support", f"u{served}", {0: 0.65, 1: 0.8}, rng)
            served += 1
        decisions.append(router.evaluate("support"))
        if decisions[-1].action == "hold" and decisions[-1].look is not None:
            # Every process reads the same looks back from the log (a restart loses none).
            assert PolicyRouter(PolicyRegistry(registry.root)).looks("support") == router.looks("support")
    assert [d.action for d in decisions] == ["hold", "hold", "hold", "promote"]
    assert [d.look.number if d.look else None for d in decisions] == [None, None, 1, 2]
    assert registry.state("support").live == 1
    registry.sync_store()
    rows = recorded.query(
        "SELECT to_status, reason, details FROM policy_events WHERE actor = 'gate' AND version = 1 ORDER BY occurred_at"
    )
    assert [r["to_status"] for r in rows] == ["canary"] * 3 + ["live"]
    details = [json.loads(r["details"]) for r in rows]
    final = details[-1]["sequential"]
    assert final["max_tool_calls"] == 400
    assert len(final["looks"]) == 2 and final["look"] == final["looks"][-1]
    fractions = [look["tool_calls"] / 400 for look in final["looks"]]
    boundaries = sequential_boundaries(0.05, fractions)
    for k, look in enumerate(final["looks"]):
        assert look["information_fraction"] == fractions[k]
        assert look["boundary_z"] == pytest.approx(boundaries[k])
        assert look["alpha_spent"] == pytest.approx(obrien_fleming_spending(0.05, fractions[k]))
        assert details[k + 2]["sequential"]["look"] == look  # each row logged its own look
    assert [look["tool_calls"] for look in final["looks"]] == [
        d.numbers["candidate"]["tool_calls"] for d in decisions[2:]
    ]
    assert [look["tool_calls"] for look in final["looks"]] == [122, 166]
    assert final["look"]["z"] == details[-1]["reliability_z"] >= final["look"]["boundary_z"]
    # Look 1 (z = 3.29, p = 0.0005) would have promoted under a single test; its boundary was 3.36.
    assert details[2]["reliability_p_better"] < 0.001 and details[2]["decision"] == "hold"
    assert details[0]["sequential"]["look"] is None  # too few calls: no test, no alpha spent
    assert rows[-1]["reason"].startswith("gate: better: tool reliability v1 ")
    assert "(look 2, t=" in rows[-1]["reason"]


def test_gate_rolls_back_on_an_error_spike(agentgym_runtime: Runtime) -> None:
    router = _gate_router(agentgym_runtime)
    registry = agentgym_runtime.policies
    agentgym.promote("support", registry.register("support", system_prompt="fragile").version, canary=0.5)
    for i in range(120):
        try:
            with agentgym.episode(agent="support", session_id=f"e{i}"):
                if agentgym.current_policy().version == 1 and i % 3:
                    raise TimeoutError("upstream")
        except TimeoutError:
            pass
    decision = router.evaluate("support")
    assert decision.action == "rollback"
    assert decision.reason.startswith("error spike: ")
    assert decision.numbers["error_rate_p"] < 0.05
    assert registry.state("support").canary is None


def test_corrupt_pointers_keep_the_last_known_policy_and_fail_changes_clearly(agentgym_runtime: Runtime) -> None:
    registry = agentgym_runtime.policies
    registry.promote("bot", registry.register("bot", system_prompt="good").version)
    router = agentgym_runtime.router
    router.set_config(RouterConfig(refresh_interval_s=0.0))
    assert router.resolve("bot", None).version == 1
    registry.pointers_path("bot").write_text("{ half a file")
    assert router.resolve("bot", None).version == 1
    with pytest.raises(agentgym.PolicyError, match=r"pointers\.json is corrupt .*restore it or remove it"):
        agentgym.promote("bot", 0)
