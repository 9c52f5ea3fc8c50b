"""The demo's traffic and its measurement: versions are compared on held-out tasks none of which was
served (their prompts were trained on), and the served traffic keeps the same mix of mistakes from
its first request to its last (the live stopping rule reads it)."""

from __future__ import annotations

from collections import Counter

import pytest

from agentgym_runtime.demo.loop import DemoConfig, served_traffic, unserved_tasks
from agentgym_runtime.errors import ConfigurationError
from agentgym_runtime.scenarios import get_scenario
from agentgym_runtime.scenarios.base import Task


@pytest.mark.parametrize("name", ["customer_support", "code_review", "qa_testing"])
@pytest.mark.parametrize("n_served", [400, DemoConfig().served_tasks])
def test_no_served_prompt_is_measured(name: str, n_served: int) -> None:
    scenario = get_scenario(name)
    served = scenario.tasks("heldout", n_served, seed=1)
    # The demo's earlier draw (the first 300 of seed 7) held 3-8 served prompts per scenario.
    assert any(t.prompt in {s.prompt for s in served} for t in scenario.tasks("heldout", 300, seed=7))
    fresh = unserved_tasks(scenario, served, 300, seed=7)
    assert len(fresh) == 300
    assert len({t.prompt for t in fresh}) == 300
    assert not {t.prompt for t in fresh} & {t.prompt for t in served}
    assert [t.id for t in unserved_tasks(scenario, served, 300, seed=7)] == [t.id for t in fresh]


@pytest.mark.parametrize("name", ["customer_support", "code_review", "qa_testing"])
def test_the_measurement_draws_from_several_worlds_and_never_a_served_prompt(name: str) -> None:
    scenario = get_scenario(name)
    config = DemoConfig()
    served = served_traffic(scenario, config.served_tasks, config.seed + 1, config.served_block)
    fresh = unserved_tasks(scenario, served, 300, seed=7, block=50)
    assert len(fresh) == 300 and len({t.prompt for t in fresh}) == 300
    assert not {t.prompt for t in fresh} & {t.prompt for t in served}
    worlds = Counter(t.world_seed for t in fresh)
    # Six worlds, 7, 1007, ..., 5007 (a world's draw loses the odd prompt served or drawn before).
    assert sorted(worlds)[:6] == [7, 1007, 2007, 3007, 4007, 5007]
    assert all(n <= 50 for n in worlds.values())
    assert sum(n >= 45 for n in worlds.values()) >= 5
    assert [t.id for t in unserved_tasks(scenario, served, 300, seed=7, block=50)] == [t.id for t in fresh]


def test_a_block_size_below_one_is_refused_with_its_value() -> None:
    with pytest.raises(ConfigurationError, match=r"block must be >= 1, got 0"):
        unserved_tasks(get_scenario("qa_testing"), [], 10, seed=7, block=0)


def test_too_many_asked_names_the_scenario_and_the_count() -> None:
    scenario = get_scenario("qa_testing")
    with pytest.raises(
        ConfigurationError, match=r"scenario 'qa_testing' cannot give 5000 held-out tasks besides the 400 served"
    ):
        unserved_tasks(scenario, scenario.tasks("heldout", 400, seed=1), 5000, seed=7)


def shares(tasks: list[Task]) -> dict[str, float]:
    counts = Counter(t.pitfall or "none" for t in tasks)
    return {kind: n / len(tasks) for kind, n in counts.items()}


@pytest.mark.parametrize("name", ["customer_support", "code_review", "qa_testing"])
@pytest.mark.parametrize("seed", [1, 2, 3, 6])
def test_the_traffic_a_promoted_version_serves_is_as_hard_as_the_traffic_before(name: str, seed: int) -> None:
    scenario = get_scenario(name)
    traffic = served_traffic(scenario, DemoConfig().served_tasks, seed, DemoConfig().served_block)
    assert len(traffic) == 1000 and len({t.prompt for t in traffic}) == 1000
    # Trained on: about the first 300 requests; served by the promoted version: 300-900.
    before, after = shares(traffic[:300]), shares(traffic[300:900])
    mistakes = {kind: share for kind, share in before.items() if kind != "none" and share >= 0.05}
    assert mistakes
    for kind, share in mistakes.items():
        assert after.get(kind, 0.0) >= 0.7 * share, (kind, share, after.get(kind))
    # Requests are rebuilt from their ids by the serving agent, whatever world they came from.
    assert all(scenario.task_by_id(t.id).prompt == t.prompt for t in traffic[::97])


def test_one_long_draw_from_one_world_gets_easier_as_it_goes() -> None:
    """Why the traffic comes in blocks: qa_testing's mistakes fell to a fifth of their share."""
    scenario = get_scenario("qa_testing")
    draw = scenario.tasks("heldout", 1000, seed=1)
    before, after = shares(draw[:300]), shares(draw[300:900])
    assert min(after.get(kind, 0.0) / share for kind, share in before.items() if kind != "none" and share >= 0.05) < 0.3
    traffic = served_traffic(scenario, 1000, 1)
    assert {t.world_seed for t in traffic} == {1, 1001, 2001, 3001, 4001, 5001, 6001}


def test_traffic_a_split_cannot_give_is_refused_with_the_count() -> None:
    with pytest.raises(ConfigurationError, match=r"block must be >= 1, got 0"):
        served_traffic(get_scenario("qa_testing"), 10, 1, block=0)
