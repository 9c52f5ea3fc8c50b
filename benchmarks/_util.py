"""Shared helpers for the benchmarks: timing, machine description, markdown."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable


def machine() -> str:
    """One line describing the machine the numbers come from."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages / 2**30:.0f} GiB RAM"
    except (ValueError, OSError):
        pass
    return f"{cpu}, {os.cpu_count()} cores{memory}, Python {platform.python_version()}, {platform.system()}"


def per_call_ns(fn: Callable[[], object], *, calls: int, repeats: int) -> list[float]:
    """Median-ready samples: nanoseconds per call for ``repeats`` batches of ``calls`` calls."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter_ns() - start) / calls)
    return samples


def interleaved(
    a: Callable[[], object], b: Callable[[], object], *, calls: int, repeats: int
) -> tuple[list[float], list[float]]:
    """Time ``a`` and ``b`` in alternating batches, so drift in machine load hits both alike."""
    sa: list[float] = []
    sb: list[float] = []
    for _ in range(repeats):
        sa.extend(per_call_ns(a, calls=calls, repeats=1))
        sb.extend(per_call_ns(b, calls=calls, repeats=1))
    return sa, sb


def median(samples: list[float]) -> float:
    """The median of ``samples``."""
    return statistics.median(samples)
