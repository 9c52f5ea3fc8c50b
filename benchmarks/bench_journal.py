"""The store owner's crash journal (issue 13): calling-thread cost with it on and off, side by side.

One runtime that owns its home (a file store, ``share_home`` on: the elected owner's path). Its
journal is switched on and off between alternating batches of calls, so both sides run in the
same process, on the same warm writer, under the same machine load; only the journal's
``os.write`` per span (and, for an episode's root, its rows) differs. The writer settles the
journal on its own thread; the journal's size after the run shows it stays bounded.

Run with ``python benchmarks/bench_journal.py``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _util import machine, median, per_call_ns


def main() -> None:
    import agentgym_runtime as agentgym
    from agentgym_runtime.collectors.rows import arrow_ready
    from agentgym_runtime.recording.runtime import get_runtime

    home = tempfile.mkdtemp(prefix="bench-journal-")
    agentgym.configure(home=home)
    arrow_ready(120)
    runtime = get_runtime()
    journal = getattr(runtime._exporter, "journal", None)
    if journal is None or not journal.active:
        raise SystemExit("this runtime does not own a shared home (is the collector extra installed?)")

    def bare(order_id: int) -> int:
        return order_id + 1

    recorded = agentgym.tool(bare)

    @agentgym.train_online(name="bench-journal")
    def agent(order_id: int) -> int:
        return int(recorded(order_id=order_id))

    def tool_call() -> object:
        return recorded(order_id=7)

    def episode() -> object:
        return agent(7)

    rows = []
    for label, fn, calls in (
        ("tool call inside an episode", tool_call, 2000),
        ("episode with one tool call", episode, 500),
    ):
        on: list[float] = []
        off: list[float] = []
        with agentgym.episode(agent="bench"):
            for _ in range(calls):
                fn()
            agentgym.flush()
            for _ in range(15):
                journal.active = False
                off += per_call_ns(fn, calls=calls, repeats=1)
                journal.active = True
                on += per_call_ns(fn, calls=calls, repeats=1)
        agentgym.flush()
        a, b = median(off), median(on)
        rows.append(
            f"| {label}, calling thread | {a / 1000:.1f} µs | {b / 1000:.1f} µs | "
            f"+{(b - a) / 1000:.1f} µs (ratio {b / a:.2f}) |"
        )
    # The journal's own work per span, alone (best of 5 runs of 5,000: the least disturbed by load).
    import timeit

    from opentelemetry.sdk.trace import TracerProvider

    from agentgym_runtime import semconv
    from agentgym_runtime.collectors.journal import Journal
    from agentgym_runtime.collectors.rows import span_record

    tracer = TracerProvider().get_tracer(semconv.SCOPE_NAME)
    tool = tracer.start_span("execute_tool bare", attributes={semconv.EPISODE_ID: "e", "gen_ai.tool.name": "bare"})
    tool.end()
    root = tracer.start_span("invoke_agent a", attributes={semconv.EPISODE_ID: "e", semconv.EPISODE_ROOT: True})
    root.end()
    record = span_record(tool)
    assert record is not None
    alone = Journal(Path(tempfile.mkdtemp(prefix="bench-journal-alone-")))
    for label, fn in (
        ("record (a tool span)", lambda: alone.write_record(record)),
        ("root span", lambda: alone.write_span(root)),
    ):
        best = min(timeit.repeat(fn, number=5000, repeat=5)) / 5000
        rows.append(f"| journal alone: one {label} | — | {best * 1e6:.1f} µs | |")
        alone.settle(list(alone._pending and [(None, k) for k in list(alone._pending)]))
    alone.close()
    agentgym.flush()
    size, outstanding, stats = journal.size_bytes, journal.outstanding, journal.stats.snapshot()
    agentgym.shutdown()
    print("## Owner crash journal (issue 13) — `bench_journal.py`\n")
    print(machine() + "\n")
    print("| what (median of 15 alternating batches) | journal off | journal on | cost |")
    print("|---|---:|---:|---:|")
    print("\n".join(rows))
    print(
        f"\nAfter the run and a flush: journal {size} bytes, {outstanding} rows outstanding; "
        f"{stats['records']:,} records written, {stats['segments_removed']} segments removed, "
        f"{stats['refused_full']} refused (full)."
    )


if __name__ == "__main__":
    main()
