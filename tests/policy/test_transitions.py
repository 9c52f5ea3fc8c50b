"""The registry's transitions as pure functions, and the statistics' documented direction."""

from __future__ import annotations

import pytest

from agentgym_runtime.demo.loop import two_proportion_z as demo_two_proportion_z
from agentgym_runtime.policy.errors import PolicyConflictError, PolicyNotFoundError
from agentgym_runtime.policy.registry import PolicyState, PolicyStatus, transitions
from agentgym_runtime.policy.statistics import two_proportion_z


def test_transitions_are_pure_and_walk_the_state_machine() -> None:
    initial = PolicyState.initial("bot", 0.0)
    registered, events = transitions.register(initial, 1, 1.0, actor="t", reason=None, digest="d1")
    assert initial.versions.keys() == {0}  # the input state is never changed
    assert (registered.status_of(1), registered.versions[1].digest, events[0].to_status) == (
        PolicyStatus.CANDIDATE,
        "d1",
        "candidate",
    )
    canary, events = transitions.start_canary(registered, 1, 0.25, 2.0, actor="t")
    assert (canary.canary, canary.canary_share, canary.canary_since) == (1, 0.25, 2.0)
    assert [(e.version, e.from_status, e.to_status) for e in events] == [(1, "candidate", "canary")]
    live, events = transitions.promote(canary, 1, 3.0, actor="gate", reason="better")
    assert (live.live, live.canary, live.live_history, live.status_of(0)) == (1, None, (0,), PolicyStatus.RETIRED)
    assert [(e.version, e.to_status) for e in events] == [(0, "retired"), (1, "live")]
    back, events = transitions.rollback(live, None, 4.0, actor="router")
    assert (back.live, back.status_of(1), back.status_of(0)) == (0, PolicyStatus.ROLLED_BACK, PolicyStatus.LIVE)
    same, events = transitions.log_decision(back, 1, 5.0, actor="gate", reason="hold", details={"z": 1.0})
    assert same is back and events[0].details == {"z": 1.0}
    with pytest.raises(PolicyConflictError, match="nothing to roll back for 'bot'"):
        transitions.rollback(back, None, 6.0, actor="t")
    with pytest.raises(PolicyNotFoundError, match="agent 'bot' has no version 7; versions: 0, 1"):
        transitions.pin(back, 7, 6.0, actor="t")
    with pytest.raises(PolicyConflictError, match="bot@v1 already exists"):
        transitions.register(back, 1, 6.0, actor="t", reason=None)


def test_one_two_proportion_z_with_a_documented_direction() -> None:
    z, p = two_proportion_z(95, 100, 60, 100)  # the first proportion is higher: z > 0
    assert z == pytest.approx(5.9267, abs=1e-4) and p < 1e-8
    # The demo asks "did B (after) beat A (before)": the same test with the arguments swapped.
    assert demo_two_proportion_z(60, 100, 95, 100) == (z, p)
    assert two_proportion_z(60, 100, 95, 100)[0] == pytest.approx(-z)
