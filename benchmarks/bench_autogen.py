"""AutoGen adapter overhead: a scripted ``AssistantAgent`` run bare, wrapped, and under OpenInference.

One process, one event loop, interleaved batches (so drift in machine load hits all three):

* **bare** — the agent with no instrumentation at all (AutoGen's own OTel spans still go to the
  global SDK provider, as they do in the other two);
* **agentgym** — ``agentgym.train_online(agent)``: episode, ``chat`` span, one ``execute_tool``
  span per call with its outcome, reconciliation, DuckDB export on the background thread;
* **openinference** — ``AutogenAgentChatInstrumentor`` on its own ``TracerProvider`` with a
  ``BatchSpanProcessor`` and an exporter that drops the spans (so it pays no export at all).

Each run is one LLM answer with ``CALLS`` tool calls (all succeed). Overhead per tool call =
(run time - bare run time) / ``CALLS``. Run with ``python benchmarks/bench_autogen.py``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _util import machine, median

CALLS = 10
RUNS_PER_BATCH = 20
BATCHES = 21


def _setup() -> tuple[Callable[[str], tuple[float, float]], Callable[[], None]]:
    from autogen_agentchat.agents import AssistantAgent
    from autogen_core import EVENT_LOGGER_NAME, CancellationToken, FunctionCall
    from autogen_core.models import CreateResult, ModelFamily, ModelInfo, RequestUsage
    from autogen_ext.models.replay import ReplayChatCompletionClient
    from openinference.instrumentation.autogen_agentchat import AutogenAgentChatInstrumentor
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    import agentgym_runtime as agentgym
    from agentgym_runtime.adapters import load_adapter

    logging.getLogger(EVENT_LOGGER_NAME).setLevel(logging.ERROR)
    agentgym.configure(home=tempfile.mkdtemp(prefix="bench-autogen-"), service_name="bench-autogen")

    class DropExporter(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    oi_provider = TracerProvider()
    oi_provider.add_span_processor(BatchSpanProcessor(DropExporter(), max_queue_size=131072))
    openinference = AutogenAgentChatInstrumentor()

    def lookup(order_id: int) -> str:
        """Look up an order."""
        return "shipped"

    info = ModelInfo(
        vision=False, function_calling=True, json_output=False, family=ModelFamily.UNKNOWN, structured_output=False
    )
    answer = CreateResult(
        finish_reason="function_calls",
        content=[FunctionCall(id=f"c{i}", name="lookup", arguments=f'{{"order_id": {i}}}') for i in range(CALLS)],
        usage=RequestUsage(prompt_tokens=20, completion_tokens=10),
        cached=False,
    )
    client = ReplayChatCompletionClient([answer] * (RUNS_PER_BATCH + 1), model_info=info)
    agent = AssistantAgent("bench", model_client=client, tools=[lookup])
    adapter = load_adapter("autogen")
    wrapped = agentgym.train_online(agent, name="bench")  # instruments the adapter once
    adapter.uninstrument()
    loop = asyncio.new_event_loop()

    async def batch(target: AssistantAgent) -> None:
        for _ in range(RUNS_PER_BATCH):
            await target.run(task="where is my order?")
            await agent.on_reset(CancellationToken())
            client.reset()

    def timed(mode: str) -> tuple[float, float]:
        """(wall ns, CPU ns of the whole process) per run; each mode's span export is flushed inside."""
        if mode == "agentgym":
            adapter.instrument()
        elif mode == "openinference":
            openinference.instrument(tracer_provider=oi_provider)
        try:
            wall, cpu = time.perf_counter_ns(), time.process_time_ns()
            loop.run_until_complete(batch(wrapped if mode == "agentgym" else agent))
            if mode == "agentgym":
                agentgym.flush()
            elif mode == "openinference":
                oi_provider.force_flush()
            wall, cpu = time.perf_counter_ns() - wall, time.process_time_ns() - cpu
            return wall / RUNS_PER_BATCH, cpu / RUNS_PER_BATCH
        finally:
            if mode == "agentgym":
                adapter.uninstrument()
            elif mode == "openinference":
                openinference.uninstrument()

    def close() -> None:
        agentgym.flush()
        oi_provider.shutdown()
        agentgym.shutdown()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    return timed, close


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    timed, close = _setup()
    modes = ("bare", "agentgym", "openinference")
    for mode in modes:  # warm-up
        timed(mode)
    wall: dict[str, list[float]] = {m: [] for m in modes}
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(BATCHES):
        for mode in modes:
            w, c = timed(mode)
            wall[mode].append(w)
            cpu[mode].append(c)
    close()
    print("## AutoGen adapter overhead\n")
    print(f"Machine: {machine()}\n")
    print(
        f"Scripted `AssistantAgent.run`, one LLM answer with {CALLS} tool calls per run; median of {BATCHES} "
        f"interleaved batches of {RUNS_PER_BATCH} runs, span export flushed inside each batch. CPU = process "
        "CPU time (all threads, so agentgym's DuckDB writer counts; other processes on the machine do not).\n"
    )
    print("| mode | CPU per run | CPU overhead per tool call | wall per run | wall overhead per tool call |")
    print("|---|---|---|---|---|")
    cpu_m = {m: median(s) for m, s in cpu.items()}
    wall_m = {m: median(s) for m, s in wall.items()}
    for mode in modes:
        print(
            f"| {mode} | {cpu_m[mode] / 1e6:.2f} ms ({cpu_m[mode] / cpu_m['bare']:.2f}x) | "
            f"{(cpu_m[mode] - cpu_m['bare']) / CALLS / 1e3:.0f} µs | "
            f"{wall_m[mode] / 1e6:.2f} ms ({wall_m[mode] / wall_m['bare']:.2f}x) | "
            f"{(wall_m[mode] - wall_m['bare']) / CALLS / 1e3:.0f} µs |"
        )
    ours = cpu_m["agentgym"] - cpu_m["bare"]
    theirs = cpu_m["openinference"] - cpu_m["bare"]
    print(
        f"\nagentgym / OpenInference CPU overhead: {ours / theirs:.2f}x (agentgym also writes every span to "
        "DuckDB and records LLM calls of any client; OpenInference's spans are dropped after batching and it "
        "records LLM calls of OpenAI clients only)."
    )


if __name__ == "__main__":
    main()
