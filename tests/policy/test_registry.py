"""Policy artifacts and the registry: format, verification, transitions, races, DuckDB mirror."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import agentgym_runtime as agentgym
from agentgym_runtime.config import Settings
from agentgym_runtime.errors import ConfigurationError
from agentgym_runtime.policy.artifact import read_artifact, verify_artifact, write_artifact
from agentgym_runtime.policy.errors import PolicyArtifactError, PolicyConflictError, PolicyNotFoundError
from agentgym_runtime.policy.registry import PolicyRegistry, PolicyStatus
from agentgym_runtime.recording.policy import Demonstration, LLMConfig, Policy, ToolCallExample
from agentgym_runtime.recording.runtime import Runtime
from agentgym_runtime.testing import Recorded


def _safetensors(path: Path, payload: bytes = b"\x00" * 16) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, len(payload)]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + payload)


def _registry(tmp_path: Path) -> PolicyRegistry:
    return PolicyRegistry(tmp_path / "policies")


# --- artifacts ---------------------------------------------------------------------------


def test_artifact_round_trip_with_adapter_and_manifest(tmp_path: Path) -> None:
    adapter = tmp_path / "lora"
    adapter.mkdir()
    _safetensors(adapter / "adapter_model.safetensors")
    (adapter / "adapter_config.json").write_text('{"r": 8}')
    (adapter / "optimizer.pt").write_bytes(b"pickle!")  # not data: never copied
    policy = Policy(
        agent="bot",
        version=1,
        system_prompt="Be exact.",
        demonstrations=(Demonstration(input="q", tool_calls=(ToolCallExample(name="t", arguments={"a": 1}),)),),
    )
    path = write_artifact(policy, tmp_path / "policies", adapter)
    assert sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()) == [
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "manifest.json",
        "policy.json",
    ]
    manifest = verify_artifact(path)
    assert sorted(manifest["files"]) == [
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "policy.json",
    ]
    loaded = read_artifact(path, agent="bot", version=1)
    assert loaded.llm == LLMConfig(adapter="adapter")
    assert loaded.demonstrations == policy.demonstrations
    with pytest.raises(PolicyConflictError, match="already exists"):
        write_artifact(policy, tmp_path / "policies")


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (
            lambda p: (p / "policy.json").write_text((p / "policy.json").read_text().replace("exact", "sloppy")),
            "sha256 mismatch for policy.json",
        ),
        (lambda p: (p / "evil.pkl").write_bytes(b"\x80\x04"), "refusing evil.pkl"),
        (lambda p: (p / "extra.json").write_text("{}"), "extra.json is not listed in manifest.json"),
        (lambda p: (p / "policy.json").unlink(), "policy.json is listed in manifest.json but missing"),
        (lambda p: (p / "manifest.json").write_text("not json"), "cannot read manifest.json"),
    ],
)
def test_tampered_artifacts_are_refused(tmp_path: Path, tamper, message: str) -> None:  # type: ignore[no-untyped-def]
    path = write_artifact(Policy(agent="bot", version=1, system_prompt="Be exact."), tmp_path)
    tamper(path)
    with pytest.raises(PolicyArtifactError, match=message):
        read_artifact(path)


def test_adapter_dir_without_safetensors_is_refused(tmp_path: Path) -> None:
    adapter = tmp_path / "lora"
    adapter.mkdir()
    (adapter / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(PolicyArtifactError, match=r"holds no \.safetensors file \(found: adapter_model\.bin\)"):
        _registry(tmp_path).register("bot", adapter_dir=adapter)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.safetensors").write_bytes(b"\xff" * 4)
    with pytest.raises(PolicyArtifactError, match="not a safetensors file"):
        _registry(tmp_path).register("bot", adapter_dir=broken)
    assert not list((tmp_path / "policies" / "bot").glob("v*")), "no half-written artifact is left"


# --- registry transitions ----------------------------------------------------------------


def test_register_promote_canary_rollback_history(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    v1 = registry.register("bot", system_prompt="one", trainer="grpo", metrics={"reliability": 0.9})
    v2 = registry.register("bot", system_prompt="two")
    assert (v1.version, v1.parent_version, v1.trainer, v2.version) == (1, 0, "grpo", 2)
    state = registry.promote("bot", 1, actor="alice", reason="looks good")
    assert (state.live, state.live_history, state.sequence) == (1, (0,), 3)
    state = registry.start_canary("bot", "v2", 0.25)
    assert (state.canary, state.canary_share, state.status_of(2)) == (2, 0.25, PolicyStatus.CANARY)
    state = registry.rollback("bot", reason="bad canary")
    assert (state.live, state.canary, state.status_of(2)) == (1, None, PolicyStatus.ROLLED_BACK)
    state = registry.rollback("bot", reason="bad live")
    assert (state.live, state.status_of(1), state.status_of(0)) == (0, PolicyStatus.ROLLED_BACK, PolicyStatus.LIVE)
    with pytest.raises(PolicyConflictError, match="nothing to roll back for 'bot'"):
        registry.rollback("bot")
    statuses = [(i.version, i.status.value) for i in registry.policies("bot")]
    assert statuses == [(0, "live"), (1, "rolled_back"), (2, "rolled_back")]
    transitions = [(e.version, e.from_status, e.to_status, e.actor) for e in registry.events("bot")]
    assert transitions[2:4] == [(0, "live", "retired", "alice"), (1, "candidate", "live", "alice")]
    assert [(e.version, e.to_status, e.reason) for e in registry.events("bot")][-3:] == [
        (2, "rolled_back", "bad canary"),
        (1, "rolled_back", "bad live"),
        (0, "live", "rollback of v1"),
    ]


def test_unknown_agent_and_version_list_what_exists(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    registry.register("support-bot", system_prompt="x")
    registry.register("triage", system_prompt="y")
    with pytest.raises(
        PolicyNotFoundError, match="no policies registered for agent 'nope'; agents with policies: support-bot, triage"
    ):
        registry.promote("nope", 1)
    with pytest.raises(PolicyNotFoundError, match="agent 'support-bot' has no version 7; versions: 0, 1"):
        registry.promote("support-bot", 7)
    with pytest.raises(PolicyNotFoundError, match="agent 'support-bot' has no canary version; live is v0"):
        registry.get("support-bot", "canary")
    with pytest.raises(PolicyConflictError, match="support-bot@v0 is already live"):
        registry.promote("support-bot", 0)
    with pytest.raises(ConfigurationError, match="invalid agent name 'a/b'"):
        registry.register("a/b")
    with pytest.raises(ConfigurationError, match=r"canary share must be in \(0, 1\], got 1.5"):
        registry.start_canary("support-bot", 1, 1.5)


def test_corrupt_artifact_is_refused_at_promotion_and_live_stays(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    registry.promote("bot", registry.register("bot", system_prompt="good").version)
    v2 = registry.register("bot", system_prompt="fine")
    (registry.artifact_path("bot", v2.version) / "policy.json").write_text('{"agent": "bot", "version": 2}')
    before = registry.state("bot")
    with pytest.raises(PolicyArtifactError, match=r"sha256 mismatch for policy\.json"):
        registry.promote("bot", 2)
    after = registry.state("bot")
    assert (after.live, after.sequence) == (1, before.sequence)


def test_compare_and_set_gives_one_winner_among_threads(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    for i in range(6):
        registry.register("bot", system_prompt=f"p{i}")
    seen = registry.state("bot").sequence
    barrier = threading.Barrier(6)
    results: dict[int, str] = {}

    def attempt(version: int) -> None:
        barrier.wait()
        try:
            if version == 6:
                registry.rollback("bot", expected_sequence=seen)  # v0 live: also a conflict when it runs first
            else:
                registry.promote("bot", version, expected_sequence=seen)
            results[version] = "won"
        except PolicyConflictError as exc:
            results[version] = str(exc)

    threads = [threading.Thread(target=attempt, args=(v,)) for v in range(1, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [v for v, r in results.items() if r == "won"]
    assert len(winners) == 1 and winners[0] != 6
    assert all("changed meanwhile" in r or "nothing to roll back" in r for v, r in results.items() if v != winners[0])
    state = registry.state("bot")
    assert state.live == winners[0] and state.sequence == seen + 1
    assert [v for v, r in state.versions.items() if r.status is PolicyStatus.LIVE] == [winners[0]]


_RACER = """
import sys, time
from pathlib import Path
from agentgym_runtime.policy.errors import PolicyConflictError
from agentgym_runtime.policy.registry import PolicyRegistry
registry = PolicyRegistry(Path(sys.argv[1]))
go = Path(sys.argv[4])
while not go.exists():
    time.sleep(0.0002)
try:
    registry.promote("bot", int(sys.argv[2]), expected_sequence=int(sys.argv[3]), actor="proc" + sys.argv[2])
    print("won")
except PolicyConflictError as exc:
    print("lost:", exc)
"""


def test_two_processes_promoting_at_once_one_wins(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    registry.register("bot", system_prompt="a")
    registry.register("bot", system_prompt="b")
    seen = registry.state("bot").sequence
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(registry.root), str(v), str(seen), str(go)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for v in (1, 2)
    ]
    import time

    time.sleep(0.8)  # both interpreters are up and spinning on the start signal
    go.touch()
    outputs = [p.communicate(timeout=30)[0].strip() for p in procs]
    assert sorted(o.split(":")[0] for o in outputs) == ["lost", "won"], outputs
    winner = (1, 2)[[o == "won" for o in outputs].index(True)]
    state = registry.state("bot")
    assert (state.live, state.sequence) == (winner, seen + 1)
    assert registry.events("bot")[-1].actor == f"proc{winner}"


# --- public API and the DuckDB mirror --------------------------------------------------------


def test_public_api_mirrors_versions_and_events_into_duckdb(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    v1 = agentgym.register_policy(
        "support",
        system_prompt="Look the order up first.",
        tool_descriptions={"get_order": "Fetch an order by id."},
        demonstrations=[{"input": "where is 7?", "tool_calls": [{"name": "get_order", "arguments": {"id": 7}}]}],
        llm={"model": "small", "sampling": {"temperature": 0.1}},
        metadata={"ticket": "OPS-1"},
        trainer="grpo",
        metrics={"held_out_reliability": 0.93},
    )
    assert v1.ref == "support@v1" and v1.demonstrations[0].tool_calls[0].arguments == {"id": 7}
    agentgym.promote("support", 1, canary=0.3, reason="try it")
    agentgym.promote("support", 1)
    agentgym_runtime.policies.sync_store()  # changes are mirrored in the background; wait for it here
    rows = recorded.query("SELECT version, status, parent_version, trainer, metrics FROM policies ORDER BY version")
    assert [(r["version"], r["status"], r["parent_version"], r["trainer"]) for r in rows] == [
        (0, "retired", None, None),
        (1, "live", 0, "grpo"),
    ]
    assert json.loads(rows[1]["metrics"]) == {"held_out_reliability": 0.93}
    events = recorded.query("SELECT version, from_status, to_status, actor, reason, details FROM policy_events")
    assert [(e["version"], e["from_status"], e["to_status"], e["actor"]) for e in events] == [
        (1, None, "candidate", "api"),
        (1, "candidate", "canary", "api"),
        (0, "live", "retired", "api"),
        (1, "canary", "live", "api"),
    ]
    assert json.loads(events[1]["details"])["share"] == 0.3
    # A change made by another process (here: another registry on the same directory) is mirrored on sync.
    PolicyRegistry(agentgym_runtime.settings.policies_dir).rollback("support", reason="from the CLI")
    agentgym_runtime.policies.sync_store()
    mirrored = recorded.query("SELECT version, to_status, reason FROM policy_events ORDER BY occurred_at")
    assert len(mirrored) == 6
    assert {(r["version"], r["to_status"], r["reason"]) for r in mirrored[4:]} == {
        (1, "rolled_back", "from the CLI"),
        (0, "live", "rollback of v1"),
    }
    assert [(i.version, i.status.value) for i in agentgym.policies("support")] == [(0, "live"), (1, "rolled_back")]


def test_register_policy_with_adapter_dir_keeps_signature(agentgym_runtime: Runtime, tmp_path: Path) -> None:
    adapter = tmp_path / "out"
    adapter.mkdir()
    _safetensors(adapter / "adapter_model.safetensors")
    policy = agentgym.register_policy(
        "coder", trainer="grpo", metrics={"reward": 0.7}, adapter_dir=adapter, parent_version=0
    )
    trained = agentgym.load_policy("coder@v1")
    assert trained.adapter_path is not None and (trained.adapter_path / "adapter_model.safetensors").is_file()
    assert policy.llm is not None and policy.llm.adapter == "adapter"
    with pytest.raises(PolicyNotFoundError, match="agent 'coder' has no version 4; versions: 0, 1"):
        agentgym.load_policy("coder@v4")
    assert agentgym.load_policy("coder").version == 0  # bare name: live


def test_a_served_versions_adapter_resolves_in_the_configured_home_not_the_environments(
    agentgym_runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: a chat model built without a home (TransformersChatModel(model_path=...)) resolved
    # the pinned version's relative adapter against the environment's home (./.agentgym), not the
    # home given to agentgym.configure, so a version the scheduler had registered never served.
    from agentgym_runtime.models.engine import serving_adapter
    from agentgym_runtime.policy.router import seeded

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the environment's default home: ./.agentgym, another directory
    adapter = tmp_path / "out"
    adapter.mkdir()
    _safetensors(adapter / "adapter_model.safetensors")
    agentgym.register_policy("coder", trainer="sft", adapter_dir=adapter)
    policy = agentgym_runtime.policies.load("coder", 1)
    home = Path(agentgym_runtime.settings.home)
    assert Settings().home != str(home)
    with seeded(policy), agentgym.episode(agent="coder"):
        served = serving_adapter()
    assert served == home / "policies" / "coder" / "v1" / "adapter"
    assert (served / "adapter_model.safetensors").is_file()
