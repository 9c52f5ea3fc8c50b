"""How often a trainer draws each recorded prompt: failed ones more, rare failure modes more again."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentgym_runtime.trainers.base import TrainingJobSpec
from agentgym_runtime.trainers.chat_data import ChatSample
from agentgym_runtime.trainers.dataset import RecordedToolCall, Task
from agentgym_runtime.trainers.grpo import GRPOConfig, sample_weights, task_weights
from agentgym_runtime.trainers.sampling import (
    UNKNOWN_FAILURE,
    call_failure_mode,
    prompt_weights,
    recorded_failure_mode,
    target_failure_mode,
)


def _call(name: str | None, outcome: str, arguments: object = None, error_type: str | None = None) -> RecordedToolCall:
    return RecordedToolCall(name=name, outcome=outcome, arguments=arguments, error_type=error_type)


def test_a_failure_mode_is_the_failed_calls_tool_outcome_error_type_and_argument_names() -> None:
    calls = [
        _call("lookup", "ok", {"id": 1}),
        _call("get_order", "invalid_arguments", {"order_id": "#12", "verbose": True}, "ValidationError"),
        _call("refund", "unknown_tool", {}, "unknown_tool"),
    ]
    assert recorded_failure_mode(calls) == (
        "get_order",
        "invalid_arguments",
        "ValidationError",
        ("order_id", "verbose"),
    )
    assert recorded_failure_mode(calls[:1]) is None
    # A wrong type and a missing argument on the same tool are different modes.
    assert call_failure_mode("get_order", "invalid_arguments", {}) != call_failure_mode(
        "get_order", "invalid_arguments", {"order_id": "x"}
    )
    # So are text that is not JSON and a wrong type with the same argument names (the recorder
    # keeps what it could read of the text): the error type tells them apart.
    unparsable = _call("open_ticket", "invalid_arguments", {"order_id": 1, "priority": "high"}, "invalid_arguments")
    wrong_type = _call("open_ticket", "invalid_arguments", {"order_id": "#1", "priority": "high"}, "ValidationError")
    assert recorded_failure_mode([unparsable]) != recorded_failure_mode([wrong_type])
    # Arguments recorded as JSON text are read; text that is not JSON has no names.
    assert call_failure_mode("t", "invalid_arguments", '{"b": 1, "a": 2}') == (
        "t",
        "invalid_arguments",
        None,
        ("a", "b"),
    )
    assert call_failure_mode("t", "invalid_arguments", '{"b": 1, "a"') == ("t", "invalid_arguments", None, ())
    assert call_failure_mode(None, None, None) == (None, "unknown", None, ())


def test_the_failure_mode_of_an_assistant_turn_skips_calls_that_never_ran() -> None:
    target = {
        "tool_calls": [
            {"id": "1", "type": "function", "function": {"name": "a", "arguments": '{"x": 1}'}},
            {"id": "2", "type": "function", "function": {"name": "b", "arguments": '{"y": 1}'}},
            {"id": "3", "type": "function", "function": {"name": "c", "arguments": "{}"}},
        ]
    }
    assert target_failure_mode(target, ["ok", None, "tool_error"]) == ("c", "tool_error", None, ())
    assert target_failure_mode(target, ["ok", None, "tool_error"], [None, None, "TimeoutError"]) == (
        "c",
        "tool_error",
        "TimeoutError",
        (),
    )
    assert target_failure_mode(target, ["ok", "ok", "ok"]) is None
    assert target_failure_mode({"content": "an answer"}, []) is None


def test_rare_failure_modes_are_drawn_more_often_by_their_repeat_factor() -> None:
    # 128 failures of one kind, 9 of another, 152 recordings that did not fail (a customer_support snapshot, simplified).
    modes = [None] * 152 + ["wrong_type"] * 128 + ["missing_argument"] * 9
    plain = prompt_weights(modes, failed_weight=3.0)
    assert set(plain[:152]) == {1.0} and set(plain[152:]) == {3.0}
    balanced = prompt_weights(modes, failed_weight=3.0, rare_threshold=0.25)
    assert balanced[:152] == plain[:152]
    assert balanced[152] == 3.0  # 93% of the failures: above the threshold, unchanged
    assert balanced[-1] == pytest.approx(3.0 * math.sqrt(0.25 / (9 / 137)))
    # The rare mode's share of the draws rises from 4.8% (27 of 563) to 9.0%.
    assert sum(plain[-9:]) / sum(plain) == pytest.approx(27 / 563)
    assert sum(balanced[-9:]) / sum(balanced) == pytest.approx(0.0895, abs=5e-4)


def test_bad_weights_are_refused_naming_the_value() -> None:
    with pytest.raises(ValueError, match="failed_weight must be > 0, got 0"):
        prompt_weights([None], failed_weight=0)
    with pytest.raises(ValueError, match=r"rare_threshold must be in \[0, 1\], got 1.5"):
        prompt_weights([None], failed_weight=1.0, rare_threshold=1.5)
    with pytest.raises(ValueError, match="rare_failure_threshold"):
        GRPOConfig(rare_failure_threshold=-0.1)


@given(
    modes=st.lists(st.one_of(st.none(), st.sampled_from(["a", "b", "c", UNKNOWN_FAILURE])), max_size=60),
    failed_weight=st.floats(min_value=0.1, max_value=10.0),
    threshold=st.floats(min_value=0.0, max_value=1.0),
)
def test_weights_never_shrink_a_failure_and_equal_modes_weigh_the_same(
    modes: list[object], failed_weight: float, threshold: float
) -> None:
    weights = prompt_weights(modes, failed_weight=failed_weight, rare_threshold=threshold)
    assert len(weights) == len(modes)
    by_mode: dict[object, set[float]] = {}
    for mode, weight in zip(modes, weights, strict=True):
        if mode is None:
            assert weight == 1.0
        else:
            assert weight >= failed_weight
            by_mode.setdefault(mode, set()).add(weight)
    assert all(len(values) == 1 for values in by_mode.values())
    # A rarer mode never weighs less than a more common one.
    counts = {mode: modes.count(mode) for mode in by_mode}
    for a in by_mode:
        for b in by_mode:
            if counts[a] < counts[b]:
                assert next(iter(by_mode[a])) >= next(iter(by_mode[b]))


def _spec(base_version: int) -> TrainingJobSpec:
    return TrainingJobSpec(
        run_id="r", agent="bot", trainer="grpo", snapshot_dir="s", output_dir="o", base_policy_version=base_version
    )


def _task(agent: str, version: int, ok: bool, tool: str = "get_order") -> Task:
    call = _call(tool, "ok" if ok else "invalid_arguments", {"order_id": 1}, None if ok else "ValidationError")
    return Task(
        episode_id=f"{agent}-{version}-{tool}-{ok}",
        agent=agent,
        policy_version=version,
        tool_calls=[call],
        tool_reliability=1.0 if ok else 0.0,
    )


def test_a_later_job_weighs_the_failures_of_the_version_it_trains_from_and_of_teachers() -> None:
    # A second job (from v1): the snapshot holds v0's failures recorded while the first job
    # trained, v1's own, and a teacher's.
    tasks = [
        _task("bot", 0, False),
        _task("bot", 1, False, "refund"),
        _task("teacher", 0, False),
        _task("bot", 1, True),
    ]
    config = GRPOConfig(failed_episode_weight=3.0)
    assert config.base_failures_only is True
    assert task_weights(config, _spec(1), tasks) == [1.0, 3.0, 3.0, 1.0]
    # The first job (from v0) weighs v0's failures; turned off, every failure weighs as before.
    assert task_weights(config, _spec(0), tasks) == [3.0, 1.0, 3.0, 1.0]
    assert task_weights(config.model_copy(update={"base_failures_only": False}), _spec(1), tasks) == [3.0] * 3 + [1.0]
    # The repeat factor counts only the failures that are weighed: v1's one refund mistake is
    # half of them (above the threshold), not a third.
    rare = GRPOConfig(failed_episode_weight=2.0, rare_failure_threshold=0.75)
    assert task_weights(rare, _spec(1), tasks) == pytest.approx([1.0, 2.0 * math.sqrt(1.5), 2.0 * math.sqrt(1.5), 1.0])


def test_recorded_chat_turns_are_weighed_by_the_same_rule() -> None:
    def turn(agent: str, version: int, outcome: str) -> ChatSample:
        call = {"id": "c", "type": "function", "function": {"name": "get_order", "arguments": '{"order_id": 1}'}}
        return ChatSample(
            episode_id=f"{agent}{version}{outcome}",
            agent=agent,
            policy_version=version,
            target={"role": "assistant", "tool_calls": [call]},
            outcomes=[outcome],
            error_types=[None if outcome == "ok" else "TimeoutError"],
        )

    samples = [turn("bot", 0, "tool_error"), turn("bot", 2, "tool_error"), turn("bot", 2, "ok")]
    config = GRPOConfig(failed_episode_weight=4.0)
    assert sample_weights(config, _spec(2), samples) == [1.0, 4.0, 1.0]
    assert sample_weights(config, _spec(0), samples) == [4.0, 1.0, 1.0]
