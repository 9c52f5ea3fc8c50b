"""Values that do not serialize are recorded in a bounded, readable form; secrets never are."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

import agentgym_runtime as agentgym
from agentgym_runtime.recording.serialization import REDACTED, Serializer
from agentgym_runtime.testing import Recorded


class HostileRepr:
    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")


@dataclass
class Point:
    x: int
    y: int


def test_cycles_bytes_and_odd_types() -> None:
    s = Serializer(max_bytes=10_000)
    cyclic: dict[str, Any] = {"a": 1}
    cyclic["me"] = cyclic
    assert json.loads(s.to_json(cyclic)) == {"a": 1, "me": "<cycle: dict>"}
    assert json.loads(s.to_json(b"\x00\x01\x02")) == "<bytes len=3 base64=AAEC>"
    assert json.loads(s.to_json(Point(1, 2))) == {"x": 1, "y": 2}
    assert json.loads(s.to_json(datetime(2026, 1, 2, 3, 4, 5))) == "2026-01-02T03:04:05"
    assert json.loads(s.to_json({1: {2, 3}})) in ({"1": [2, 3]}, {"1": [3, 2]})
    assert json.loads(s.to_json(float("inf"))) == "inf"
    assert json.loads(s.to_json(HostileRepr())) == "<HostileRepr (repr failed: RuntimeError)>"


def test_huge_values_are_bounded() -> None:
    s = Serializer(max_bytes=1000)
    text = s.to_json("é" * 100_000)
    assert len(text.encode()) <= 1000
    assert text.endswith("bytes]")
    many = s.to_json(list(range(5000)))
    assert len(many.encode()) <= 1000
    deep: Any = []
    for _ in range(100):
        deep = [deep]
    assert "max depth" in Serializer(max_bytes=100_000).to_json(deep)


@pytest.mark.parametrize(
    "key",
    ["api_key", "OPENAI_API_KEY", "Authorization", "password", "x-api-key", "access_token", "token", "client_secret"],
)
def test_secret_keys_are_redacted(key: str) -> None:
    assert json.loads(Serializer().to_json({key: "s3cr3t", "keep": "me"})) == {key: REDACTED, "keep": "me"}


def test_secret_values_in_text_are_masked() -> None:
    out = Serializer().to_json({"note": "use Bearer abcdefghijklmnop and sk-ABCDEFGHIJKLMNOPQRSTUV please"})
    assert "abcdefghijklmnop" not in out
    assert "ABCDEFGHIJKLMNOPQRSTUV" not in out
    assert out.count(REDACTED) == 2


def test_secrets_never_reach_the_store(tmp_path: Any) -> None:
    runtime = agentgym.configure(home=tmp_path, redact=["customer_email"], strict=True)
    try:

        @agentgym.tool
        def call_api(endpoint: str, headers: dict[str, str], customer_email: str) -> dict[str, str]:
            return {"password": "hunter2", "status": "ok"}

        @agentgym.train_online(name="secretive")
        def agent(api_key: str) -> str:
            call_api(endpoint="/x", headers={"Authorization": "Bearer abc.def.ghi.jkl"}, customer_email="a@b.c")
            return "done"

        agent(api_key="sk-live-0123456789abcdef")
        assert agentgym.flush()
        dump = json.dumps(runtime.store.query("SELECT * FROM spans"), default=str)
        dump += json.dumps(runtime.store.query("SELECT * FROM episodes"), default=str)
        for secret in ("sk-live-0123456789abcdef", "abc.def.ghi.jkl", "hunter2", "a@b.c"):
            assert secret not in dump
        assert REDACTED in dump
    finally:
        agentgym.shutdown()


def test_unserializable_arguments_never_break_the_call(recorded: Recorded) -> None:
    @agentgym.train_online(name="odd")
    def agent(payload: Any) -> str:
        return "fine"

    cyclic: list[Any] = []
    cyclic.append(cyclic)
    assert agent(cyclic) == "fine"
    assert agent(HostileRepr()) == "fine"
    assert agent(b"\xff" * 10_000_000) == "fine"
    inputs = [e["input"] for e in recorded.episodes()]
    assert inputs[0] == '{"payload":["<cycle: list>"]}'
    assert inputs[1] == '{"payload":"<HostileRepr (repr failed: RuntimeError)>"}'
    assert json.loads(inputs[2])["payload"].startswith("<bytes len=10000000 base64=")
