"""The store owner's crash journal: what it recorded survives SIGKILL until the store has it.

The owner of a home writes its own spans in-process; between a span's end and the commit of
its batch (up to ``schedule_delay_ms``, longer when the writer lags) the row lives only in
memory. So, as each span ends, its row (already built by
:func:`~agentgym_runtime.collectors.rows.span_record`) is copied into this process's journal: a
segment file mapped shared into memory, so the bytes are in the kernel's page cache, which
survives the death of the process (not a power cut: the journal is never fsynced, the cost would
be per span), and no system call releases the GIL on the agent's thread. Once a batch is
committed the writer *settles* its rows; a segment whose rows are all settled is zeroed (the
current one) or deleted (an older one), so a quiet journal holds no record.

Files, in ``<home>/journal/`` (mode 0700, files 0600):

* ``<pid>-<nonce>.lock``: held with ``flock`` for the life of the process, so a reader knows
  for certain whether the writer is alive (the kernel drops the lock at death; a reused pid
  gets another nonce). A forked child closes its copies of the parent's descriptors and
  starts its own journal on its first span.
* ``<pid>-<nonce>.<seq>.journal``: segments, each a header (:data:`MAGIC`) then records
  ``<length u32 LE><crc32 u32 LE><payload>``; the checksum covers the length and the payload,
  so a torn last record (a write cut short by the kill) or flipped bits end the readable
  prefix: :func:`read_frames` returns the records before it, never raises.

The payload is compact JSON: ``[table, row, table, row, ...]`` with ``table`` one of ``s``
(``spans``), ``e`` (``episodes``), ``f`` (``feedback``); an episode's root span gives its
``spans`` and its ``episodes`` row in one record.

The process that takes a home over replays the journals of dead processes
(:func:`replay_dead_journals`): it checks each file (owned by the service's user, not
writable by others, no symbolic link, bounded size: :func:`~agentgym_runtime.recording.files.untrusted_reason`),
reads the valid prefix, and inserts in one transaction the rows whose ``span_id``
(``episode_id``, ``feedback_id``) the store does not have yet; then it deletes the files.

Example:
    >>> frames = frame(b"one") + frame(b"two")
    >>> read_frames(MAGIC + frames)
    ([b'one', b'two'], None)
    >>> read_frames(MAGIC + frames[:-1])  # the last record torn
    ([b'one'], 'torn record at byte 22')
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import mmap
import os
import secrets
import struct
import threading
import weakref
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from agentgym_runtime.collectors.rows import Row, RowBatch, SpanRecord, span_rows
from agentgym_runtime.collectors.schema import EPISODE_COLUMNS, FEEDBACK_COLUMNS, SPAN_COLUMNS
from agentgym_runtime.recording.files import ensure_private_dir, untrusted_reason

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

    from agentgym_runtime.collectors.store import TraceStore

logger = logging.getLogger("agentgym_runtime.journal")

#: Folder of the home holding the journals.
JOURNAL_DIR: Final = "journal"
#: First bytes of every segment (a file without them is not a journal: refused).
MAGIC: Final = b"AGJOURNAL1\n"
#: Largest record accepted (a longer length field is corruption).
MAX_RECORD_BYTES: Final = 16 * 1024 * 1024

_HEADER: Final = struct.Struct("<II")
_SPAN_ID_AT: Final = SPAN_COLUMNS.index("span_id")
_WIDTHS: Final = {"s": len(SPAN_COLUMNS), "e": len(EPISODE_COLUMNS), "f": len(FEEDBACK_COLUMNS)}
#: Columns holding timestamps, per table (JSON carries them as ISO 8601 text).
_TIMESTAMPS: Final = {
    "s": (),
    "e": tuple(i for i, (_, sql) in enumerate(EPISODE_COLUMNS) if sql.startswith("TIMESTAMP")),
    "f": tuple(i for i, (_, sql) in enumerate(FEEDBACK_COLUMNS) if sql.startswith("TIMESTAMP")),
}
_SCALARS: Final = (str, int, float, bool, type(None))
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=lambda v: v.isoformat()).encode

try:  # the collector extra brings orjson: ~1 µs a row where the json module takes ~5 (2 shared cores)
    import orjson

    def _fast_payload(value: Any) -> bytes:
        return orjson.dumps(value, default=tuple)  # a SpanRecord is a tuple subclass

except ImportError:  # pragma: no cover - the collector extra installs it

    def _fast_payload(value: Any) -> bytes:
        return encode_rows([value])


def frame(payload: bytes) -> bytes:
    """One journal record: length, checksum (over length and payload), payload.

    Example:
        >>> len(frame(b"abc"))
        11
    """
    length = len(payload).to_bytes(4, "little")
    return length + (zlib.crc32(payload, zlib.crc32(length)) & 0xFFFFFFFF).to_bytes(4, "little") + payload


def read_frames(data: bytes) -> tuple[list[bytes], str | None]:
    """The payloads of the valid prefix of a segment, and why reading stopped early (if it did).

    Never raises: a short header, an impossible length, a record past the end or a checksum
    that does not match ends the prefix (a torn write or corruption); what follows is dropped.

    Example:
        >>> read_frames(b"not a journal")
        ([], 'not a journal segment')
        >>> read_frames(MAGIC)
        ([], None)
    """
    if not data.startswith(MAGIC):
        return [], None if len(data) < len(MAGIC) and MAGIC.startswith(data) else "not a journal segment"
    payloads: list[bytes] = []
    view = memoryview(data)
    at = len(MAGIC)
    end = len(data)
    while at < end:
        if end - at < _HEADER.size:
            return payloads, f"torn record at byte {at}"
        length, checksum = _HEADER.unpack_from(view, at)
        if length == 0 and checksum == 0 and data.count(0, at) == end - at:
            return payloads, None  # the zeroed, not yet written rest of a segment
        stop = at + _HEADER.size + length
        if length > MAX_RECORD_BYTES or stop > end:
            return payloads, f"torn record at byte {at}"
        payload = bytes(view[at + _HEADER.size : stop])
        if zlib.crc32(payload, zlib.crc32(view[at : at + 4])) & 0xFFFFFFFF != checksum:
            return payloads, f"checksum mismatch at byte {at}"
        payloads.append(payload)
        at = stop
    return payloads, None


def encode_rows(pairs: Sequence[tuple[str, Row]]) -> bytes:
    """The payload of one record: ``(table, row)`` pairs as compact JSON.

    Example:
        >>> encode_rows([("f", ("f1", "e1", "thumbs", 1.0, None, None, None))])
        b'["f",["f1","e1","thumbs",1.0,null,null,null]]'
    """
    flat: list[Any] = []
    for table, row in pairs:
        flat.append(table)
        flat.append(row)
    # surrogatepass: a lone surrogate (the writer quarantines such rows) must not lose the record.
    return _encode(flat).encode("utf-8", "surrogatepass")


def decode_rows(payload: bytes) -> list[tuple[str, Row]] | None:
    """The ``(table, row)`` pairs of a payload; ``None`` if it is not a valid one.

    Example:
        >>> row = ("f1", "e1", "thumbs", 1.0, None, None, "2024-01-01T00:00:00+00:00")
        >>> decode_rows(encode_rows([("f", row)]))[0][1][6].year
        2024
        >>> decode_rows(b'["x", [1]]') is None
        True
    """
    try:
        flat = json.loads(payload.decode("utf-8", "surrogatepass"))
    except (ValueError, UnicodeError, RecursionError):
        return None
    if not isinstance(flat, list) or not flat or len(flat) % 2:
        return None
    pairs: list[tuple[str, Row]] = []
    for index in range(0, len(flat), 2):
        table, row = flat[index], flat[index + 1]
        if table not in _WIDTHS or not isinstance(row, list) or len(row) != _WIDTHS[table]:
            return None
        if not all(isinstance(value, _SCALARS) for value in row):
            return None
        for column in _TIMESTAMPS[table]:
            if row[column] is not None:
                try:
                    row[column] = datetime.fromisoformat(row[column])
                except (TypeError, ValueError):
                    return None
        pairs.append((table, tuple(row)))
    return pairs


@dataclass
class JournalStats:
    """What the journal did (shown as ``journal`` in the pipeline's stats)."""

    records: int = 0
    refused_full: int = 0
    write_errors: int = 0
    unconvertible: int = 0
    segments_removed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **deltas: int) -> None:
        """Add ``deltas`` to the named counters."""
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def snapshot(self) -> dict[str, int]:
        """The counters as a dict (``records`` is counted under the journal's own lock)."""
        with self._lock:
            return {k: v for k, v in vars(self).items() if not k.startswith("_")}


_journals: weakref.WeakSet[Journal] = weakref.WeakSet()


class Journal:
    """This process's journal in ``directory``, bounded by ``max_bytes``.

    Files are created on the first record. While ``active`` is false (a process that sends
    its spans to another owner), nothing is written.

    Args:
        directory: ``<home>/journal``.
        max_bytes: Bytes this process's segments may take; a record that would need one more
            segment past it is not journaled (counted in ``refused_full``), the span still goes
            to the writer.
        segment_bytes: Size of one segment, allocated whole and mapped into memory when it
            starts; a full one is followed by the next, and deleted once its rows are settled.
        active: Journal from the start (the owner) or only after :meth:`activate`.

    Example:
        >>> import tempfile
        >>> journal = Journal(Path(tempfile.mkdtemp()))
        >>> row = [None] * len(SPAN_COLUMNS); row[1] = "00000000000000aa"
        >>> journal.write_record(SpanRecord(row))
        >>> journal.outstanding
        1
        >>> journal.settle([tuple(row)]); journal.outstanding, journal.used_bytes
        (0, 11)
        >>> journal.close()
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int = 64 * 1024 * 1024,
        segment_bytes: int = 4 * 1024 * 1024,
        active: bool = True,
    ) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.active = active
        self.stats = JournalStats()
        self._lock = threading.Lock()
        self._reset()
        self._logged: set[str] = set()
        _journals.add(self)

    def _reset(self) -> None:
        self._stem: str | None = None
        self._lock_fd: int | None = None
        self._map: mmap.mmap | None = None  # the current segment
        self._seq = 0
        self._used = 0  # bytes of the current segment holding records (its write offset)
        self._older: dict[int, mmap.mmap] = {}  # older segments still holding unsettled rows
        self._ids: dict[int, set[str]] = {}  # segment -> span ids of its rows not yet settled
        self._pending: dict[str, int] = {}  # span id -> segment
        self._failed = False

    # --- the hot path ----------------------------------------------------------------------------
    def write_record(self, record: SpanRecord) -> None:
        """Journal the ``spans`` row of a span that just ended."""
        if not self.active:
            return
        try:
            payload = _fast_payload(("s", record))
        except Exception:  # a lone surrogate, an integer past 64 bits: the json module keeps it
            try:
                payload = encode_rows([("s", record)])
            except Exception:
                self.stats.add(unconvertible=1)
                return
        self._append(frame(payload), record[_SPAN_ID_AT])

    def write_span(self, span: ReadableSpan) -> RowBatch | None:
        """Journal the rows of a span the processor did not turn into a record (a root, feedback).

        Returns the rows built for it (``None`` when inactive or unconvertible), so that they
        travel on to the writer instead of being built a second time there.
        """
        if not self.active:
            return None
        try:
            batch = span_rows([span])
            if not batch.spans:
                return None
            pairs = [("s", batch.spans[0])]
            pairs += [("e", row) for row in batch.episodes] + [("f", row) for row in batch.feedback]
        except Exception:
            self.stats.add(unconvertible=1)
            return None
        try:
            payload = _fast_payload(tuple(item for pair in pairs for item in pair))
        except Exception:
            try:
                payload = encode_rows(pairs)
            except Exception:
                self.stats.add(unconvertible=1)
                return batch
        self._append(frame(payload), batch.spans[0][_SPAN_ID_AT])
        return batch

    def _append(self, data: bytes, span_id: Any) -> None:
        # A copy into a shared mapping of the file: no system call, so the agent's thread keeps
        # the GIL (an os.write per span released it, and the writer thread, busy converting a
        # batch, then held it for a switch interval: 30-60 µs a span on two loaded cores).
        with self._lock:
            if self._failed:
                return
            if self._map is None and not self._open():
                return
            size = len(data)
            if self._used + size > self.segment_bytes:
                if (
                    size + len(MAGIC) > self.segment_bytes
                    or (len(self._older) + 2) * self.segment_bytes > self.max_bytes
                ):
                    self.stats.refused_full += 1
                    self._log_once("full", f"agentgym: the journal {self.directory} is full ({self.max_bytes} bytes)")
                    return
                if not self._rotate():
                    return
            mapping = self._map
            assert mapping is not None
            mapping[self._used : self._used + size] = data
            self._used += size
            seq = self._seq
            self._ids[seq].add(span_id)
            self._pending[span_id] = seq
            self.stats.records += 1  # under the journal's lock: no second lock on the hot path

    # --- the writer's side -------------------------------------------------------------------------
    def settle(self, rows: Iterable[Row]) -> None:
        """The ``spans`` rows ``rows`` are committed (or set aside for good): forget their records.

        Runs on the writer's thread without the journal's lock (single dict and set operations
        are atomic under the GIL): an agent's thread never waits for a batch to be settled,
        which, on two loaded cores, cost it the GIL for a switch interval. The lock is taken
        only when a segment has no unsettled row left, to empty or delete it.
        """
        pending = self._pending
        if not pending:
            return
        ids = self._ids
        emptied = False
        for row in rows:
            span_id = row[_SPAN_ID_AT]
            seq = pending.pop(span_id, None)
            if seq is not None:
                members = ids.get(seq)
                if members is not None:
                    members.discard(span_id)
                    emptied = emptied or not members
        if emptied:
            with self._lock:
                self._collect()

    def _collect(self) -> None:
        """Delete older segments whose rows are all settled; empty the current one if it is too."""
        for seq in [s for s, members in self._ids.items() if not members]:
            if seq == self._seq:
                mapping = self._map
                if mapping is not None and self._used > len(MAGIC):
                    # Zeros end the readable prefix: the settled records are gone for a reader.
                    mapping[len(MAGIC) : self._used] = bytes(self._used - len(MAGIC))
                    self._used = len(MAGIC)
                continue
            del self._ids[seq]
            older = self._older.pop(seq, None)
            if older is not None:
                older.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._segment(seq))
            self.stats.segments_removed += 1

    @property
    def outstanding(self) -> int:
        """Journaled rows whose batch is not committed yet."""
        return len(self._pending)

    @property
    def used_bytes(self) -> int:
        """Bytes of the current segment holding records (its header included)."""
        return self._used

    @property
    def size_bytes(self) -> int:
        """Bytes this process's segments take on disk (each is allocated whole when it starts)."""
        return (len(self._older) + (self._map is not None)) * self.segment_bytes

    def activate(self) -> None:
        """Start journaling (the process just took the home over)."""
        self.active = True

    def close(self, *, remove: bool = True) -> None:
        """Close the files; ``remove`` (a clean shutdown, everything committed) deletes them.

        Segments holding rows that are still not settled stay for the next owner to replay.
        """
        with self._lock:
            self.active = False
            maps = [*self._older.values(), *([self._map] if self._map is not None else [])]
            for mapping in maps:
                mapping.close()
            keep = {seq for seq, members in self._ids.items() if members}
            if remove and self._stem is not None:
                for seq in [*self._older, self._seq]:
                    if seq not in keep:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(self._segment(seq))
                if not keep:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.directory / f"{self._stem}.lock")
            self._map, self._older = None, {}
            lock_fd, self._lock_fd = self._lock_fd, None
            if lock_fd is not None:
                os.close(lock_fd)  # releases the flock: a later owner may replay what was kept

    # --- files -----------------------------------------------------------------------------------------
    def _segment(self, seq: int) -> Path:
        return self.directory / f"{self._stem}.{seq:06d}.journal"

    def _open(self) -> bool:
        """Create this process's lock file (held) and first segment."""
        try:
            ensure_private_dir(self.directory)
            stem = f"{os.getpid()}-{secrets.token_hex(4)}"
            lock_fd = _create(self.directory / f"{stem}.lock")
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._failed = True
            self._log_once("open", f"agentgym: cannot create a journal in {self.directory}: {exc}; not journaling")
            return False
        self._stem, self._lock_fd = stem, lock_fd
        if not self._rotate(first=True):
            self._failed = True
            return False
        return True

    def _rotate(self, *, first: bool = False) -> bool:
        seq = self._seq if first else self._seq + 1
        path = self._segment(seq)
        try:
            fd = _create(path)
            try:
                # Blocks reserved now: a full disk fails here, cleanly, instead of as a SIGBUS
                # when a page of the mapping is first written.
                os.posix_fallocate(fd, 0, self.segment_bytes)
                mapping = mmap.mmap(
                    fd, self.segment_bytes, flags=mmap.MAP_SHARED, prot=mmap.PROT_WRITE | mmap.PROT_READ
                )
            finally:
                os.close(fd)
            mapping[: len(MAGIC)] = MAGIC
        except (OSError, ValueError) as exc:
            with contextlib.suppress(OSError):
                os.unlink(path)
            self._log_once("segment", f"agentgym: cannot start a journal segment {path}: {exc}")
            return False
        previous = self._map
        if previous is not None:
            if self._ids.get(self._seq):
                self._older[self._seq] = previous
            else:
                previous.close()
                self._ids.pop(self._seq, None)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._segment(self._seq))
        self._ids[seq] = set()
        self._map, self._seq, self._used = mapping, seq, len(MAGIC)
        return True

    def _after_fork_in_child(self) -> None:
        # The mappings and the lock are the parent's: unmap them in this process (the parent's
        # stay), close our copy of the lock's descriptor (the parent keeps its flock) and start
        # a journal of our own on the next record.
        self._lock = threading.Lock()
        for mapping in [*self._older.values(), *([self._map] if self._map is not None else [])]:
            with contextlib.suppress(Exception):
                mapping.close()
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
        self._reset()

    def _log_once(self, key: str, message: str) -> None:
        if key not in self._logged:
            self._logged.add(key)
            logger.warning(message)


def _create(path: Path) -> int:
    # Read-write: a segment is mapped shared (a mapping needs both); O_EXCL never reuses a file.
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)


def _after_fork_in_child() -> None:
    for journal in list(_journals):
        journal._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


# --- replay ---------------------------------------------------------------------------------------


@dataclass
class Replay:
    """What :func:`replay_dead_journals` did."""

    journals: int = 0
    spans: int = 0
    episodes: int = 0
    feedback: int = 0
    already_stored: int = 0
    torn: int = 0
    invalid_records: int = 0
    refused: list[str] = field(default_factory=list)


def replay_dead_journals(home: Path, store: TraceStore, *, own: Journal | None = None) -> Replay:
    """Write into ``store`` what the dead processes of ``home`` journaled and the store lacks.

    Call it in the process that owns the store. A journal whose lock is held belongs to a live
    process and is left alone; a file that fails the ownership rule or the size bound is refused
    (left in place, named in ``refused``). Rows already stored (by ``span_id``, ``episode_id``,
    ``feedback_id``) are skipped, so replaying twice, or a journal whose last batch did commit,
    writes nothing twice. The files are deleted once their rows are committed.
    """
    result = Replay()
    directory = Path(home) / JOURNAL_DIR
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return result
    own_stem = own._stem if own is not None else None
    stems = {name.split(".", 1)[0] for name in names if name.endswith((".lock", ".journal"))}
    limit = (own.max_bytes if own is not None else 64 * 1024 * 1024) + MAX_RECORD_BYTES
    for stem in sorted(stems - {own_stem}):
        lock_path = directory / f"{stem}.lock"
        lock_fd = _lock_if_dead(lock_path, result)
        if lock_fd is False:
            continue
        try:
            segments = sorted(n for n in names if n.startswith(f"{stem}.") and n.endswith(".journal"))
            batch = RowBatch()
            readable: list[Path] = []
            for name in segments:
                path = directory / name
                data = _read_trusted(path, limit, result)
                if data is None:
                    continue
                readable.append(path)
                payloads, stop = read_frames(data)
                if stop is not None:
                    result.torn += 1
                    logger.info("agentgym: journal %s: %s; replaying the %d before it", path, stop, len(payloads))
                for payload in payloads:
                    pairs = decode_rows(payload)
                    if pairs is None:
                        result.invalid_records += 1
                        continue
                    for table, row in pairs:
                        {"s": batch.spans, "e": batch.episodes, "f": batch.feedback}[table].append(row)
            if batch:
                _write_missing(store, batch, result)
            result.journals += 1
            for path in readable:
                path.unlink(missing_ok=True)
            if isinstance(lock_fd, int) and len(readable) == len(segments):
                lock_path.unlink(missing_ok=True)
        finally:
            if isinstance(lock_fd, int):
                os.close(lock_fd)
    if result.refused:
        logger.warning("agentgym: journal files refused (left in place): %s", "; ".join(result.refused))
    if result.spans or result.episodes or result.feedback:
        logger.warning(
            "agentgym: replayed %d spans, %d episodes, %d feedback rows journaled by dead processes of %s",
            result.spans,
            result.episodes,
            result.feedback,
            home,
        )
    return result


def _lock_if_dead(lock_path: Path, result: Replay) -> int | bool:
    """Lock the journal's lock file if its process is dead.

    Returns:
        The descriptor holding the lock; ``True`` when there is no lock file; ``False`` when the
        process lives or the file is refused.
    """
    try:
        _, reason = untrusted_reason(lock_path)
    except FileNotFoundError:
        return True  # segments without their lock file: no live process holds them
    if reason is not None:
        result.refused.append(f"{lock_path}: {reason}")
        return False
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False  # alive (or another owner is replaying it right now)
    return fd


def _read_trusted(path: Path, limit: int, result: Replay) -> bytes | None:
    try:
        info, reason = untrusted_reason(path)
        if reason is None and info.st_size > limit:
            reason = f"larger than the journal bound ({info.st_size} > {limit} bytes)"
        if reason is not None:
            result.refused.append(f"{path}: {reason}")
            return None
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):
            result.refused.append(f"{path}: replaced while being opened")
            return None
        with os.fdopen(os.dup(fd), "rb") as handle:
            return handle.read(limit)
    finally:
        os.close(fd)


def _write_missing(store: TraceStore, batch: RowBatch, result: Replay) -> None:
    from agentgym_runtime.collectors.exporter import _append, is_data_error

    def write(con: Any, rows: RowBatch) -> tuple[int, int, int, int]:
        missing = RowBatch()
        already = 0
        for table_rows, into, table, column, index in (
            (rows.spans, missing.spans, "spans", "span_id", _SPAN_ID_AT),
            (rows.episodes, missing.episodes, "episodes", "episode_id", 0),
            (rows.feedback, missing.feedback, "feedback", "feedback_id", 0),
        ):
            if not table_rows:
                continue
            ids = list({row[index] for row in table_rows})
            present = {
                found
                for (found,) in con.execute(
                    f"SELECT {column} FROM {table} WHERE {column} IN (SELECT unnest(?))", [ids]
                ).fetchall()
            }
            seen: set[Any] = set()
            for row in table_rows:
                key = row[index]
                if key in present or key in seen:
                    already += 1
                    continue
                seen.add(key)
                into.append(row)
        _append(con, missing)
        return len(missing.spans), len(missing.episodes), len(missing.feedback), already

    try:
        counts = [store.write(functools.partial(write, rows=batch))]
    except Exception as exc:
        if not is_data_error(exc):
            raise
        # A row the store refuses (the writer would have quarantined it): write the others one
        # by one, and count the refused ones instead of blocking the replay forever.
        counts = []
        singles = [RowBatch(spans=[r]) for r in batch.spans] + [RowBatch(episodes=[r]) for r in batch.episodes]
        for single in singles + [RowBatch(feedback=[r]) for r in batch.feedback]:
            try:
                counts.append(store.write(functools.partial(write, rows=single)))
            except Exception as row_exc:
                if not is_data_error(row_exc):
                    raise
                result.invalid_records += 1
    result.spans += sum(c[0] for c in counts)
    result.episodes += sum(c[1] for c in counts)
    result.feedback += sum(c[2] for c in counts)
    result.already_stored += sum(c[3] for c in counts)
