"""Choosing a backend (backend=, gpu='auto' with its reasons), `agentgym backends check`, the manifest."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentgym_runtime.cli.app import build_app
from agentgym_runtime.config import Settings
from agentgym_runtime.errors import ConfigurationError
from agentgym_runtime.trainers.backends.local import LocalBackend
from agentgym_runtime.trainers.backends.manifest import ResultVerificationError, verify_manifest, write_manifest
from agentgym_runtime.trainers.backends.select import backend_for, local_cuda
from agentgym_runtime.trainers.backends.ssh import SSHBackend
from tests.trainers.backends.helpers import training
from tests.trainers.backends.sshd import LoopbackSSH


def ssh_settings(sshd: LoopbackSSH, tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "home": tmp_path / "home",
        "ssh_host": "127.0.0.1",
        "ssh_port": sshd.port,
        "ssh_key_path": str(sshd.client_key),
        "ssh_known_hosts": str(sshd.known_hosts),
        "ssh_python": sys.executable,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def fake_nvidia_smi(directory: Path, listing: str) -> None:
    """An ``nvidia-smi`` on PATH printing ``listing`` (the CUDA boundary: no GPU in this session)."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "nvidia-smi"
    script.write_text(f"#!/bin/sh\nprintf '%s\\n' {listing!r}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_auto_prefers_local_cuda_then_the_users_order_with_each_reason(
    tmp_path: Path, sshd: LoopbackSSH, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "no-driver"))
    settings = ssh_settings(sshd, tmp_path, backend_order=["runpod", "ssh"])
    chosen = backend_for(training(None, gpu="auto"), settings)
    assert isinstance(chosen, SSHBackend)
    assert chosen.choice == (
        "gpu='auto': no local CUDA (no nvidia-smi on PATH (no NVIDIA driver)); runpod skipped: the runpod backend "
        "needs RUNPOD_API_KEY: set it in the environment (or `keyring set agentgym RUNPOD_API_KEY`); "
        f"ssh: ssh {chosen.target}: reachable, {sys.executable} is Python {sys.version.split()[0]}"
    )
    fake_nvidia_smi(tmp_path / "driver", "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)")
    monkeypatch.setenv("PATH", str(tmp_path / "driver"))
    local = backend_for(training(None, gpu="auto"), settings)
    assert isinstance(local, LocalBackend)
    assert local.choice == "gpu='auto': 1 local CUDA device(s): GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert local_cuda() == (False, "CUDA_VISIBLE_DEVICES is empty (GPUs hidden)")
    unreachable = ssh_settings(sshd, tmp_path, backend_order=["ssh"], ssh_port=1)
    fallback = backend_for(training(None, gpu="auto"), unreachable)
    assert isinstance(fallback, LocalBackend)
    assert fallback.choice is not None and fallback.choice.endswith("falling back to this machine's CPU")
    assert "ssh skipped: ssh " in fallback.choice and "connection refused" in fallback.choice


def test_named_backends_and_their_missing_settings(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    assert backend_for(training(None, gpu="cpu"), settings).choice == "gpu='cpu': this machine, GPUs hidden"
    with pytest.raises(ConfigurationError, match=r"the ssh backend needs ssh_host \(AGENTGYM_SSH_HOST\)"):
        backend_for(training("ssh"), settings)
    with pytest.raises(ConfigurationError, match="unknown backend 'tpu-farm'; choose one of: lambda, local"):
        backend_for(training("tpu-farm"), settings)
    chosen = backend_for(training(None), Settings(home=tmp_path, backend="local"))
    assert chosen.choice == "AGENTGYM_BACKEND='local'"


def test_backends_check_shows_what_is_reachable_and_why_not(
    tmp_path: Path, sshd: LoopbackSSH, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", f"{tmp_path / 'no-driver'}{os.pathsep}{os.environ['PATH']}")
    for key, value in {
        "AGENTGYM_SSH_HOST": "127.0.0.1",
        "AGENTGYM_SSH_PORT": str(sshd.port),
        "AGENTGYM_SSH_KEY_PATH": str(sshd.client_key),
        "AGENTGYM_SSH_KNOWN_HOSTS": str(sshd.known_hosts),
        "AGENTGYM_SSH_PYTHON": sys.executable,
        "AGENTGYM_RAY_ADDRESS": "http://127.0.0.1:1",
    }.items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(
        build_app(), ["backends", "check", "local", "ssh", "ray", "--home", str(tmp_path)], terminal_width=200
    )
    assert result.exit_code == 1, result.output  # ray is not reachable
    lines = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") >= 3}
    assert "yes" in lines["ssh"] and "reachable" in lines["ssh"]
    assert "no" in lines["ray"] and "ray http://127.0.0.1:1" in lines["ray"]
    assert "yes" in lines["local"]


def test_the_manifest_catches_a_changed_missing_or_extra_file(tmp_path: Path) -> None:
    (tmp_path / "adapter").mkdir()
    (tmp_path / "result.json").write_text('{"trainer": "grpo"}')
    (tmp_path / "adapter" / "weights.safetensors").write_bytes(b"\x00" * 64)
    (tmp_path / "job.log").write_text("streamed, not part of the result")
    assert sorted(write_manifest(tmp_path)["files"]) == ["adapter/weights.safetensors", "result.json"]
    assert verify_manifest(tmp_path) == 2
    (tmp_path / "adapter" / "weights.safetensors").write_bytes(b"\x01" * 64)
    with pytest.raises(ResultVerificationError, match=r"sha256 of adapter/weights\.safetensors is "):
        verify_manifest(tmp_path)
    (tmp_path / "adapter" / "weights.safetensors").unlink()
    with pytest.raises(ResultVerificationError, match=r"did not arrive: adapter/weights\.safetensors"):
        verify_manifest(tmp_path)
    write_manifest(tmp_path)
    (tmp_path / "extra.bin").write_bytes(b"x")
    with pytest.raises(ResultVerificationError, match=r"files not in outputs.sha256.json arrived: extra.bin"):
        verify_manifest(tmp_path)
    (tmp_path / "outputs.sha256.json").write_text(json.dumps({"files": {"../etc/passwd": {}}}))
    with pytest.raises(ResultVerificationError, match="escapes the output directory"):
        verify_manifest(tmp_path)
