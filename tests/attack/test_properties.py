"""Property-based attacks (hypothesis) on what agents pass through the middleware.

Sized for a 2-core CI machine: few examples each, no deadline. Every property: the host sees
exactly what the agent returned or raised, and after ``flush()`` the counts are exact.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Imported whole before hypothesis runs: the exporter imports pyarrow (hence numpy) on a background
# thread, and hypothesis looks numpy up in sys.modules while drawing; a half-imported numpy breaks it.
import numpy  # noqa: F401
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agentgym_runtime as agentgym
from agentgym_runtime.config import settings_from_environment
from agentgym_runtime.errors import ConfigurationError, ToolArgumentsError
from agentgym_runtime.recording.runtime import Runtime

FAST = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
# Text with lone surrogates, control characters and secrets-like shapes included.
TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=40) | st.sampled_from(
    ["\ud800", "a\udfffb", "api_key=abc", "Bearer xxxxxxxxxx", "", "\x00"]
)
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    rt = agentgym.configure(home=str(tmp_path_factory.mktemp("prop")), schedule_delay_ms=60_000)
    yield rt
    agentgym.shutdown()


def _exact_after_flush(rt: Runtime, before: dict[str, Any], episodes: int) -> None:
    assert agentgym.flush()
    after = rt.stats()
    assert (
        after["episodes_written"] + after["rows_quarantined"] - before["episodes_written"] - before["rows_quarantined"]
        >= episodes
    )
    assert after["spans_lost"] == 0
    assert after["pending_rows"] == 0
    assert after["internal_errors"] == before["internal_errors"]


@FAST
@given(arguments=st.dictionaries(TEXT, JSONISH, max_size=5), result=JSONISH)
def test_any_tool_arguments_and_result(runtime: Runtime, arguments: dict[str, Any], result: Any) -> None:
    before = runtime.stats()

    @agentgym.tool
    def anything(payload: Any = None) -> Any:
        return result

    box = agentgym.Toolbox([anything])

    @agentgym.train_online(name="prop-tools")
    def agent(args: dict[str, Any]) -> Any:
        try:
            return box.call("anything", args)
        except ToolArgumentsError as exc:
            return exc

    got = agent(arguments)
    if isinstance(got, ToolArgumentsError):
        assert set(arguments) - {"payload"}  # only an unknown argument is refused
    else:
        assert got is result
    _exact_after_flush(runtime, before, 1)


@FAST
@given(raw=TEXT | st.builds(json.dumps, JSONISH) | st.builds(lambda d: "[" * d + "]" * d, st.integers(0, 50_000)))
def test_any_raw_argument_text_is_a_tool_error_or_a_call(runtime: Runtime, raw: str) -> None:
    @agentgym.tool
    def take(payload: Any = None) -> str:
        return "ran"

    box = agentgym.Toolbox([take])
    with agentgym.episode(agent="prop-raw") as ep:
        try:
            assert box.call("take", raw) == "ran"
        except ToolArgumentsError:
            pass
    assert sum(ep.outcomes.values()) == 1


@FAST
@given(message=TEXT, args=st.lists(JSONISH, max_size=3), hostile=st.booleans())
def test_the_agents_exception_passes_unchanged(runtime: Runtime, message: str, args: list[Any], hostile: bool) -> None:
    class AgentFailure(Exception):
        def __str__(self) -> str:
            if hostile:
                raise RuntimeError("hostile __str__")
            return message

    failure = AgentFailure(*args)

    @agentgym.tool
    def breaks() -> str:
        raise failure

    @agentgym.train_online(name="prop-errors")
    def agent() -> None:
        breaks()

    with pytest.raises(AgentFailure) as caught:
        agent()
    assert caught.value is failure
    assert agentgym.flush()


@FAST
@given(
    value=st.one_of(st.integers(), st.floats(), st.booleans(), st.none(), TEXT, st.just(10**400), st.just(-(10**5000))),
    comment=st.none() | TEXT,
    label=st.none() | TEXT,
)
def test_feedback_stores_or_refuses_clearly(runtime: Runtime, value: Any, comment: Any, label: Any) -> None:
    with agentgym.episode(agent="prop-feedback") as ep:
        pass
    refused = (
        (value is None and label is None)
        or isinstance(value, str)
        or (isinstance(value, float) and not math.isfinite(value))
        or (type(value) is int and abs(value) >= 2**1024)
    )
    if refused:
        with pytest.raises(ConfigurationError, match="feedback"):
            agentgym.feedback(ep, value, comment=comment, label=label)
    else:
        assert len(agentgym.feedback(ep, value, comment=comment, label=label)) == 32
    assert agentgym.flush()
    assert runtime.stats()["spans_lost"] == 0


SETTINGS = {
    "AGENTGYM_REDACT": st.sampled_from(["(", "[a-", "ok,(", "api", ""]) | TEXT,
    "AGENTGYM_MAX_QUEUE_SIZE": st.sampled_from(["abc", "-1", "0", "1e9", "", "12"]) | TEXT,
    "AGENTGYM_ENABLED": st.sampled_from(["maybe", "yes", "0", "", "TRUE"]) | TEXT,
    "AGENTGYM_HOME": st.sampled_from(["", "   ", "/dev/null/x"]),
    "AGENTGYM_MAX_ATTRIBUTE_BYTES": st.sampled_from(["1", "x", "99999999999"]),
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(env=st.fixed_dictionaries({}, optional=SETTINGS))
def test_no_environment_makes_settings_raise(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patch:
        for key, value in env.items():
            if "\x00" in value or any(0xD800 <= ord(c) <= 0xDFFF for c in value):
                continue  # the OS refuses these in an environment
            patch.setenv(key, value)
        parsed = settings_from_environment()  # never raises
        assert isinstance(parsed.enabled, bool)
        rt = Runtime(parsed)  # building the runtime from it never raises either
        assert rt.settings is parsed


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AGENTGYM_REDACT", "("),
        ("AGENTGYM_MAX_QUEUE_SIZE", "abc"),
        ("AGENTGYM_ENABLED", "maybe"),
        ("AGENTGYM_HOME", ""),
    ],
)
def test_bad_environment_records_nothing_and_configure_names_it(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from agentgym_runtime import config
    from agentgym_runtime.recording import runtime as runtime_module

    monkeypatch.setattr(config, "_reported_environment_errors", set())  # "once" per process
    monkeypatch.setenv(variable, value)
    monkeypatch.chdir(tmp_path)
    previous = runtime_module.peek_runtime()
    runtime_module._set_default(None)
    try:

        @agentgym.train_online(name="env-victim")
        def agent(x: int) -> int:
            return x + 1

        @agentgym.tool
        def tool(a: int) -> int:
            return a * 2

        assert [agent(i) for i in range(3)] == [1, 2, 3]
        assert tool(a=4) == 8
        current = runtime_module.peek_runtime()
        assert current is not None and current.settings.enabled is False
        assert variable in caplog.text
        assert caplog.text.count("invalid AGENTGYM_* environment") <= 1
        with pytest.raises(ConfigurationError, match=variable.removeprefix("AGENTGYM_").lower()):
            agentgym.configure()
        assert not list(tmp_path.iterdir())  # nothing recorded, no home created
    finally:
        runtime_module._set_default(previous)
        os.environ.pop(variable, None)
