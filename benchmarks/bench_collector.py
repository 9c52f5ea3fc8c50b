"""Collector benchmarks (issue 13), ratios side by side with today's in-process writer.

1. Spans/s into the store: 4 sender processes POSTing OTLP protobuf to ``agentgym collect``
   against one process writing the same spans in-process (``DuckDBSpanExporter``).
2. Calling-thread cost per tool call (one episode with one tool call per iteration): a
   process exporting to a collector against the in-process path.

Run: ``nice .venv/bin/python benchmarks/bench_collector.py [--spans 400000]``.
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


def _sender(endpoint: str, spans: int, seed: int) -> None:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    made = _spans(spans, seed)
    payloads = [encode_spans(made[i : i + BATCH]).SerializeToString() for i in range(0, len(made), BATCH)]
    print("ready", flush=True)
    sys.stdin.readline()
    with httpx.Client(timeout=60) as client:
        for body in payloads:
            while True:
                response = client.post(
                    f"{endpoint}/v1/traces", content=body, headers={"content-type": "application/x-protobuf"}
                )
                if response.status_code == 200:
                    break
                time.sleep(float(response.headers.get("retry-after", "0.1")))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def throughput_collector(total: int) -> float:
    home = Path(tempfile.mkdtemp())
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    collector = subprocess.Popen(
        [str(Path(sys.executable).parent / "agentgym"), "collect", "--home", str(home), "--port", str(port)],
        stderr=subprocess.DEVNULL,
    )
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
                [sys.executable, __file__, "--sender", endpoint, str(per), str(seed)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
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
        written = httpx.get(f"{endpoint}/v1/status").json()["stats"]["spans_written"]
        assert written == per * 4, written
        return written / elapsed
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


def per_call(endpoint: str | None) -> float:
    home = tempfile.mkdtemp()
    env = {**os.environ, "AGENTGYM_HOME": home}
    if endpoint:
        env["AGENTGYM_COLLECTOR_ENDPOINT"] = endpoint
    out = subprocess.run([sys.executable, "-c", _CALL_LOOP], env=env, check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def per_call_pair() -> tuple[float, float]:
    home = Path(tempfile.mkdtemp())
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    collector = subprocess.Popen(
        [str(Path(sys.executable).parent / "agentgym"), "collect", "--home", str(home), "--port", str(port)],
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(3)
        return per_call(None), per_call(endpoint)
    finally:
        collector.terminate()
        collector.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--sender", nargs=3)
    args = parser.parse_args()
    if args.sender:
        _sender(args.sender[0], int(args.sender[1]), int(args.sender[2]))
        return
    print(machine())
    base = throughput_in_process(args.spans)
    through = statistics.median([throughput_collector(args.spans) for _ in range(2)])
    print(
        f"spans/s into the store: in-process writer {base:,.0f}; collector from 4 processes {through:,.0f} "
        f"({through / base:.2f}x; target >= 50,000)"
    )
    local, remote = per_call_pair()
    print(
        f"calling-thread cost per episode with one tool call: in-process {local / 1000:.1f} us; "
        f"exporting to a collector {remote / 1000:.1f} us ({remote / local:.2f}x; target <= 1.2x)"
    )


if __name__ == "__main__":
    main()
