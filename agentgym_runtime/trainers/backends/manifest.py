"""The sha256 manifest of a job's output: written next to the job, checked before registering.

The runner (:mod:`.runner`) writes ``outputs.sha256.json`` once the job has ended, listing
every file of ``output_dir`` (but the streamed ``job.log``/``progress.jsonl`` and the
runner's own status files) with its size and sha256. After a remote backend fetched the
directory, :func:`verify_manifest` recomputes each hash; a missing, extra, changed or
escaping file fails the run, so a torn or tampered download never becomes a candidate.

Example:
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> _ = (out / "result.json").write_text("{}")
    >>> sorted(write_manifest(out)["files"])
    ['result.json']
    >>> verify_manifest(out)
    1
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from agentgym_runtime.errors import AgentGymError
from agentgym_runtime.recording.files import atomic_write_json

MANIFEST_NAME = "outputs.sha256.json"
#: Written by the runner around the job (status, pids): never part of the result.
RUNNER_FILES = frozenset({"exit_code", "runner.json", "outputs.tar.gz"})
#: Streamed while the job runs (mirrored separately), so they change after the manifest.
STREAMED_FILES = frozenset({"job.log", "progress.jsonl", "spec.json"})


class ResultVerificationError(AgentGymError, RuntimeError):
    """A fetched job output does not match the manifest the job wrote."""


def _skipped(relative: str) -> bool:
    return relative in RUNNER_FILES or relative in STREAMED_FILES or relative == MANIFEST_NAME


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _files(output_dir: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(output_dir.rglob("*")):
        relative = path.relative_to(output_dir).as_posix()
        if _skipped(relative) or path.name.startswith("."):
            continue
        if path.is_symlink():
            raise ResultVerificationError(f"{relative} is a symlink; job outputs must be plain files")
        if path.is_file():
            found[relative] = path
    return found


def write_manifest(output_dir: str | Path) -> dict[str, Any]:
    """Hash every output file into ``outputs.sha256.json``; returns the manifest."""
    directory = Path(output_dir)
    files = {
        rel: {"sha256": sha256_file(path), "bytes": path.stat().st_size} for rel, path in _files(directory).items()
    }
    manifest = {"version": 1, "files": files}
    atomic_write_json(directory / MANIFEST_NAME, manifest)
    return manifest


def verify_manifest(output_dir: str | Path) -> int:
    """Check every file of ``output_dir`` against its manifest; returns how many were checked.

    Raises:
        ResultVerificationError: No manifest, or a file missing, unlisted, resized or with another hash.
    """
    directory = Path(output_dir)
    try:
        manifest = json.loads((directory / MANIFEST_NAME).read_text())
        listed: dict[str, Any] = dict(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ResultVerificationError(f"the job's output has no readable {MANIFEST_NAME}: {exc}") from None
    present = _files(directory)
    for relative in listed:
        if relative.startswith("/") or ".." in Path(relative).parts:
            raise ResultVerificationError(f"manifest entry {relative!r} escapes the output directory")
    missing = sorted(set(listed) - set(present))
    extra = sorted(set(present) - set(listed))
    if missing:
        raise ResultVerificationError(f"files listed in {MANIFEST_NAME} did not arrive: {', '.join(missing)}")
    if extra:
        raise ResultVerificationError(f"files not in {MANIFEST_NAME} arrived: {', '.join(extra)}")
    for relative, entry in listed.items():
        actual = sha256_file(present[relative])
        if actual != entry.get("sha256"):
            raise ResultVerificationError(
                f"sha256 of {relative} is {actual}, the job's manifest says {entry.get('sha256')}"
            )
    return len(listed)
