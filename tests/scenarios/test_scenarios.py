"""Scenarios: tools validate and execute, task generators, rewards, criteria, registry."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import agentgym_runtime as agentgym
from agentgym_runtime.errors import ConfigurationError, ToolArgumentsError
from agentgym_runtime.recording.context import Episode
from agentgym_runtime.scenarios import (
    REWARD_RANGE,
    ExpectedCall,
    Scenario,
    ScenarioNotFoundError,
    Task,
    get_scenario,
    list_scenarios,
    register_scenario,
)
from agentgym_runtime.semconv import ToolOutcome

NAMES = ["customer_support", "code_review", "qa_testing"]


def test_registry_lists_builtins_and_unknown_names_raise_with_the_list() -> None:
    assert set(NAMES) <= set(list_scenarios())
    with pytest.raises(ScenarioNotFoundError) as info:
        get_scenario("customer_suport")
    message = str(info.value)
    assert message.startswith(
        "unknown scenario 'customer_suport' (did you mean 'customer_support'?); available scenarios: "
    )
    for name in NAMES:
        assert name in message
    assert isinstance(info.value, LookupError)
    assert isinstance(info.value, agentgym.AgentGymError)


@pytest.mark.parametrize("name", NAMES)
def test_metadata_and_success_criteria_are_reported(name: str) -> None:
    scenario = get_scenario(name)
    meta = scenario.metadata()
    assert meta["name"] == name
    assert meta["difficulty"] in ("easy", "medium", "hard")
    assert meta["description"] and meta["estimated_time"]
    assert meta["reward_range"] == [0.0, 1.0]
    assert scenario.success_criteria() == {"tool_reliability": 0.95, "cost_reduction": 0.30}


@pytest.mark.parametrize("name", NAMES)
def test_every_expected_call_of_every_task_validates_and_executes(name: str) -> None:
    scenario = get_scenario(name)
    for split in ("train", "heldout"):
        for task in scenario.tasks(split, 60, seed=3):
            box = scenario.toolbox(scenario.new_world(task.world_seed))
            for call in task.expected_calls:
                result = box[call.name].fn(**box[call.name].validate(call.arguments))
                assert isinstance(result, dict)
            # the expected answer is what the tools report
            assert task.expected_answer is not None
            assert task.expected_answer.lower() in repr(result).lower() or task.intent == "customer_lookup"


@pytest.mark.parametrize("name", NAMES)
def test_tools_have_schemas_and_reject_bad_arguments(name: str) -> None:
    scenario = get_scenario(name)
    tools = scenario.tools()
    assert len(tools) >= 3
    for tool in tools:
        schema = tool.parameters
        assert schema["type"] == "object"
        assert schema["required"], f"{tool.name} has no required argument"
        assert tool.description
        with pytest.raises(ToolArgumentsError) as missing:
            tool.validate({})
        assert f"invalid arguments for tool {tool.name!r}" in str(missing.value)
        assert schema["required"][0] in str(missing.value)
        with pytest.raises(ToolArgumentsError, match="no_such_argument: Extra inputs are not permitted"):
            tool.validate({"no_such_argument": 1, **dict.fromkeys(schema["required"], 1)})


def test_customer_support_tools_change_their_world_only() -> None:
    support = get_scenario("customer_support")
    world = support.new_world(0)
    other = support.new_world(0)
    box = support.toolbox(world)
    delivered = next(o for o in world.orders.values() if o.status == "delivered")
    assert box.call("refund_order", {"order_id": delivered.order_id, "reason": "damaged"})["status"] == "refunded"
    assert world.orders[delivered.order_id].status == "refunded"
    assert other.orders[delivered.order_id].status == "delivered"
    with pytest.raises(ValueError, match="already refunded"):
        box.call("refund_order", {"order_id": delivered.order_id, "reason": "late"})
    with pytest.raises(ToolArgumentsError, match="order_id"):
        box.call("get_order", {"order_id": "#1234"})
    with pytest.raises(ToolArgumentsError, match="reason"):
        box.call("refund_order", {"order_id": delivered.order_id, "reason": "bored"})
    with pytest.raises(LookupError, match="no order 1"):
        box.call("get_order", {"order_id": 1})
    with pytest.raises(ToolArgumentsError, match="not valid JSON"):
        box.call("get_order", '{"order_id": 5')


def test_tool_calls_record_outcomes_in_the_store(agentgym_runtime: Any, recorded: Any) -> None:
    support = get_scenario("customer_support")
    world = support.new_world(0)
    box = support.toolbox(world)
    order_id = min(world.orders)
    with agentgym.episode(agent="support") as ep:
        box.call("get_order", {"order_id": order_id})
        with pytest.raises(ToolArgumentsError):
            box.call("get_order", {"order_id": "#7"})
        with pytest.raises(agentgym.UnknownToolError):
            box.call("issue_refund", {"order_id": order_id})
    assert recorded.outcomes(ep.id) == {"ok": 1, "invalid_arguments": 1, "unknown_tool": 1}


@pytest.mark.parametrize("name", NAMES)
def test_task_generators_are_deterministic_and_splits_disjoint(name: str) -> None:
    scenario = get_scenario(name)
    n = 100
    train = scenario.tasks("train", n, seed=7)
    assert [t.to_dict() for t in train] == [t.to_dict() for t in scenario.tasks("train", n, seed=7)]
    assert [t.prompt for t in scenario.tasks("train", n, seed=8)] != [t.prompt for t in train]
    heldout = scenario.tasks("heldout", n, seed=7)
    assert len({t.prompt for t in train}) == n and len({t.prompt for t in heldout}) == n
    assert not {t.prompt for t in train} & {t.prompt for t in heldout}
    assert not {t.id for t in train} & {t.id for t in heldout}
    # different seeds never make a held-out task look like a train task either
    assert not {t.prompt for t in scenario.tasks("train", n, seed=1)} & {t.prompt for t in heldout}
    assert {t.split for t in train} == {"train"} and {t.split for t in heldout} == {"heldout"}
    assert scenario.task_by_id(heldout[42].id) == heldout[42]
    pitfalls = sum(t.pitfall is not None for t in train) / n
    assert 0.2 <= pitfalls <= 0.6


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(NAMES),
    split=st.sampled_from(["train", "heldout"]),
    seed=st.integers(-3, 3),
    indices=st.lists(st.integers(0, 120), min_size=1, max_size=12),
)
def test_a_task_looked_up_by_id_is_the_task_of_the_draw_in_any_order_of_lookups(
    name: str, split: str, seed: int, indices: list[int]
) -> None:
    # task_by_id keeps the longest draw per (split, seed) and answers shorter indices from it:
    # whatever order the ids come in, each is the draw's own task.
    scenario = get_scenario(name)
    drawn = scenario.tasks(split, 121, seed=seed)
    for index in indices:
        assert scenario.task_by_id(f"{name}:{split}:{seed}:{index}") == drawn[index]


def test_task_generator_rejects_bad_requests() -> None:
    support = get_scenario("customer_support")
    with pytest.raises(ConfigurationError, match="split must be 'train' or 'heldout', got 'test'"):
        support.tasks("test", 3)
    with pytest.raises(ConfigurationError, match="not a task id of scenario 'customer_support'"):
        support.task_by_id("code_review:train:0:1")


def _episode(outcomes: dict[ToolOutcome, int], llm_calls: int, metadata: dict[str, Any] | None = None) -> Episode:
    episode = Episode("support", metadata=metadata)
    for outcome, count in outcomes.items():
        for _ in range(count):
            episode.record_outcome(outcome)
    for _ in range(llm_calls):
        episode.record_llm_call(10, 5)
    return episode


@pytest.mark.parametrize("name", NAMES)
def test_reward_stays_in_its_range_for_extreme_episodes(name: str) -> None:
    scenario = get_scenario(name)
    task = scenario.tasks("heldout", 1, seed=0)[0]
    meta = {"task_id": task.id}
    perfect = scenario.reward(_episode({ToolOutcome.OK: 1}, 2, meta), task.expected_answer)
    assert perfect == pytest.approx(1.0)
    worst = scenario.reward(_episode({ToolOutcome.UNKNOWN_TOOL: 50}, 500, meta), "no idea")
    assert worst == pytest.approx(0.0)
    nothing = scenario.reward(_episode({}, 0), None)
    assert nothing == pytest.approx(0.1)  # no tool, no task, no cost
    half = scenario.reward(_episode({ToolOutcome.OK: 1, ToolOutcome.INVALID_ARGUMENTS: 1}, 3, meta), "wrong")
    assert half == pytest.approx(0.6 * 0.5 + 0.1 * (1 - 1 / 4))
    rng = random.Random(0)
    for _ in range(200):
        outcomes = {o: rng.randint(0, 5) for o in ToolOutcome}
        value = scenario.reward(_episode(outcomes, rng.randint(0, 40), meta), rng.choice([task.expected_answer, "x"]))
        assert REWARD_RANGE[0] <= value <= REWARD_RANGE[1]


def test_reward_finds_the_task_among_the_agent_inputs(agentgym_runtime: Any, recorded: Any) -> None:
    support = get_scenario("customer_support")
    task = support.tasks("heldout", 5, seed=0)[4]
    box = support.toolbox(support.new_world(task.world_seed))

    @agentgym.train_online(name="support", scenario=support)
    def agent(t: Task) -> str:
        call = t.expected_calls[0]
        box.call(call.name, call.arguments)
        return f"done: {t.expected_answer}"

    agent(task)
    rows = recorded.episodes("support")
    assert len(rows) == 1
    assert rows[0]["reward"] == pytest.approx(1.0)
    assert rows[0]["scenario"] == "customer_support"


def test_evaluate_success_reports_each_criterion() -> None:
    support = get_scenario("customer_support")
    before = {"tool_reliability": 0.65, "cost_per_episode_usd": 0.0010, "llm_calls_per_episode": 3.0}
    before["tokens_per_episode"] = 400.0
    good = support.evaluate_success(
        before,
        {
            "tool_reliability": 0.97,
            "cost_per_episode_usd": 0.0006,
            "llm_calls_per_episode": 2.0,
            "tokens_per_episode": 260.0,
        },
    )
    assert good.passed and good.met == {"tool_reliability": True, "cost_reduction": True}
    assert good.cost_reduction == pytest.approx(0.4)  # the bill, not an average with calls or tokens
    assert good.llm_call_reduction == pytest.approx(1 / 3)
    assert good.token_reduction == pytest.approx(0.35)
    # Fewer calls and tokens, but a bill only 20% lower (say, longer answers at the output price).
    bad = support.evaluate_success(
        before, {"tool_reliability": 0.90, "cost_per_episode_usd": 0.0008, "llm_calls_per_episode": 2.0}
    )
    assert not bad.passed
    assert bad.met == {"tool_reliability": False, "cost_reduction": False}
    assert bad.cost_reduction == pytest.approx(0.2) and bad.llm_call_reduction == pytest.approx(1 / 3)
    assert bad.token_reduction is None
    assert bad.to_dict()["passed"] is False
    unbilled = support.evaluate_success(before, {"tool_reliability": 0.97, "llm_calls_per_episode": 1.0})
    assert unbilled.cost_reduction is None and unbilled.met["cost_reduction"] is False


def test_users_register_their_own_scenario() -> None:
    @register_scenario
    class Echo(Scenario):
        name = "echo_test"
        description = "Echo text back."
        difficulty = "easy"
        estimated_time = "1 min"

        def new_world(self, seed: int) -> dict[str, Any]:
            return {"seed": seed}

        def build_tools(self, world: dict[str, Any]) -> list[Any]:
            @agentgym.tool
            def echo(text: str) -> dict[str, str]:
                """Return the text."""
                return {"text": text}

            return [echo]

        def make_task(self, world: Any, split: Any, rng: random.Random) -> dict[str, Any]:
            word = f"{split}{rng.randrange(1000)}"
            return {
                "prompt": f"echo {word}",
                "expected_calls": (ExpectedCall("echo", {"text": word}),),
                "expected_answer": word,
                "intent": "echo",
            }

    assert "echo_test" in list_scenarios()
    echo = get_scenario("echo_test")
    assert isinstance(echo, Echo)
    assert [t.prompt for t in echo.tasks("train", 3, seed=1)] == [t.prompt for t in echo.tasks("train", 3, seed=1)]
    with pytest.raises(ConfigurationError, match="fewer than 5000 distinct train tasks"):
        echo.tasks("train", 5000)

    class Incomplete(Scenario):
        name = "incomplete"

    with pytest.raises(ConfigurationError, match="does not implement: build_tools, make_task, new_world"):
        register_scenario(Incomplete)
