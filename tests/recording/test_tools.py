"""@agentgym.tool and Toolbox: schema, validation, outcomes recorded per call."""

from __future__ import annotations

import asyncio
from typing import Literal

import pytest
from pydantic import BaseModel

import agentgym_runtime as agentgym
from agentgym_runtime.testing import Recorded


class Address(BaseModel):
    city: str
    zip_code: str


@agentgym.tool
def refund(order_id: int, amount: float, reason: Literal["damaged", "late", "other"] = "other") -> str:
    """Refund part of an order.

    Args:
        order_id: The order to refund.
        amount: Amount in euros.
        reason: Why the customer wants a refund.
    """
    if amount > 100:
        raise ValueError("refunds above 100 need a human")
    return f"refunded {amount} on {order_id} ({reason})"


@agentgym.tool(name="ship", description="Ship to an address.")
def ship_order(order_id: int, address: Address) -> str:
    return f"{order_id} -> {address.city}"


def test_schema_from_type_hints_and_docstring() -> None:
    assert refund.name == "refund"
    assert refund.description == "Refund part of an order."
    schema = refund.parameters
    assert schema["required"] == ["order_id", "amount"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["order_id"] == {"type": "integer", "description": "The order to refund."}
    assert schema["properties"]["reason"]["enum"] == ["damaged", "late", "other"]
    assert refund.openai_schema()["function"]["name"] == "refund"
    assert ship_order.name == "ship"
    assert ship_order.definition()["description"] == "Ship to an address."
    assert "Address" in str(ship_order.parameters) or "$defs" in ship_order.parameters


def test_valid_calls_run_and_convert(recorded: Recorded) -> None:
    with agentgym.episode(agent="support") as ep:
        assert refund(order_id=1, amount=5) == "refunded 5.0 on 1 (other)"
        assert refund(2, 3.5, "late") == "refunded 3.5 on 2 (late)"
        assert ship_order(order_id=3, address={"city": "Lyon", "zip_code": "69001"}) == "3 -> Lyon"
    assert ep.outcomes == {"ok": 3}
    calls = recorded.tool_calls(ep.id)
    assert [c["tool_name"] for c in calls] == ["refund", "refund", "ship"]
    assert calls[0]["arguments"] == '{"order_id":1,"amount":5}'
    assert calls[0]["result"] == '"refunded 5.0 on 1 (other)"'
    assert {c["outcome"] for c in calls} == {"ok"}


@pytest.mark.parametrize(
    ("kwargs", "argument", "fragment"),
    [
        ({"amount": 5}, "order_id", "Field required"),
        ({"order_id": "abc", "amount": 5}, "order_id", "valid integer"),
        ({"order_id": 1, "amount": 5, "reason": "bored"}, "reason", "'damaged', 'late' or 'other'"),
        ({"order_id": 1, "amount": 5, "coupon": "X"}, "coupon", "Extra inputs are not permitted"),
    ],
)
def test_invalid_arguments_do_not_run_the_tool(
    recorded: Recorded, kwargs: dict[str, object], argument: str, fragment: str
) -> None:
    with agentgym.episode(agent="support") as ep, pytest.raises(agentgym.ToolArgumentsError) as caught:
        refund(**kwargs)  # type: ignore[arg-type]
    assert caught.value.tool == "refund"
    assert caught.value.errors[0]["argument"] == argument
    assert fragment in str(caught.value)
    assert str(caught.value).startswith(f"invalid arguments for tool 'refund': {argument}:")
    assert ep.outcomes == {"invalid_arguments": 1}
    (call,) = recorded.tool_calls(ep.id)
    assert (call["outcome"], call["error_type"]) == ("invalid_arguments", "invalid_arguments")


def test_raising_tool_is_tool_error_and_exception_unchanged(recorded: Recorded) -> None:
    with agentgym.episode(agent="support") as ep, pytest.raises(ValueError, match="need a human"):
        refund(order_id=1, amount=500)
    (call,) = recorded.tool_calls(ep.id)
    assert (call["outcome"], call["error_type"]) == ("tool_error", "ValueError")
    (span,) = [s for s in recorded.spans(ep.id) if s["operation"] == "execute_tool"]
    assert span["status_code"] == "ERROR"
    assert "need a human" in span["status_message"]
    assert '"exception"' in span["events"]


async def test_async_tool(recorded: Recorded) -> None:
    @agentgym.tool
    async def fetch(url: str) -> int:
        await asyncio.sleep(0)
        return len(url)

    with agentgym.episode(agent="web") as ep:
        assert await fetch(url="https://x.y") == 11
        with pytest.raises(agentgym.ToolArgumentsError):
            await fetch(url=None)  # type: ignore[arg-type]
    assert ep.outcomes == {"ok": 1, "invalid_arguments": 1}


def test_tool_rejects_var_args() -> None:
    def bad(*items: int) -> int:
        return sum(items)

    with pytest.raises(agentgym.ConfigurationError, match="parameter 'items' must be a named parameter"):
        agentgym.tool(bad)


def test_toolbox_dispatch_records_every_failure_kind(recorded: Recorded) -> None:
    box = agentgym.Toolbox([refund, ship_order])
    assert box.names == ["refund", "ship"]
    assert len(box.definitions()) == 2
    with agentgym.episode(agent="dispatcher") as ep:
        assert box.call("refund", '{"order_id": 9, "amount": 1}', call_id="c1") == "refunded 1.0 on 9 (other)"
        with pytest.raises(agentgym.UnknownToolError, match="unknown tool 'cancel'; available tools: refund, ship"):
            box.call("cancel", {"order_id": 1}, call_id="c2")
        with pytest.raises(agentgym.ToolArgumentsError, match="not valid JSON"):
            box.call("refund", '{"order_id": 9, amount: 1}', call_id="c3")
        with pytest.raises(agentgym.ToolArgumentsError, match="expected an object, got list"):
            box.call("refund", "[1, 2]", call_id="c4")
        with pytest.raises(ValueError, match="need a human"):
            box.call("refund", {"order_id": 9, "amount": 1000}, call_id="c5")
    assert ep.outcomes == {"ok": 1, "unknown_tool": 1, "invalid_arguments": 2, "tool_error": 1}
    assert ep.tool_reliability == pytest.approx(0.2)
    calls = {c["call_id"]: c["outcome"] for c in recorded.tool_calls(ep.id)}
    assert calls == {
        "c1": "ok",
        "c2": "unknown_tool",
        "c3": "invalid_arguments",
        "c4": "invalid_arguments",
        "c5": "tool_error",
    }
    (episode,) = recorded.episodes()
    assert (episode["tool_calls"], episode["tool_failures"], episode["tool_reliability"]) == (5, 4, 0.2)


def test_toolbox_rejects_duplicate_names() -> None:
    with pytest.raises(agentgym.ConfigurationError, match="two tools are named 'refund'"):
        agentgym.Toolbox([refund, refund])


def test_tool_outside_episode_is_still_recorded(recorded: Recorded) -> None:
    refund(order_id=1, amount=2)
    (call,) = recorded.tool_calls()
    assert call["episode_id"] is None
    assert call["outcome"] == "ok"


def test_tools_made_from_one_def_share_their_schema_and_keep_their_own_behaviour() -> None:
    from agentgym_runtime.errors import ToolArgumentsError
    from agentgym_runtime.tools import Tool

    def make(offset: int) -> Tool[..., int]:
        def add(value: int, label: str = "x") -> int:
            """Add the offset.

            Args:
                value: The number.
                label: A label.
            """
            return value + offset

        return Tool(add)

    first, second = make(1), make(100)
    assert first._model is second._model  # built once for closures of the same def
    assert first(value=1) == 2 and second(value=1) == 101
    assert first.parameters == second.parameters
    first.parameters["properties"]["value"]["description"] = "changed"  # each tool owns its copy
    assert second.parameters["properties"]["value"]["description"] == "The number."
    with pytest.raises(ToolArgumentsError, match="value"):
        second(value="not a number")

    def other(value: str) -> str:
        return value

    assert Tool(other)._model is not first._model
    renamed = Tool(make(1).fn, name="add_renamed")
    assert renamed.name == "add_renamed"
    assert renamed._model is not first._model


def test_a_tool_with_an_unhashable_default_builds_its_own_schema() -> None:
    from agentgym_runtime.tools import Tool

    def tagged(tags: list[str] = ["a"]) -> int:  # noqa: B006 - the default is the point
        return len(tags)

    one, two = Tool(tagged), Tool(tagged)
    assert one._model is not two._model
    assert one() == 1 and two(tags=["a", "b"]) == 2
