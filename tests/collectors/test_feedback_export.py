"""Feedback rows, and exports read back: Parquet through DuckDB, JSONL line by line, OTLP JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

import agentgym_runtime as agentgym
from agentgym_runtime.recording.capture import start_llm_call
from agentgym_runtime.recording.context import RequestedToolCall
from agentgym_runtime.testing import Recorded


@agentgym.tool
def get_weather(city: str) -> str:
    """Weather for a city."""
    return f"sunny in {city}"


def _run_episodes() -> list[agentgym.Episode]:
    episodes = []
    for agent, city in (("weather", "Paris"), ("weather", "Oslo"), ("other", "Rome")):
        with agentgym.episode(agent=agent, session_id=f"s-{city}") as ep:
            call = start_llm_call(
                model="m1",
                input_messages=[{"role": "user", "content": f"weather in {city}?"}],
                tools=[get_weather.definition()],
            )
            call.finish(
                output_messages=[{"role": "assistant", "content": None}],
                requested=[RequestedToolCall.from_raw("get_weather", f"id-{city}", json.dumps({"city": city}))],
            )
            get_weather.call_with({"city": city}, call_id=f"id-{city}")
        episodes.append(ep)
    return episodes


def test_feedback_rows(recorded: Recorded) -> None:
    first, second, _ = _run_episodes()
    fid = agentgym.feedback(first.id, 4.5, comment="helpful, my token is sk-abcdefghijklmnopqrstu")
    agentgym.feedback(second, True, name="thumbs")
    agentgym.feedback(second.id, None, name="verdict", label="resolved")
    rows = recorded.feedback()
    assert [(r["episode_id"], r["name"], r["value"], r["label"]) for r in rows] == [
        (first.id, "user_rating", 4.5, None),
        (second.id, "thumbs", 1.0, None),
        (second.id, "verdict", None, "resolved"),
    ]
    assert rows[0]["feedback_id"] == fid
    assert "sk-abcdefghijklmnopqrstu" not in rows[0]["comment"]


def test_feedback_bad_input(recorded: Recorded) -> None:
    (episode, *_) = _run_episodes()
    with pytest.raises(agentgym.EpisodeNotFoundError, match="no episode 'nope' has been recorded"):
        agentgym.feedback("nope", 1.0)
    with pytest.raises(agentgym.ConfigurationError, match="finite number"):
        agentgym.feedback(episode.id, float("nan"))
    with pytest.raises(agentgym.ConfigurationError, match="number or a bool, got str"):
        agentgym.feedback(episode.id, "great")  # type: ignore[arg-type]
    with pytest.raises(agentgym.ConfigurationError, match="needs a value, a label, or both"):
        agentgym.feedback(episode.id, None)
    with pytest.raises(agentgym.ConfigurationError, match="episode_id must be a non-empty string"):
        agentgym.feedback("", 1.0)


def test_feedback_for_an_episode_of_an_earlier_process(tmp_path: Path) -> None:
    agentgym.configure(home=tmp_path)
    (episode, *_) = _run_episodes()
    agentgym.shutdown()
    runtime = agentgym.configure(home=tmp_path)  # a new runtime: no in-memory record of the episode
    try:
        agentgym.feedback(episode.id, 0.0, name="late")
        assert agentgym.flush()
        assert runtime.store.query("SELECT episode_id, name FROM feedback") == [(episode.id, "late")]
    finally:
        agentgym.shutdown()


def test_parquet_export_file_and_directory(recorded: Recorded, tmp_path: Path) -> None:
    episodes = _run_episodes()
    agentgym.feedback(episodes[0].id, 1.0)
    single = agentgym.export(tmp_path / "spans.parquet")
    assert single.rows == {"spans": 10}
    con = duckdb.connect()
    assert con.execute(f"SELECT count(*) FROM read_parquet('{tmp_path / 'spans.parquet'}')").fetchone() == (10,)
    full = agentgym.export(tmp_path / "all", agent="weather")
    assert full.rows == {"spans": 7, "episodes": 2, "feedback": 1, "tool_calls": 2}
    names = con.execute(
        f"SELECT agent, count(*) FROM read_parquet('{tmp_path / 'all' / 'episodes.parquet'}') GROUP BY 1"
    ).fetchall()
    assert names == [("weather", 2)]
    outcomes = con.execute(f"SELECT outcome FROM read_parquet('{tmp_path / 'all' / 'tool_calls.parquet'}')").fetchall()
    assert outcomes == [("ok",), ("ok",)]


def test_jsonl_chat_export(recorded: Recorded, tmp_path: Path) -> None:
    _run_episodes()
    result = agentgym.export(tmp_path / "chat.jsonl", format="jsonl", agent="weather")
    assert result.rows == {"episodes": 2}
    lines = (tmp_path / "chat.jsonl").read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["agent"] == "weather"
    assert first["tool_reliability"] == 1.0
    assert first["messages"] == [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": None},
    ]
    assert first["tools"][0]["name"] == "get_weather"


def test_otlp_json_export(recorded: Recorded, tmp_path: Path) -> None:
    _run_episodes()
    agentgym.export(tmp_path / "traces.json", format="otlp-json")
    document = json.loads((tmp_path / "traces.json").read_text())
    (resource,) = document["resourceSpans"]
    attributes = {a["key"]: a["value"] for a in resource["resource"]["attributes"]}
    assert attributes["service.name"] == {"stringValue": "agentgym-agent"}
    spans = [span for scope in resource["scopeSpans"] for span in scope["spans"]]
    assert len(spans) == 9
    tool = next(s for s in spans if s["name"] == "execute_tool get_weather")
    assert len(tool["traceId"]) == 32 and len(tool["spanId"]) == 16 and len(tool["parentSpanId"]) == 16
    tool_attributes = {a["key"]: a["value"] for a in tool["attributes"]}
    assert tool_attributes["gen_ai.tool.name"] == {"stringValue": "get_weather"}
    assert tool_attributes["agentgym.policy.version"] == {"intValue": "0"}
    assert tool_attributes["agentgym.tool.outcome"] == {"stringValue": "ok"}
    root = next(s for s in spans if s["name"] == "invoke_agent weather")
    root_attributes = {a["key"]: a["value"] for a in root["attributes"]}
    assert root_attributes["agentgym.episode.root"] == {"boolValue": True}
    assert root_attributes["agentgym.episode.tool_reliability"] == {"doubleValue": 1.0}
    assert int(root["endTimeUnixNano"]) >= int(root["startTimeUnixNano"])


def test_export_filters_and_bad_input(recorded: Recorded, tmp_path: Path) -> None:
    _run_episodes()
    future = datetime.now(UTC) + timedelta(hours=1)
    assert agentgym.export(tmp_path / "none.jsonl", format="jsonl", since=future).rows == {"episodes": 0}
    assert agentgym.export(tmp_path / "recent.jsonl", format="jsonl", since="1h").rows == {"episodes": 3}
    with pytest.raises(agentgym.ConfigurationError, match="unknown export format 'csv'"):
        agentgym.export(tmp_path / "x.csv", format="csv")
    with pytest.raises(agentgym.ConfigurationError, match="since='yesterday' is not an ISO timestamp"):
        agentgym.export(tmp_path / "x.jsonl", format="jsonl", since="yesterday")
