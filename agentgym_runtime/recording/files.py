"""Atomic, durable file writes: the one helper every writer of the home uses.

A reader (another process, a restarted service) sees either the old file or the new one, never a
torn write: the bytes go to a unique temporary file in the same directory, are flushed and
``fsync``-ed, and then ``os.replace`` swaps the file in; the directory is synced too, so a crash
right after the call cannot lose the rename.

Example:
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "state.json"
    >>> atomic_write_json(target, {"live": 1})
    >>> json.loads(target.read_text())
    {'live': 1}
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import threading
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically.

    Args:
        path: The file to write; its directory must exist.
        data: The whole new content.
        mode: Permission bits of the new file (private to the service's user by default).
        durable: ``fsync`` the file and its directory (skip only for throw-away status files).

    Raises:
        OSError: When the file cannot be written; the old content is then unchanged.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        _sync_directory(target.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, mode: int = 0o600, durable: bool = True) -> None:
    """Replace ``path`` with UTF-8 ``text`` atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"), mode=mode, durable=durable)


def atomic_write_json(
    path: str | os.PathLike[str], payload: Any, *, mode: int = 0o600, durable: bool = True, indent: int | None = 2
) -> None:
    """Replace ``path`` with ``payload`` as JSON atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_text(path, json.dumps(payload, indent=indent, default=str), mode=mode, durable=durable)


def ensure_private_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and its parents) if missing; a directory this call creates gets mode 0700.

    The home holds recorded content and the files that steer training, so only the service's
    user may list, read or write it (see ``SECURITY.md``). An existing directory keeps its mode:
    the operator chose it.

    Example:
        >>> import tempfile, pathlib, stat
        >>> home = ensure_private_dir(pathlib.Path(tempfile.mkdtemp()) / "home")
        >>> oct(stat.S_IMODE(home.stat().st_mode))
        '0o700'
    """
    directory = Path(path)
    if not directory.is_dir():
        directory.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # another process won the race
            directory.mkdir(mode=0o700)
        if not directory.is_dir():
            raise NotADirectoryError(f"{directory} exists and is not a directory")
    return directory


def untrusted_reason(
    path: str | os.PathLike[str], *, group_may_write: bool = False, uid: int | None = None
) -> tuple[os.stat_result, str | None]:
    """``lstat(path)`` and why its content may not be trusted (``None``: it may be).

    The one ownership rule for files other processes could have planted (policy pointers and
    artifacts, training request files): no symbolic link (never followed), owned by ``uid``
    (default: the service's effective user), not writable by others (nor by the group unless
    ``group_may_write``: shared service groups may write policies, not requests).

    Raises:
        FileNotFoundError: ``path`` does not exist.

    Example:
        >>> import tempfile
        >>> directory = Path(tempfile.mkdtemp())
        >>> directory.chmod(0o777)
        >>> untrusted_reason(directory)[1]
        'it is writable by group or others (mode 777)'
    """
    owner = os.geteuid() if uid is None else uid
    info = os.lstat(path)
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISLNK(info.st_mode):
        return info, "it is a symbolic link (copy the file in place instead)"
    if info.st_uid != owner:
        return info, f"owned by uid {info.st_uid}, not the service's user (uid {owner})"
    if not group_may_write and info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return info, f"it is writable by group or others (mode {mode:o})"
    if info.st_mode & stat.S_IWOTH:
        return info, f"it is world-writable (mode {mode:o})"
    return info, None


def _sync_directory(directory: Path) -> None:
    # The rename is durable only once the directory entry is; not every filesystem allows it.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
