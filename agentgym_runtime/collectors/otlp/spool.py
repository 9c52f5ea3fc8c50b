"""A bounded on-disk spool of OTLP requests that could not be delivered yet.

One file per request body (``<time>-<pid>-<spans>.otlp``, written atomically), shared by
the processes of a home: whoever reaches the collector first delivers it, the oldest first.
A file is claimed by renaming it before sending, so two processes never send the same file
at once; a claim left by a process that died is released by the next one that looks. The
collector acknowledges a request only once it is committed and recognizes the spans of a request
it already committed (:func:`~agentgym_runtime.collectors.otlp.sink.spans_id`), so a spooled
request is written once, even when the sender died between the commit and the deletion of the
file, or the file is delivered re-encoded as OTLP. A request the collector refuses for what
it holds (``400``, ``413``: sending it again cannot succeed) is moved to ``rejected/``
(bounded, kept for a look) so that it does not hold back the requests spooled after it.

Example:
    >>> import tempfile
    >>> spool = Spool(tempfile.mkdtemp())
    >>> spool.put(b"payload", spans=3)
    True
    >>> claim = spool.claim()
    >>> claim.payload, claim.spans
    (b'payload', 3)
    >>> spool.done(claim)
    >>> spool.claim() is None
    True
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from agentgym_runtime.recording.files import atomic_write_bytes

logger = logging.getLogger("agentgym_runtime.collector")

_SUFFIX = ".otlp"
_CLAIMED = ".claimed-"
#: Where refused requests are set aside.
REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class Claim:
    """A spooled request this process is delivering."""

    path: Path
    payload: bytes
    spans: int


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Spool:
    """Spooled OTLP request bodies in ``directory``, bounded by ``max_bytes``.

    Args:
        directory: Where the files live (created on first use).
        max_bytes: Total size kept; a request that would go past it is refused (and counted
            by the caller as dropped), so the spool never fills the disk.
        max_rejected_bytes: Total size of the refused requests kept in ``rejected/``; past
            it a refused request is deleted.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = 512 * 1024 * 1024,
        max_rejected_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.max_rejected_bytes = max_rejected_bytes
        self._lock = threading.Lock()
        self._seq = 0

    def put(self, payload: bytes, *, spans: int) -> bool:
        """Keep ``payload``; ``False`` if the spool is full."""
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            if self.size_bytes() + len(payload) > self.max_bytes:
                return False
            self._seq += 1
            name = f"{time.time_ns():020d}-{os.getpid()}-{self._seq}-{spans}{_SUFFIX}"
            # Not fsynced: the spool must survive the process (SIGKILL), which the page cache does.
            atomic_write_bytes(self.directory / name, payload, durable=False)
            return True

    def files(self) -> list[Path]:
        """Unclaimed spooled requests, oldest first."""
        try:
            names = sorted(n for n in os.listdir(self.directory) if n.endswith(_SUFFIX) and not n.startswith("."))
        except FileNotFoundError:
            return []
        return [self.directory / n for n in names]

    def size_bytes(self) -> int:
        """Bytes held, claimed files included."""
        total = 0
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    if _SUFFIX in entry.name:
                        try:
                            total += entry.stat().st_size
                        except FileNotFoundError:
                            pass
        except FileNotFoundError:
            return 0
        return total

    def spans(self) -> int:
        """Spans held in unclaimed files."""
        return sum(_spans_of(p.name) for p in self.files())

    def claim(self) -> Claim | None:
        """Take the oldest unclaimed request for delivery (``None`` when empty)."""
        for path in self.files():
            claimed = path.with_name(f".{path.name}{_CLAIMED}{os.getpid()}")
            try:
                os.rename(path, claimed)
            except FileNotFoundError:
                continue  # another process claimed it first
            return Claim(claimed, claimed.read_bytes(), _spans_of(path.name))
        return None

    def done(self, claim: Claim) -> None:
        """The collector acknowledged ``claim``: forget it."""
        claim.path.unlink(missing_ok=True)

    def release(self, claim: Claim) -> None:
        """Delivery failed: put ``claim`` back for a later try."""
        original = claim.path.name[1:].split(_CLAIMED)[0]
        try:
            os.rename(claim.path, claim.path.with_name(original))
        except FileNotFoundError:
            pass

    def reject(self, claim: Claim) -> None:
        """The collector refused ``claim`` for what it holds: set it aside, never send it again."""
        rejected = self.directory / REJECTED
        original = claim.path.name[1:].split(_CLAIMED)[0]
        with self._lock:
            if _size(rejected) + len(claim.payload) <= self.max_rejected_bytes:
                rejected.mkdir(exist_ok=True, mode=0o700)
                try:
                    os.rename(claim.path, rejected / original)
                    return
                except FileNotFoundError:
                    return
            claim.path.unlink(missing_ok=True)

    def set_aside(self, payload: bytes, *, spans: int) -> None:
        """Keep a request the collector refused when it was sent directly (see :meth:`reject`)."""
        rejected = self.directory / REJECTED
        with self._lock:
            if _size(rejected) + len(payload) > self.max_rejected_bytes:
                return
            rejected.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._seq += 1
            name = f"{time.time_ns():020d}-{os.getpid()}-{self._seq}-{spans}{_SUFFIX}"
            atomic_write_bytes(rejected / name, payload, durable=False)

    def release_stale(self) -> int:
        """Put back the claims of processes that died while delivering; how many."""
        released = 0
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return 0
        for name in names:
            if not name.startswith(".") or _CLAIMED not in name:
                continue
            original, _, pid = name[1:].rpartition(_CLAIMED)
            if pid.isdigit() and not _pid_alive(int(pid)):
                try:
                    os.rename(self.directory / name, self.directory / original)
                    released += 1
                except FileNotFoundError:
                    pass
        return released


def _size(directory: Path) -> int:
    try:
        with os.scandir(directory) as entries:
            return sum(entry.stat().st_size for entry in entries if entry.is_file())
    except FileNotFoundError:
        return 0


def _spans_of(name: str) -> int:
    stem = name.split(_CLAIMED, maxsplit=1)[0].removeprefix(".").removesuffix(_SUFFIX)
    last = stem.rsplit("-", 1)[-1]
    return int(last) if last.isdigit() else 0
