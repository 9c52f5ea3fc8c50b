"""Plant a distinct secret in every field that reaches a span or an export; grep every byte written.

Artifacts (``policy.json`` metadata, endpoint URLs) are attacked by the policy suite; the
redaction they call is :func:`agentgym_runtime.recording.serialization.redact`, checked here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import agentgym_runtime as agentgym
from agentgym_runtime.recording.capture import start_llm_call
from agentgym_runtime.recording.context import RequestedToolCall
from agentgym_runtime.recording.serialization import redact

MARKERS = [f"SECRETMARK{i:02d}q7Zx9" for i in range(24)]


def _all_bytes(*roots: Path) -> list[tuple[Path, bytes]]:
    found = []
    for root in roots:
        for path in [root] if root.is_file() else root.rglob("*"):
            if path.is_file():
                found.append((path, path.read_bytes()))
    return found


def test_no_planted_secret_reaches_the_store_or_an_export(tmp_path: Path) -> None:
    home, exports = tmp_path / "home", tmp_path / "exports"
    m = MARKERS
    agentgym.configure(home=str(home), schedule_delay_ms=60_000)
    try:

        @agentgym.tool
        def lookup(query: str, api_key: str = "") -> str:
            return f"found; password: {m[0]} and token={m[1]}"

        @agentgym.tool
        def explode(query: str) -> str:
            raise RuntimeError(f"upstream refused Authorization: Bearer {m[2]} (api_key={m[3]})")

        box = agentgym.Toolbox([lookup, explode])

        @agentgym.train_online(name="leaky")
        def agent(prompt: str, credentials: dict[str, str]) -> str:
            call = start_llm_call(model="m", input_messages=[{"role": "user", "content": f"Basic {m[4]}xxxx"}])
            call.finish(
                output_messages=[{"role": "assistant", "content": f"use password={m[5]}"}],
                requested=[
                    RequestedToolCall.from_raw("lookup", "c1", '{"query": "x", "password": "' + m[6] + '"'),
                    RequestedToolCall.from_raw("lookup", "c2", {"query": "x", "api_key": m[7]}),
                ],
            )
            box.call("lookup", {"query": f"client_secret: {m[8]}", "api_key": m[9]})
            with pytest.raises(RuntimeError):
                box.call("explode", {"query": "q"})
            with pytest.raises(agentgym.UnknownToolError):
                box.call("nope", '{"api_key": "' + m[10] + '"}')
            with pytest.raises(agentgym.ToolArgumentsError):
                box.call("lookup", '{"api_key": "' + m[11] + '", broken')
            return f"done https://user:{m[12]}@example.com/?api_key={m[13]}"

        out = agent(f"my api_key is {m[14]} and passwd: {m[15]}", {"password": m[16], "note": f"token: {m[17]}"})
        assert out.endswith(m[13])  # the host's own result is untouched
        ep = agentgym.last_episode()
        assert ep is not None
        agentgym.feedback(ep, 1.0, comment=f"api-key={m[18]}", label=f"secret={m[19]}")

        @agentgym.train_online(name="leaky-error")
        def failing() -> None:
            raise ValueError(f"cannot auth with Bearer {m[20]} / sk-{m[21]}abcdefghijkl")

        with pytest.raises(ValueError, match=m[20]):  # the host sees its own message unchanged
            failing()
        with agentgym.episode(agent="meta", metadata={"auth_token": m[22], "url": f"https://h/?password={m[23]}"}):
            pass
        assert agentgym.flush()
        exports.mkdir()
        agentgym.export(exports / "spans.parquet")
        agentgym.export(exports / "episodes.jsonl", format="jsonl")
        agentgym.export(exports / "otlp.json", format="otlp-json")
        agentgym.export(exports / "tables")
    finally:
        agentgym.shutdown()
    written = _all_bytes(home, exports)
    assert len(written) >= 5
    leaks = {marker: [str(p) for p, data in written if marker.encode() in data] for marker in MARKERS}
    assert {k: v for k, v in leaks.items() if v} == {}
    # ... and what was recorded is still there, masked.
    assert any(b"[REDACTED]" in data for _, data in written)


def test_redact_for_artifacts_masks_keys_urls_and_free_text() -> None:
    masked = redact(
        {
            "endpoint": f"https://u:{MARKERS[0]}@api.example.com/v1?api_key={MARKERS[1]}&model=x",
            "headers": {"Authorization": f"Bearer {MARKERS[2]}"},
            "notes": [f"password: {MARKERS[3]}", "plain text stays"],
        }
    )
    text = json.dumps(masked)
    assert not any(marker in text for marker in MARKERS[:4])
    assert masked["notes"][1] == "plain text stays"
    assert masked["endpoint"] == "https://[REDACTED]@api.example.com/v1?api_key=[REDACTED]&model=x"
