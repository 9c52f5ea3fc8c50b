"""Counters of what the recording pipeline did with each span; nothing is lost unseen.

Example:
    >>> stats = PipelineStats()
    >>> stats.add(spans_enqueued=3, spans_written=3)
    >>> stats.snapshot()["spans_lost"]
    0
"""

from __future__ import annotations

import threading
import time
from typing import Any


class PipelineStats:
    """Thread-safe counters shown by ``agentgym status`` and :func:`agentgym_runtime.stats`.

    ``spans_lost`` is derived: spans handed to the pipeline that were neither written, nor
    are waiting (in the batch queue, being exported, or in the retry buffer), nor were set
    aside as unstorable (``spans_quarantined``). It catches drops in any stage, including the
    batch processor's own queue. ``rows_quarantined`` counts rows of every table kept aside.
    """

    _FIELDS = (
        "spans_enqueued",
        "spans_written",
        "episodes_written",
        "feedback_written",
        "rows_dropped",
        "spans_unconvertible",
        "write_failures",
        "write_batches",
        "internal_errors",
        "rows_quarantined",
        "spans_quarantined",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(self._FIELDS, 0)
        self._pending_spans = 0
        self._in_export = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.last_write_at: float | None = None

    def add(self, **deltas: int) -> None:
        """Add to one or more counters."""
        with self._lock:
            for name, delta in deltas.items():
                self._counts[name] += delta

    def incr_enqueued(self) -> None:
        """Count one span handed to the batch processor (the hot path: no keyword parsing)."""
        with self._lock:
            self._counts["spans_enqueued"] += 1

    def set_pending(self, spans: int) -> None:
        """Record how many span rows wait in the retry buffer."""
        with self._lock:
            self._pending_spans = spans

    def exporting(self, spans: int) -> None:
        """Add ``spans`` (negative to remove) to those taken by the exporter and not yet settled."""
        with self._lock:
            self._in_export += spans

    def error(self, message: str) -> None:
        """Remember the latest write error."""
        with self._lock:
            self.last_error = message
            self.last_error_at = time.time()

    def wrote(self) -> None:
        """Remember the time of the latest successful write."""
        self.last_write_at = time.time()

    def snapshot(self, queued: int = 0) -> dict[str, Any]:
        """All counters as a dict; ``queued`` is what still sits in the batch queue."""
        with self._lock:
            data: dict[str, Any] = dict(self._counts)
            data["pending_rows"] = self._pending_spans
            data["queued_spans"] = queued
            data["exporting_spans"] = self._in_export
            data["spans_lost"] = max(
                0,
                data["spans_enqueued"]
                - data["spans_written"]
                - data["spans_quarantined"]
                - self._pending_spans
                - queued
                - self._in_export,
            )
            data["last_error"] = self.last_error
            data["last_error_at"] = self.last_error_at
            data["last_write_at"] = self.last_write_at
        return data
