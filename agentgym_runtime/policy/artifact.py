"""Policy artifacts on disk: ``policies/<agent>/v<N>/`` with a manifest of sha256 digests.

An artifact is data only: ``policy.json`` (the :class:`~agentgym_runtime.recording.policy.Policy`),
an optional ``adapter/`` directory of safetensors files (plus JSON configs such as PEFT's
``adapter_config.json``), and ``manifest.json`` listing the sha256 of every file. Nothing is
unpickled and no code is imported. :func:`read_artifact` checks every digest, refuses files the
manifest does not list and extensions that could hold code, and only then parses the policy.

Everything an artifact names stays inside its directory: no symbolic link anywhere in it (a
link to a tensor file or to the ``adapter/`` directory is refused, not followed), ``llm.adapter``
must be a relative path to a directory of the artifact (``../..`` or an absolute path is refused),
and every file and directory must belong to the service's user and not be world-writable
(:mod:`~agentgym_runtime.policy.trust`). The registry also compares the manifest's own digest
with the one recorded at registration, which catches a rewritten ``policy.json`` whose manifest
was recomputed. An adapter trained for another base model than the policy's ``llm.model`` (or
``metadata["base_model"]``) is refused when it is written, not when it would serve.

An artifact is written into a temporary directory and renamed into place, so a reader never sees
half of one.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from agentgym_runtime.recording.policy import Policy
    >>> root = Path(tempfile.mkdtemp())
    >>> path = write_artifact(Policy(agent="bot", version=1, system_prompt="Be brief."), root)
    >>> path.name, read_artifact(path).system_prompt
    ('v1', 'Be brief.')
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import uuid
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Final

from pydantic import ValidationError

from agentgym_runtime.policy.errors import PolicyArtifactError, PolicyConflictError
from agentgym_runtime.policy.trust import check_trusted
from agentgym_runtime.recording.files import atomic_write_text
from agentgym_runtime.recording.policy import LLMConfig, Policy

MANIFEST: Final = "manifest.json"
POLICY_FILE: Final = "policy.json"
ADAPTER_DIR: Final = "adapter"
FORMAT_VERSION: Final = 1
#: The only file types an artifact may hold (data, never code or pickles).
ALLOWED_SUFFIXES: Final = frozenset({".json", ".safetensors"})
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


def version_dir(root: Path, agent: str, version: int) -> Path:
    """``<root>/<agent>/v<version>``.

    Example:
        >>> version_dir(Path("/p"), "bot", 3).as_posix()
        '/p/bot/v3'
    """
    return root / agent / f"v{version}"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks.

    Example:
        >>> import tempfile
        >>> f = Path(tempfile.mkdtemp()) / "x"
        >>> _ = f.write_bytes(b"abc")
        >>> sha256_file(f)[:12]
        'ba7816bf8f01'
    """
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_safetensors(path: Path) -> None:
    """A safetensors file starts with an 8-byte little-endian length and a JSON header."""
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
            if len(head) != 8:
                raise PolicyArtifactError(f"{path.name} is not a safetensors file (too short)")
            (length,) = struct.unpack("<Q", head)
            if length <= 0 or length > _MAX_SAFETENSORS_HEADER:
                raise PolicyArtifactError(f"{path.name} is not a safetensors file (header length {length})")
            header = json.loads(handle.read(length))
    except (OSError, ValueError) as exc:
        if isinstance(exc, PolicyArtifactError):
            raise
        raise PolicyArtifactError(f"{path.name} is not a safetensors file: {exc}") from exc
    if not isinstance(header, dict):
        raise PolicyArtifactError(f"{path.name} is not a safetensors file (header is not an object)")


def _listing(directory: Path) -> dict[str, Path]:
    return {p.relative_to(directory).as_posix(): p for p in sorted(directory.rglob("*")) if p.is_file()}


def _trusted_listing(directory: Path) -> dict[str, Path]:
    """Every file under ``directory``, refusing symlinks and untrusted files or directories (never followed)."""
    check_trusted(directory, "policy artifact directory")
    found: dict[str, Path] = {}
    for top, dirs, names in os.walk(directory, followlinks=False):
        base = Path(top)
        for name in sorted(dirs):  # os.walk lists a symlink to a directory here: refuse it
            check_trusted(base / name, "policy artifact directory")
        for name in sorted(names):
            path = base / name
            check_trusted(path, "policy artifact file")
            found[path.relative_to(directory).as_posix()] = path
    return dict(sorted(found.items()))


def adapter_base_model(adapter_dir: Path) -> str | None:
    """The base model an adapter was trained on (PEFT's ``adapter_config.json``), if it says.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> _ = (d / "adapter_config.json").write_text('{"base_model_name_or_path": "Qwen/Qwen2.5-0.5B"}')
        >>> adapter_base_model(d)
        'Qwen/Qwen2.5-0.5B'
    """
    config = adapter_dir / "adapter_config.json"
    try:
        payload = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    base = payload.get("base_model_name_or_path") if isinstance(payload, dict) else None
    return str(base) if base else None


def same_model(a: str, b: str) -> bool:
    """Whether two model references name the same model, in the forms trainers write them.

    A hub id and a local copy of it (``Qwen/Qwen2.5-0.5B`` and ``/models/Qwen2.5-0.5B``), or two
    spellings of one path, are the same; only a clearly different model is another one.

    Example:
        >>> same_model("Qwen/Qwen2.5-0.5B", "/models/Qwen2.5-0.5B/"), same_model("org/a", "org/b")
        (True, False)
    """
    left, right = a.strip().rstrip("/"), b.strip().rstrip("/")
    if left == right:
        return True
    if os.path.exists(left) and os.path.exists(right) and os.path.realpath(left) == os.path.realpath(right):
        return True
    return left.rsplit("/", 1)[-1] == right.rsplit("/", 1)[-1]


def _check_base_model(policy: Policy, source: Path) -> None:
    trained_on = adapter_base_model(source)
    serving = (policy.llm.model if policy.llm is not None else None) or policy.metadata.get("base_model")
    if trained_on is not None and isinstance(serving, str) and serving and not same_model(serving, trained_on):
        raise PolicyArtifactError(
            f"adapter {source} was trained on base model {trained_on!r} but {policy.ref} serves {serving!r}; "
            f"an adapter only works on its own base model (set llm.model to {trained_on!r} or retrain)"
        )


def check_adapter_reference(path: Path, policy: Policy, listed: Mapping[str, Any]) -> None:
    """Refuse an ``llm.adapter`` that leaves the artifact or names no adapter file it holds.

    Raises:
        PolicyArtifactError: Absolute, with ``..``, not a directory of the artifact, or no
            manifest-listed file under it; or ``metadata['artifact_dir']`` set (it would redirect
            where the adapter is looked up).
    """
    if "artifact_dir" in policy.metadata:
        raise PolicyArtifactError(
            f"policy artifact {path}: metadata['artifact_dir'] is not allowed in a stored artifact "
            f"(its adapter is always resolved inside {path})"
        )
    if policy.llm is None or not policy.llm.adapter:
        return
    adapter = policy.llm.adapter
    relative = PurePosixPath(adapter.replace("\\", "/"))
    if relative.is_absolute() or Path(adapter).is_absolute() or ".." in relative.parts or adapter.startswith("~"):
        raise PolicyArtifactError(
            f"policy artifact {path}: llm.adapter {adapter!r} points outside the artifact "
            f"(it must be a relative path inside it, e.g. {ADAPTER_DIR!r})"
        )
    prefix = relative.as_posix().rstrip("/") + "/"
    if not any(name.startswith(prefix) for name in listed):
        raise PolicyArtifactError(
            f"policy artifact {path}: llm.adapter {adapter!r} names no directory of adapter files in the artifact"
        )


def write_artifact(policy: Policy, root: Path, adapter_dir: Path | str | None = None) -> Path:
    """Write ``policy`` (and the safetensors files of ``adapter_dir``) as a verified artifact.

    Args:
        policy: The policy; its ``agent`` and ``version`` name the directory.
        root: The policies directory (``<home>/policies``).
        adapter_dir: A directory whose ``*.safetensors`` (and ``*.json`` config) files are copied
            into ``adapter/``; ``policy.llm.adapter`` then points there.

    Returns:
        The artifact directory.

    Raises:
        PolicyConflictError: The version directory exists already.
        PolicyArtifactError: ``adapter_dir`` is missing, holds no safetensors file, or holds an
            invalid one.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> sorted(p.name for p in write_artifact(Policy(agent="a", version=1), root).iterdir())
        ['manifest.json', 'policy.json']
    """
    target = version_dir(root, policy.agent, policy.version)
    if target.exists():
        raise PolicyConflictError(f"{policy.ref} already exists at {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-v{policy.version}-{uuid.uuid4().hex}"
    tmp.mkdir(mode=0o700)  # private whatever the umask: a world-writable artifact is refused
    try:
        if adapter_dir is not None:
            source = Path(adapter_dir)
            if not source.is_dir():
                raise PolicyArtifactError(f"adapter directory {source} does not exist")
            tensors = sorted(source.glob("*.safetensors"))
            if not tensors:
                found = ", ".join(sorted(p.name for p in source.iterdir())) or "(empty)"
                raise PolicyArtifactError(f"adapter directory {source} holds no .safetensors file (found: {found})")
            _check_base_model(policy, source)
            (tmp / ADAPTER_DIR).mkdir(mode=0o700)
            for file in tensors:
                _check_safetensors(file)
                _copy_private(file, tmp / ADAPTER_DIR / file.name)
            for file in sorted(source.glob("*.json")):
                json.loads(file.read_text(encoding="utf-8"))  # data only: must parse
                _copy_private(file, tmp / ADAPTER_DIR / file.name)
            llm = policy.llm or LLMConfig()
            policy = policy.model_copy(update={"llm": llm.model_copy(update={"adapter": ADAPTER_DIR})})
        atomic_write_text(tmp / POLICY_FILE, policy.model_dump_json(indent=2))
        files = {name: sha256_file(path) for name, path in _listing(tmp).items()}
        manifest: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "agent": policy.agent,
            "version": policy.version,
            "files": files,
        }
        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))
        try:
            os.rename(tmp, target)
        except OSError as exc:
            raise PolicyConflictError(f"{policy.ref} already exists at {target}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _copy_private(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)
    target.chmod(0o600)


def manifest_digest(path: Path) -> str:
    """sha256 of an artifact's ``manifest.json`` (identifies the artifact as a whole).

    Raises:
        PolicyArtifactError: The manifest is missing.
    """
    try:
        return sha256_file(path / MANIFEST)
    except OSError as exc:
        raise PolicyArtifactError(f"policy artifact {path} has no readable {MANIFEST}: {exc}") from exc


def verify_artifact(path: Path) -> dict[str, Any]:
    """Check an artifact against its manifest; return the manifest.

    Raises:
        PolicyArtifactError: Missing manifest or file, digest mismatch, unlisted file, or a file
            type that is not data; the message says which file and why.
    """
    manifest_path = path / MANIFEST
    if not os.path.lexists(path):
        raise PolicyArtifactError(f"policy artifact {path} does not exist")
    present = _trusted_listing(path)  # before reading anything: no symlink, no foreign or o+w file
    if not path.is_dir():
        raise PolicyArtifactError(f"policy artifact {path} is not a directory")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PolicyArtifactError(f"policy artifact {path}: cannot read {MANIFEST}: {exc}") from exc
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or POLICY_FILE not in files:
        raise PolicyArtifactError(f"policy artifact {path}: {MANIFEST} does not list {POLICY_FILE}")
    if manifest.get("format") != FORMAT_VERSION:
        raise PolicyArtifactError(f"policy artifact {path}: unsupported format {manifest.get('format')!r}")
    present.pop(MANIFEST, None)
    allowed = ", ".join(sorted(ALLOWED_SUFFIXES))
    for name in present:
        if Path(name).suffix not in ALLOWED_SUFFIXES:
            raise PolicyArtifactError(f"policy artifact {path}: refusing {name} (only {allowed} files are allowed)")
        if name not in files:
            raise PolicyArtifactError(f"policy artifact {path}: {name} is not listed in {MANIFEST} (tampered?)")
    for name, expected in files.items():
        listed = present.get(name)
        if listed is None:
            raise PolicyArtifactError(f"policy artifact {path}: {name} is listed in {MANIFEST} but missing")
        actual = sha256_file(listed)
        if actual != expected:
            raise PolicyArtifactError(
                f"policy artifact {path}: sha256 mismatch for {name} (expected {expected[:16]}…, got {actual[:16]}…)"
            )
        if name.endswith(".safetensors"):
            _check_safetensors(listed)
    return dict(manifest)


def read_artifact(path: Path, *, agent: str | None = None, version: int | None = None) -> Policy:
    """Verify an artifact, then parse its policy.

    Args:
        path: The artifact directory.
        agent: The agent it must belong to, if known.
        version: The version it must be, if known.

    Raises:
        PolicyArtifactError: Verification failed, ``policy.json`` is not a valid policy, or it names
            another agent or version than its directory.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> read_artifact(write_artifact(Policy(agent="a", version=2), root), agent="a", version=2).ref
        'a@v2'
    """
    manifest = verify_artifact(path)
    try:
        policy = Policy.model_validate_json((path / POLICY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValidationError) as exc:
        raise PolicyArtifactError(f"policy artifact {path}: {POLICY_FILE} is not a valid policy: {exc}") from exc
    if agent is not None and policy.agent != agent:
        raise PolicyArtifactError(f"policy artifact {path} belongs to agent {policy.agent!r}, not {agent!r}")
    if version is not None and policy.version != version:
        raise PolicyArtifactError(f"policy artifact {path} holds version {policy.version}, not {version}")
    check_adapter_reference(path, policy, manifest["files"])
    return policy
