"""The owner's crash journal: framing, settling, bounds, fork, trust, and replay into the store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider

from agentgym_runtime import semconv
from agentgym_runtime.collectors.journal import (
    JOURNAL_DIR,
    MAGIC,
    Journal,
    decode_rows,
    encode_rows,
    frame,
    read_frames,
    replay_dead_journals,
)
from agentgym_runtime.collectors.rows import SpanRecord, span_record
from agentgym_runtime.collectors.schema import SPAN_COLUMNS
from agentgym_runtime.collectors.store import TraceStore

SPAN_ID = SPAN_COLUMNS.index("span_id")


def _record(n: int) -> SpanRecord:
    row: list[object] = [None] * len(SPAN_COLUMNS)
    row[0], row[SPAN_ID], row[3] = "%032x" % 7, "%016x" % (n + 1), f"execute_tool t{n}"  # noqa: UP031
    row[4], row[5], row[6], row[7] = "INTERNAL", 1_700_000_000_000_000_000 + n, 1_700_000_000_000_000_001 + n, "UNSET"
    return SpanRecord(row)


def _stems(directory: Path) -> set[str]:
    return {p.name.split(".", 1)[0] for p in directory.iterdir()}


# --- framing ------------------------------------------------------------------------------------


def test_frames_round_trip_and_a_torn_or_flipped_record_ends_the_prefix() -> None:
    payloads = [b"a", b"", b"x" * 1000]
    data = MAGIC + b"".join(frame(p) for p in payloads)
    assert read_frames(data) == (payloads, None)
    assert read_frames(data[:-1])[0] == payloads[:2]
    flipped = bytearray(data)
    flipped[len(MAGIC) + 8] ^= 0x01  # the first payload's byte
    assert read_frames(bytes(flipped)) == ([], f"checksum mismatch at byte {len(MAGIC)}")
    assert read_frames(b"")[0] == [] and read_frames(MAGIC[:4]) == ([], None)
    assert read_frames(b"\x00" * 64) == ([], "not a journal segment")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payloads=st.lists(st.binary(max_size=300), max_size=20),
    cut=st.integers(min_value=0),
    flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=7)), max_size=3),
)
def test_any_truncation_or_bit_flip_gives_the_valid_prefix_and_never_raises(
    payloads: list[bytes], cut: int, flips: list[tuple[int, int]]
) -> None:
    frames = [frame(p) for p in payloads]
    data = bytearray(MAGIC + b"".join(frames))
    data = data[: len(MAGIC) + cut % (len(data) - len(MAGIC) + 1)]
    intact = bytes(data)
    for at, bit in flips:
        if len(data) > len(MAGIC):
            data[len(MAGIC) + at % (len(data) - len(MAGIC))] ^= 1 << bit
    # The first byte that differs from what was written (two flips of one bit cancel out).
    first_damage = next((i for i, (a, b) in enumerate(zip(intact, data, strict=True)) if a != b), len(data))
    recovered, _ = read_frames(bytes(data))
    # Every record that ends before the first damaged byte is recovered, and nothing else (a
    # crc32 collision on a damaged record is the only way past it: 2^-32, not seen here).
    whole, end = 0, len(MAGIC)
    for item in frames:
        if end + len(item) > first_damage:
            break
        end += len(item)
        whole += 1
    assert recovered == payloads[:whole]


def test_rows_round_trip_with_timestamps_and_invalid_payloads_are_rejected() -> None:
    from datetime import UTC, datetime

    episode = ("e1", "a", 0, None, "t", datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC), 1.5)
    episode += ("ok", None, None, None, None, 1, 0, 1.0, 1, 0, 0, None, '"in"', None, None)
    record = _record(1)
    assert decode_rows(encode_rows([("s", record), ("e", episode)])) == [("s", tuple(record)), ("e", episode)]
    for bad in (b"", b"{}", b"[]", b'["s"]', b'["s", [1]]', b'["q", []]', b"\xff", b'["f", [[1],2,3,4,5,6,7]]'):
        assert decode_rows(bad) is None


# --- the writer's side --------------------------------------------------------------------------


def test_settled_rows_empty_the_segment_and_older_segments_are_deleted(tmp_path: Path) -> None:
    journal = Journal(tmp_path, segment_bytes=2048)
    records = [_record(n) for n in range(40)]
    for record in records[:20]:
        journal.write_record(record)
    segments = sorted(tmp_path.glob("*.journal"))
    assert len(segments) > 1 and journal.outstanding == 20
    journal.settle(records[:10])
    journal.settle(records[10:20])
    assert journal.outstanding == 0
    assert len(list(tmp_path.glob("*.journal"))) == 1 and journal.used_bytes == len(MAGIC)
    assert read_frames(next(tmp_path.glob("*.journal")).read_bytes()) == ([], None)  # zeroed
    assert journal.stats.snapshot()["segments_removed"] == len(segments) - 1
    journal.write_record(records[20])
    journal.close()  # a clean exit with everything settled... but record 20 is not: it stays
    assert len(list(tmp_path.glob("*.journal"))) == 1 and len(list(tmp_path.glob("*.lock"))) == 1


def test_a_clean_close_with_everything_settled_leaves_nothing(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.write_record(_record(1))
    journal.settle([_record(1)])
    journal.close()
    assert list(tmp_path.iterdir()) == []


def test_the_journal_is_bounded_and_an_inactive_one_writes_nothing(tmp_path: Path) -> None:
    journal = Journal(tmp_path, max_bytes=4096, segment_bytes=1024)
    for n in range(100):
        journal.write_record(_record(n))
    assert journal.size_bytes <= 4096
    stats = journal.stats.snapshot()
    assert stats["refused_full"] > 0 and stats["records"] + stats["refused_full"] == 100
    journal.close()
    idle = Journal(tmp_path / "idle", active=False)
    idle.write_record(_record(1))
    assert not (tmp_path / "idle").exists()


def test_a_forked_child_gets_its_own_journal_and_the_parent_keeps_its_lock(tmp_path: Path) -> None:
    journal = Journal(tmp_path / JOURNAL_DIR)
    journal.write_record(_record(1))
    parent_stem = _stems(tmp_path / JOURNAL_DIR)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            journal.write_record(_record(2))
            code = 0 if journal.outstanding == 1 else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    stems = _stems(tmp_path / JOURNAL_DIR)
    assert len(stems) == 2 and parent_stem < stems
    # The child is dead: its journal is replayable; the parent's is still locked (alive).
    store = TraceStore(str(tmp_path / "traces.duckdb"))
    result = replay_dead_journals(tmp_path, store, own=None)
    assert (result.journals, result.spans) == (1, 1)
    assert store.query("SELECT span_id FROM spans") == [("%016x" % 3,)]  # noqa: UP031
    assert _stems(tmp_path / JOURNAL_DIR) == parent_stem
    journal.close()
    store.close()


# --- replay ------------------------------------------------------------------------------------


_KILLED_OWNER = textwrap.dedent(
    """
    import os, sys
    from opentelemetry.sdk.trace import TracerProvider
    from agentgym_runtime import semconv
    from agentgym_runtime.collectors.journal import Journal
    from agentgym_runtime.collectors.rows import span_record
    journal = Journal(sys.argv[1])
    tracer = TracerProvider().get_tracer(semconv.SCOPE_NAME)
    for n in range(50):
        span = tracer.start_span(f"execute_tool t{n}", attributes={semconv.EPISODE_ID: f"ep-{n}"})
        span.end()
        journal.write_record(span_record(span))
        root = tracer.start_span(
            "invoke_agent a", attributes={semconv.EPISODE_ID: f"ep-{n}", semconv.EPISODE_ROOT: True}
        )
        root.end()
        journal.write_span(root)
    journal._map[journal._used : journal._used + 8] = b"\\x40\\x00\\x00\\x00torn"  # cut short by the kill
    print("ready", flush=True)
    sys.stdin.read()
    """
)


def _killed_owner(directory: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", _KILLED_OWNER, str(directory)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    process.send_signal(signal.SIGKILL)
    process.wait(10)


def test_the_journal_of_a_killed_process_is_replayed_once_skipping_stored_rows(tmp_path: Path) -> None:
    directory = tmp_path / JOURNAL_DIR
    _killed_owner(directory)
    kept = {p.name: p.read_bytes() for p in directory.iterdir()}
    store = TraceStore(str(tmp_path / "traces.duckdb"))
    first = replay_dead_journals(tmp_path, store)
    assert (first.journals, first.spans, first.episodes, first.torn, first.refused) == (1, 100, 50, 1, [])
    assert list((tmp_path / JOURNAL_DIR).iterdir()) == []
    assert replay_dead_journals(tmp_path, store).spans == 0
    for name, data in kept.items():  # the same journal once more (as if its deletion had failed)
        (directory / name).write_bytes(data)
    again = replay_dead_journals(tmp_path, store)
    assert (again.spans, again.episodes, again.already_stored) == (0, 0, 150)
    assert store.query("SELECT count(*), count(DISTINCT span_id) FROM spans") == [(100, 100)]
    assert store.query("SELECT count(*), count(DISTINCT episode_id) FROM episodes") == [(50, 50)]
    store.close()


def test_a_replay_skips_what_the_store_has(tmp_path: Path) -> None:
    journal = Journal(tmp_path / JOURNAL_DIR)
    tracer = TracerProvider().get_tracer(semconv.SCOPE_NAME)
    records = []
    for n in range(5):
        span = tracer.start_span(f"s{n}", attributes={semconv.EPISODE_ID: "e"})
        span.end()
        record = span_record(span)
        assert record is not None
        records.append(record)
        journal.write_record(record)
    store = TraceStore(str(tmp_path / "traces.duckdb"))
    from agentgym_runtime.collectors.exporter import _append
    from agentgym_runtime.collectors.rows import RowBatch

    store.write(lambda con: _append(con, RowBatch(spans=list(records[:3]))))
    journal.close(remove=False)  # as if killed: the lock is free, the rows unsettled
    result = replay_dead_journals(tmp_path, store)
    assert (result.spans, result.already_stored) == (2, 3)
    assert store.query("SELECT count(DISTINCT span_id), count(*) FROM spans") == [(5, 5)]
    store.close()


@pytest.mark.parametrize("tamper", ["world-writable", "foreign-owner", "symlink", "oversized"])
def test_tampered_or_foreign_journal_files_are_refused(tmp_path: Path, tamper: str) -> None:
    directory = tmp_path / JOURNAL_DIR
    journal = Journal(directory, max_bytes=1 << 20)
    journal.write_record(_record(1))
    journal.close(remove=False)
    segment = next(directory.glob("*.journal"))
    if tamper == "world-writable":
        segment.chmod(0o666)
    elif tamper == "foreign-owner":
        if os.geteuid() != 0:
            pytest.skip("needs root to give a file away")
        os.chown(segment, 12345, 12345)
    elif tamper == "symlink":
        target = tmp_path / "elsewhere"
        target.write_bytes(segment.read_bytes())
        segment.unlink()
        segment.symlink_to(target)
    else:
        with open(segment, "ab") as handle:
            handle.write(b"\0" * (40 << 20))
    store = TraceStore(str(tmp_path / "traces.duckdb"))
    result = replay_dead_journals(tmp_path, store, own=Journal(tmp_path / "unused", max_bytes=1 << 20))
    assert result.spans == 0 and len(result.refused) == 1 and str(segment) in result.refused[0]
    assert segment.is_symlink() or segment.exists()  # left in place for an operator to look at
    assert store.query("SELECT count(*) FROM spans") == [(0,)]
    store.close()
