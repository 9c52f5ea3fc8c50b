"""Bad input at the schema check: a clear outcome and message per call, never an exception into the host."""

from __future__ import annotations

from typing import Any

import pytest

import agentgym_runtime as agentgym
from agentgym_runtime.adapters.checking import start_checked_tool_call
from agentgym_runtime.recording.runtime import Runtime
from agentgym_runtime.testing import Recorded

SCHEMA = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"], "additionalProperties": False}


@pytest.mark.parametrize(
    ("schema", "arguments", "outcome", "needle"),
    [
        (SCHEMA, {"q": "x" * 10_000_000}, "ok", None),  # 10 MB of valid arguments
        (SCHEMA, {"q": "x" * 10_000_000, "extra": 1}, "invalid_arguments", "extra"),
        (SCHEMA, "not json {", "invalid_arguments", "expected an object, got str"),
        ({"$ref": "#"}, {"q": "x"}, "ok", "recursive $ref"),
        ({"type": "object", "properties": {"q": {"type": 12}}}, {"q": "x"}, "ok", "schema is invalid"),
    ],
)
def test_bad_input_gets_an_outcome_and_a_message(
    agentgym_runtime: Runtime, recorded: Recorded, schema: Any, arguments: Any, outcome: str, needle: str | None
) -> None:
    with agentgym.episode(agent="bad-input") as episode:
        start_checked_tool_call("lookup", arguments=arguments, schema=schema).succeed("fine")

    assert episode.outcomes == {outcome: 1}
    (row,) = recorded.tool_calls(episode.id)
    assert row["outcome"] == outcome
    text = " ".join(str(v) for v in recorded.spans(episode.id)[-1].values())
    if needle is not None:
        assert needle in text
