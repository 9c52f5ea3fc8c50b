"""The demo compares versions on held-out tasks none of which was served (their prompts were trained on)."""

from __future__ import annotations

import pytest

from agentgym_runtime.demo.loop import DemoConfig, unserved_tasks
from agentgym_runtime.errors import ConfigurationError
from agentgym_runtime.scenarios import get_scenario


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


def test_too_many_asked_names_the_scenario_and_the_count() -> None:
    scenario = get_scenario("qa_testing")
    with pytest.raises(
        ConfigurationError, match=r"scenario 'qa_testing' cannot give 5000 held-out tasks besides the 400 served"
    ):
        unserved_tasks(scenario, scenario.tasks("heldout", 400, seed=1), 5000, seed=7)
