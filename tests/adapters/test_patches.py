"""The shared patch table and model-routing registry of the adapters."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from agentgym_runtime.adapters import routing
from agentgym_runtime.adapters.patches import PatchTable
from agentgym_runtime.recording.policy import LLMConfig


class Base:
    def greet(self) -> str:
        return "base"


class Target(Base):
    @classmethod
    def make(cls) -> str:
        return cls.__name__

    def own(self) -> str:
        return "own"


def _upper(original: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> str:
        return str(original(*args, **kwargs)).upper()

    return wrapper


def test_install_and_remove_restore_own_and_inherited_attributes() -> None:
    table = PatchTable("test")
    own, inherited = Target.__dict__["own"], "greet" not in Target.__dict__
    table.install([(Target, "own", _upper), (Target, "greet", _upper)])

    assert Target().own() == "OWN" and Target().greet() == "BASE" and table.active
    assert Target.__dict__["own"].__wrapped__ is own and Target.own.__name__ == "own"
    table.remove()

    assert Target.__dict__["own"] is own and Target().own() == "own"
    assert inherited and "greet" not in Target.__dict__ and Target().greet() == "base"
    assert not table.active


def test_remove_leaves_a_foreign_wrapper_in_place_and_ours_passes_through(caplog: pytest.LogCaptureFixture) -> None:
    table = PatchTable("test")
    calls: list[str] = []

    def ours(original: Any) -> Any:
        def wrapper(self: Any) -> str:
            if table.active:
                calls.append("ours")
            return str(original(self))

        return wrapper

    table.install([(Target, "own", ours)])
    ours_wrapper = Target.__dict__["own"]

    def foreign(self: Any) -> str:
        return "foreign:" + str(ours_wrapper(self))

    Target.own = foreign  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="agentgym_runtime.adapters"):
        table.remove()
    try:
        assert Target.__dict__["own"] is foreign
        assert Target().own() == "foreign:own" and calls == []
        assert "wrapped again by someone else" in caplog.text
    finally:
        Target.own = ours_wrapper.__wrapped__  # type: ignore[method-assign]


def test_a_failing_row_undoes_the_rows_before_it() -> None:
    table = PatchTable("test")
    own = Target.__dict__["own"]
    with pytest.raises(AttributeError):
        table.install([(Target, "own", _upper), (Target, "missing", _upper)])
    assert Target.__dict__["own"] is own and not table.active


def test_classmethods_stay_descriptors() -> None:
    table = PatchTable("test")

    def wrap(original: Any) -> Any:
        return classmethod(lambda cls: "wrapped " + original.__func__(cls))

    table.install([(Target, "make", wrap)])
    try:
        assert Target.make() == "wrapped Target"
    finally:
        table.remove()
    assert Target.make() == "Target"


def test_routing_registry_caches_per_config_unless_told_not_to() -> None:
    built: list[str | None] = []

    def factory(config: LLMConfig) -> object:
        built.append(config.model)
        return object()

    routing.register_model_factory("test", factory)
    try:
        first = routing.routed_model("test", LLMConfig(model="a"))
        assert routing.routed_model("test", LLMConfig(model="a")) is first
        assert routing.routed_model("test", LLMConfig(model="b")) is not first
        assert built == ["a", "b"]
        routing.register_model_factory("test", factory, cache=False)
        assert routing.routed_model("test", LLMConfig(model="a")) is not routing.routed_model(
            "test", LLMConfig(model="a")
        )
        assert built == ["a", "b", "a", "a"]
    finally:
        routing.register_model_factory("test", None)
    assert routing.routed_model("test", LLMConfig(model="a")) is None
