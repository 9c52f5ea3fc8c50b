"""Collector benchmarks (issue 13), ratios side by side with today's in-process writer.

1. Spans/s into the store: 4 sender processes POSTing pre-encoded bodies to ``agentgym collect``
   against one process writing the same spans in-process (``DuckDBSpanExporter``). Two bodies:
   standard OTLP protobuf (what any OTel SDK sends) and agentgym's rows as Arrow IPC (what an
   agentgym worker sends to a collector that reads it, ``collectors/otlp/rows_wire.py``).
2. Calling-thread cost per tool call (one episode with one tool call per iteration): a
   process exporting to a collector against the in-process path, alternated in rounds.

Every subprocess (collector, senders, workers) imports the ``agentgym_runtime`` of ``--tree``
(default: the checkout this file is in), not whatever the virtual environment has installed.

Run: ``nice .venv/bin/python benchmarks/bench_collector.py [--spans 400000] [--tree PATH]``;
``--baseline-tree OTHER`` measures only the rows throughput, alternating OTHER and ``--tree``.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks._util import machine

BATCH = 1024
TREE = Path(__file__).resolve().parents[1]
ROWS = "application/vnd.agentgym.rows+arrow"


def _env(tree: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree), **extra}


def _collect(tree: Path, home: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", "from agentgym_runtime.cli import main; main()", "collect", "--home", str(home),
         "--port", str(port)],
        stderr=subprocess.DEVNULL,
        env=_env(tree),
        cwd=str(tree),
    )  # fmt: skip


def _spans(n: int, seed: int) -> list:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": f"bench-{seed}"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("agentgym_runtime")
    for i in range(n):
        tracer.start_span(
            "execute_tool lookup",
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "lookup",
                "agentgym.episode.id": f"e{seed}-{i // 4}",
                "agentgym.tool.outcome": "ok",
                "gen_ai.tool.call.arguments": '{"order_id": "A1"}',
            },
        ).end()
    return list(memory.get_finished_spans())


def _sender(endpoint: str, spans: int, seed: int, body: str) -> None:
    made = _spans(spans, seed)
    if body == "rows":
        from agentgym_runtime.collectors.otlp.rows_wire import encode_batch
        from agentgym_runtime.collectors.rows import arrow_ready, preload_arrow, span_rows

        preload_arrow()
        arrow_ready(60)
        payloads = [encode_batch(span_rows(made[i : i + BATCH])) for i in range(0, len(made), BATCH)]
        content_type = ROWS
    else:
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        payloads = [encode_spans(made[i : i + BATCH]).SerializeToString() for i in range(0, len(made), BATCH)]
        content_type = "application/x-protobuf"
    print("ready", flush=True)
    sys.stdin.readline()
    with httpx.Client(timeout=60) as client:
        for payload in payloads:
            while True:
                response = client.post(f"{endpoint}/v1/traces", content=payload, headers={"content-type": content_type})
                if response.status_code == 200:
                    break
                assert response.status_code in (429, 503), response.text
                time.sleep(float(response.headers.get("retry-after", "0.1")))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def throughput_collector(total: int, body: str = "otlp", tree: Path = TREE) -> tuple[float, float]:
    """Spans/s from 4 sender processes into a collector (``body``: ``otlp`` or ``rows``), and
    the requests its writer committed per transaction."""
    home = Path(tempfile.mkdtemp())
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    collector = _collect(tree, home, port)
    try:
        for _ in range(300):
            try:
                httpx.get(f"{endpoint}/v1/status", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        per = total // 4
        senders = [
            subprocess.Popen(
                [sys.executable, __file__, "--sender", endpoint, str(per), str(seed), body],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=_env(tree),
            )
            for seed in range(4)
        ]
        for sender in senders:
            assert sender.stdout is not None
            assert sender.stdout.readline().strip() == "ready"
        start = time.perf_counter()
        for sender in senders:
            assert sender.stdin is not None
            sender.stdin.write("go\n")
            sender.stdin.flush()
        for sender in senders:
            sender.wait()
        elapsed = time.perf_counter() - start
        stats = httpx.get(f"{endpoint}/v1/status").json()["stats"]
        written = stats["spans_written"]
        assert written == per * 4, written
        return written / elapsed, stats["requests"] / max(1, stats["write_transactions"])
    finally:
        collector.terminate()
        collector.wait(60)


def throughput_in_process(total: int) -> float:
    from agentgym_runtime.collectors.exporter import DuckDBSpanExporter
    from agentgym_runtime.collectors.rows import arrow_ready, span_record
    from agentgym_runtime.collectors.store import TraceStore

    store = TraceStore(str(Path(tempfile.mkdtemp()) / "t.duckdb"))
    exporter = DuckDBSpanExporter(store)
    arrow_ready(30)
    records = [span_record(s) for s in _spans(total, 9)]
    start = time.perf_counter()
    for i in range(0, total, 4096):
        exporter.export(records[i : i + 4096])
    elapsed = time.perf_counter() - start
    assert store.query("SELECT count(*) FROM spans") == [(total,)]
    return total / elapsed


_CALL_LOOP = """
import os, sys, time, statistics
import agentgym_runtime as agentgym
from agentgym_runtime.collectors.rows import arrow_ready

@agentgym.tool
def lookup(order_id: str) -> str:
    return "shipped"

@agentgym.train_online(name="bench")
def agent(order_id: str) -> str:
    return lookup(order_id=order_id)

for _ in range(2000):
    agent("w")
arrow_ready(30)
samples = []
for _ in range(7):
    start = time.perf_counter_ns()
    for i in range(3000):
        agent("A1")
    samples.append((time.perf_counter_ns() - start) / 3000)
agentgym.flush(60)
print(statistics.median(samples))
"""


def per_call(endpoint: str | None, tree: Path = TREE) -> float:
    """Median ns per episode on the calling thread, in-process (``endpoint=None``) or exporting to it."""
    extra = {"AGENTGYM_HOME": tempfile.mkdtemp()}
    if endpoint:
        extra["AGENTGYM_COLLECTOR_ENDPOINT"] = endpoint
    out = subprocess.run(
        [sys.executable, "-c", _CALL_LOOP], env=_env(tree, **extra), cwd=str(tree), check=True, capture_output=True,
        text=True,
    )  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


def per_call_pair(rounds: int = 3, tree: Path = TREE) -> tuple[list[float], list[float]]:
    """In-process and collector per-call samples, alternated ``rounds`` times against one collector."""
    home = Path(tempfile.mkdtemp())
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    collector = _collect(tree, home, port)
    try:
        time.sleep(3)
        local: list[float] = []
        remote: list[float] = []
        for _ in range(rounds):
            local.append(per_call(None, tree))
            remote.append(per_call(endpoint, tree))
        return local, remote
    finally:
        collector.terminate()
        collector.wait(60)


def compare(total: int, before: Path, after: Path, rounds: int) -> None:
    """Rows throughput of two trees side by side: ``rounds`` rounds of (before, after), each its own collector."""
    ratios: list[float] = []
    for i in range(rounds):
        load = os.getloadavg()[0]
        b, b_group = throughput_collector(total, "rows", before)
        a, a_group = throughput_collector(total, "rows", after)
        ratios.append(a / b)
        print(
            f"round {i + 1}: before {b:,.0f} spans/s ({b_group:.2f} requests/transaction), after {a:,.0f} "
            f"({a_group:.2f}); ratio {a / b:.2f}; load average {load:.2f} -> {os.getloadavg()[0]:.2f}",
            flush=True,
        )
    print(f"after/before, median of {rounds} rounds: {statistics.median(ratios):.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--tree", type=Path, default=TREE)
    parser.add_argument("--sender", nargs=4)
    parser.add_argument(
        "--baseline-tree", type=Path, help="only the rows throughput, alternating this tree and --tree (A/B rounds)"
    )
    parser.add_argument("--rounds", type=int, default=4, help="A/B rounds with --baseline-tree")
    args = parser.parse_args()
    if args.sender:
        _sender(args.sender[0], int(args.sender[1]), int(args.sender[2]), args.sender[3])
        return
    print(machine(), f"load average {os.getloadavg()[0]:.2f}")
    if args.baseline_tree:
        compare(args.spans, args.baseline_tree, args.tree, args.rounds)
        return
    base = throughput_in_process(args.spans)
    otlp = statistics.median([throughput_collector(args.spans, "otlp", args.tree)[0] for _ in range(2)])
    rows_runs = [throughput_collector(args.spans, "rows", args.tree) for _ in range(2)]
    rows = statistics.median([r[0] for r in rows_runs])
    print(
        f"spans/s into the store: in-process writer {base:,.0f}; collector from 4 processes, OTLP protobuf "
        f"{otlp:,.0f} ({otlp / base:.2f}x), agentgym rows {rows:,.0f} ({rows / base:.2f}x) (target >= 50,000); "
        f"rows requests per transaction {', '.join(f'{r[1]:.2f}' for r in rows_runs)}"
    )
    local, remote = per_call_pair(3, args.tree)
    ratios = [r / lo for lo, r in zip(local, remote, strict=True)]
    print(
        f"calling-thread cost per episode with one tool call: in-process {statistics.median(local) / 1000:.1f} us; "
        f"exporting to a collector {statistics.median(remote) / 1000:.1f} us (round ratios "
        f"{', '.join(f'{r:.2f}' for r in ratios)}; median {statistics.median(ratios):.2f}x; target <= 1.2x); "
        f"load average {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
