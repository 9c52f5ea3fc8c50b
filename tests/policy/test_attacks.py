"""Artifacts are data: traversal, symlinks, re-hashed manifests, foreign owners, world-writable files, secrets.

Each attack is made on the files the way a local attacker (or an unlucky operator) would, then the
version is promoted or served: it is refused with a clear error and the live version keeps serving.
"""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path

import pytest

from agentgym_runtime.errors import ConfigurationError
from agentgym_runtime.policy.artifact import MANIFEST, sha256_file
from agentgym_runtime.policy.errors import PolicyArtifactError, UntrustedFileError
from agentgym_runtime.policy.registry import PolicyRegistry
from agentgym_runtime.policy.router import PolicyRouter, RouterConfig
from agentgym_runtime.recording.runtime import Runtime
from agentgym_runtime.testing import Recorded


def _adapter_dir(tmp_path: Path, base_model: str | None = None) -> Path:
    source = tmp_path / "trained"
    source.mkdir()
    header = b"{}"
    (source / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    if base_model is not None:
        (source / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base_model}))
    return source


@pytest.fixture
def serving(tmp_path: Path) -> tuple[PolicyRegistry, PolicyRouter]:
    """v1 live and served; v2 (with an adapter) a candidate the tests attack."""
    registry = PolicyRegistry(tmp_path / "policies")
    registry.promote("bot", registry.register("bot", system_prompt="good").version)
    registry.register("bot", system_prompt="new", adapter_dir=_adapter_dir(tmp_path))
    router = PolicyRouter(registry, RouterConfig(refresh_interval_s=0.0))
    assert router.resolve("bot", None).version == 1
    return registry, router


def _rehash(artifact: Path) -> None:
    """Recompute every digest of the manifest, as an attacker who rewrote a file would."""
    manifest = json.loads((artifact / MANIFEST).read_text())
    manifest["files"] = {name: sha256_file(artifact / name) for name in manifest["files"]}
    (artifact / MANIFEST).write_text(json.dumps(manifest))


def _rewrite_policy(artifact: Path, **llm: str) -> None:
    policy_file = artifact / "policy.json"
    payload = json.loads(policy_file.read_text())
    payload["llm"] = {**(payload["llm"] or {}), **llm}
    policy_file.write_text(json.dumps(payload))
    _rehash(artifact)


def _forget_recorded_digest(registry: PolicyRegistry, agent: str) -> None:
    """Pointers written before digests were recorded: the artifact's own checks must still hold."""
    path = registry.pointers_path(agent)
    payload = json.loads(path.read_text())
    for record in payload["versions"].values():
        record.pop("digest", None)
    path.write_text(json.dumps(payload))


def _refused_and_live_stays(registry: PolicyRegistry, router: PolicyRouter, match: str) -> None:
    with pytest.raises(PolicyArtifactError, match=match):
        registry.promote("bot", 2)
    assert registry.state("bot").live == 1
    assert router.resolve("bot", None).version == 1


def test_rehashed_manifest_is_refused_by_the_digest_recorded_at_registration(
    serving: tuple[PolicyRegistry, PolicyRouter],
) -> None:
    registry, router = serving
    _rewrite_policy(registry.artifact_path("bot", 2), endpoint="http://attacker.example/v1")
    _refused_and_live_stays(registry, router, "manifest.json changed since registration")


@pytest.mark.parametrize("adapter", ["../../..", "/etc", "adapter/../../v1", "~/.ssh"])
def test_adapter_path_outside_the_artifact_is_refused(
    serving: tuple[PolicyRegistry, PolicyRouter], adapter: str
) -> None:
    registry, router = serving
    _rewrite_policy(registry.artifact_path("bot", 2), adapter=adapter)
    _forget_recorded_digest(registry, "bot")
    _refused_and_live_stays(registry, router, f"llm.adapter '{adapter}' points outside the artifact")


def test_symlinked_adapter_directory_is_refused(serving: tuple[PolicyRegistry, PolicyRouter], tmp_path: Path) -> None:
    registry, router = serving
    artifact = registry.artifact_path("bot", 2)
    elsewhere = tmp_path / "elsewhere"
    (artifact / "adapter").rename(elsewhere)
    (artifact / "adapter").symlink_to(elsewhere, target_is_directory=True)
    _refused_and_live_stays(registry, router, r"adapter: it is a symbolic link")


def test_symlinked_tensor_file_is_refused(serving: tuple[PolicyRegistry, PolicyRouter], tmp_path: Path) -> None:
    registry, router = serving
    tensor = registry.artifact_path("bot", 2) / "adapter" / "adapter_model.safetensors"
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(tensor.read_bytes())  # same bytes: the digest alone would not notice
    tensor.unlink()
    tensor.symlink_to(outside)
    _refused_and_live_stays(registry, router, r"adapter_model.safetensors: it is a symbolic link")


def test_world_writable_artifact_file_is_refused(serving: tuple[PolicyRegistry, PolicyRouter]) -> None:
    registry, router = serving
    policy_file = registry.artifact_path("bot", 2) / "policy.json"
    policy_file.chmod(0o666)
    _refused_and_live_stays(registry, router, r"policy.json: it is world-writable \(mode 666\)")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_artifact_owned_by_another_user_is_refused(serving: tuple[PolicyRegistry, PolicyRouter]) -> None:
    registry, router = serving
    policy_file = registry.artifact_path("bot", 2) / "policy.json"
    os.chown(policy_file, 65534, 65534)  # nobody
    _refused_and_live_stays(registry, router, r"policy.json: owned by uid 65534, not the service's user \(uid 0\)")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_foreign_pointers_are_not_read_and_the_cached_live_version_keeps_serving(
    serving: tuple[PolicyRegistry, PolicyRouter],
) -> None:
    registry, router = serving
    pointers = registry.pointers_path("bot")
    payload = json.loads(pointers.read_text())
    payload["live"], payload["sequence"] = 2, payload["sequence"] + 1  # a planted promotion
    pointers.write_text(json.dumps(payload))
    os.chown(pointers, 65534, 65534)
    with pytest.raises(UntrustedFileError, match=r"refusing policy pointers .*owned by uid 65534"):
        registry.state("bot")
    assert router.resolve("bot", None).version == 1


def test_world_writable_pointers_and_events_are_refused(serving: tuple[PolicyRegistry, PolicyRouter]) -> None:
    registry, router = serving
    registry.events_path("bot").chmod(0o646)
    with pytest.raises(UntrustedFileError, match=r"refusing policy events .*world-writable \(mode 646\)"):
        registry.events("bot")
    registry.pointers_path("bot").chmod(0o606)
    with pytest.raises(UntrustedFileError, match=r"refusing policy pointers .*chmod o-w"):
        registry.state("bot")
    assert router.resolve("bot", None).version == 1


def test_adapter_for_another_base_model_is_refused_at_registration(tmp_path: Path) -> None:
    registry = PolicyRegistry(tmp_path / "policies")
    with pytest.raises(PolicyArtifactError, match="trained on base model 'org/base-a' but bot@v1 serves 'org/base-b'"):
        registry.register(
            "bot", llm={"model": "org/base-b"}, adapter_dir=_adapter_dir(tmp_path, base_model="org/base-a")
        )
    assert registry.agents() == []  # nothing half-registered
    ok = registry.register("bot", llm={"model": "org/base-a"}, adapter_dir=tmp_path / "trained")
    assert ok.llm is not None and ok.llm.adapter == "adapter"


def test_secrets_in_metadata_and_endpoint_urls_are_never_stored(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    registry = agentgym_runtime.policies
    planted = ["sk-live-0123456789abcdef0123", "hunter2-password", "qs-secret-7788", "Bearer abcdefgh12345678"]
    registry.register(
        "bot",
        llm={"endpoint": f"https://bob:{planted[1]}@llm.example/v1?api_key={planted[2]}&region=eu", "model": "m"},
        metadata={"owner": "ml", "api_key": planted[0], "notes": f"Authorization: {planted[3]}"},
        metrics={"client_secret": planted[0]},
    )
    registry.sync_store()
    written = b"".join(p.read_bytes() for p in registry.root.rglob("*") if p.is_file())
    rows = recorded.query("SELECT metadata, metrics FROM policies WHERE agent = 'bot' AND version = 1")
    mirrored = json.dumps(rows).encode()
    for secret in planted:
        assert secret.encode() not in written
        assert secret.encode() not in mirrored
    policy = registry.load("bot", 1)
    assert policy.llm is not None
    assert policy.llm.endpoint == "https://[REDACTED]@llm.example/v1?api_key=[REDACTED]&region=eu"
    assert policy.metadata["owner"] == "ml" and policy.metadata["api_key"] == "[REDACTED]"


def test_registration_refuses_adapter_paths_instead_of_files(tmp_path: Path) -> None:
    registry = PolicyRegistry(tmp_path / "policies")
    for path in ("/etc", "../../..", "adapter"):
        with pytest.raises(ConfigurationError, match=f"llm.adapter '{re.escape(path)}': an artifact holds"):
            registry.register("bot", llm={"adapter": path})
    assert registry.agents() == [] and not (tmp_path / "policies" / "bot" / "v1").exists()
