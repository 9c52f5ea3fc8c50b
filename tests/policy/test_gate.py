"""The gate's statistics and decisions on known numbers."""

from __future__ import annotations

import math

import pytest

from agentgym_runtime.policy.gate import (
    ArmStats,
    Gate,
    GateConfig,
    normal_ppf,
    normal_sf,
    two_proportion_z,
    welch_z,
)


def test_normal_tails_and_quantiles_match_tables() -> None:
    assert normal_sf(1.959963984540054) == pytest.approx(0.025, abs=1e-12)
    assert normal_sf(0.0) == 0.5
    assert normal_ppf(0.975) == pytest.approx(1.959963984540054, abs=1e-8)
    assert normal_ppf(0.001) == pytest.approx(-3.090232306167813, abs=1e-8)
    with pytest.raises(ValueError, match=r"p must be in \(0, 1\), got 1.0"):
        normal_ppf(1.0)


def test_two_proportion_z_matches_the_textbook_value() -> None:
    z, p = two_proportion_z(90, 100, 70, 100)
    pooled = 160 / 200
    expected = 0.2 / math.sqrt(pooled * (1 - pooled) * (2 / 100))
    assert z == pytest.approx(expected) == pytest.approx(3.5355339)
    assert p == pytest.approx(normal_sf(expected))
    assert two_proportion_z(10, 10, 10, 10) == (0.0, 1.0)
    assert two_proportion_z(0, 0, 5, 10) == (0.0, 1.0)


def test_welch_z() -> None:
    z, p = welch_z(0.8, 0.04, 50, 0.7, 0.04, 50)
    assert z == pytest.approx(0.1 / math.sqrt(0.04 / 50 * 2))
    assert p == pytest.approx(normal_sf(z))


def _arm(version: int, calls: int, ok: int, episodes: int = 100, errors: int = 0, **kw: float) -> ArmStats:
    return ArmStats(version, episodes, calls, ok, errors, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("candidate", "incumbent", "action", "reason"),
    [
        (_arm(2, 150, 140), _arm(1, 150, 120), "promote", "better: tool reliability v2 140/150"),
        (_arm(2, 150, 120), _arm(1, 150, 140), "rollback", "regression: tool reliability v2 120/150"),
        (_arm(2, 150, 131), _arm(1, 150, 129), "hold", "no significant difference yet"),
        (_arm(2, 50, 50), _arm(1, 500, 100), "hold", "not enough tool calls yet: v2 50, v1 500 (need 100 each)"),
        (_arm(2, 150, 150, errors=20), _arm(1, 150, 100, errors=2), "rollback", "error spike: 20/100 episodes"),
        (
            _arm(2, 150, 149, rewarded=100, reward_mean=0.4, reward_var=0.05),
            _arm(1, 150, 120, rewarded=100, reward_mean=0.7, reward_var=0.05),
            "rollback",
            "reward regression",
        ),
    ],
)
def test_decisions(candidate: ArmStats, incumbent: ArmStats, action: str, reason: str) -> None:
    decision = Gate(GateConfig(confidence=0.95, min_tool_calls=100, min_episodes=30)).decide(candidate, incumbent)
    assert decision.action == action
    assert reason in decision.reason
    assert decision.numbers["candidate"]["tool_calls"] == candidate.tool_calls
    assert decision.numbers["confidence"] == 0.95


def test_confidence_changes_the_verdict() -> None:
    candidate, incumbent = _arm(2, 200, 184), _arm(1, 200, 170)  # z ~ 2.19: p ~ 0.014
    assert Gate(GateConfig(confidence=0.95, min_tool_calls=100)).decide(candidate, incumbent).action == "promote"
    assert Gate(GateConfig(confidence=0.99, min_tool_calls=100)).decide(candidate, incumbent).action == "hold"
    with pytest.raises(ValueError, match="confidence must be in"):
        GateConfig(confidence=1.0)
