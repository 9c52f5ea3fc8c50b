"""LangChain adapter overhead: a scripted ``create_agent`` run bare, with agentgym, with OpenInference.

Workload: one ``invoke`` of a ``create_agent`` graph whose scripted model asks for
``TOOL_CALLS`` calls of a trivial tool in one turn and answers in the next (2 LLM calls,
``TOOL_CALLS`` tool calls). Each mode runs in its own process (a fresh interpreter, so no
instrumentation leaks between modes), the three processes alternate over several rounds, and
each reports the median time per ``invoke`` over its batches:

* ``bare``: the agent as written, nothing installed;
* ``agentgym``: ``agentgym.train_online(agent)`` recording every span into DuckDB (the exporter
  runs on its background thread, as in production; the spans are verified after the run);
* ``openinference``: ``LangChainInstrumentor`` on an SDK ``TracerProvider`` with a
  ``BatchSpanProcessor`` to an exporter that only counts spans (cheaper than any real sink).

Overhead per tool call = (mode - bare) / tool calls per invoke (the LLM calls' share included).
Run: ``.venv/bin/python benchmarks/bench_langchain.py``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _util import machine

TOOL_CALLS = 10
INVOKES_PER_BATCH = 20
BATCHES = 8
WARMUP = 10
ROUNDS = 3
MODES = ("bare", "agentgym", "openinference")


def _build_agent() -> Any:
    from langchain.agents import create_agent
    from langchain_core.language_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage, BaseMessage
    from langchain_core.outputs import ChatGeneration, ChatResult
    from langchain_core.tools import tool
    from langchain_core.utils.function_calling import convert_to_openai_tool
    from pydantic import Field

    class Scripted(GenericFakeChatModel):
        messages: Iterator[Any] = Field(default_factory=lambda: iter(()))
        model_name: str = "bench-1"

        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

        def _generate(
            self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
        ) -> ChatResult:
            if messages[-1].type == "tool":
                answer = AIMessage("done", usage_metadata={"input_tokens": 50, "output_tokens": 2, "total_tokens": 52})
            else:
                calls = [
                    {"name": "lookup", "args": {"key": i}, "id": f"c{i}", "type": "tool_call"}
                    for i in range(TOOL_CALLS)
                ]
                answer = AIMessage("", tool_calls=calls)
            return ChatResult(generations=[ChatGeneration(message=answer)])

    @tool
    def lookup(key: int) -> str:
        """Look a key up."""
        return f"value {key}"

    return create_agent(Scripted(), [lookup], system_prompt="Look things up.")


def _measure(agent: Any) -> list[float]:
    from langchain_core.messages import HumanMessage

    request = {"messages": [HumanMessage("look up everything")]}
    for _ in range(WARMUP):
        agent.invoke(request)
    samples = []
    for _ in range(BATCHES):
        start = time.perf_counter_ns()
        for _ in range(INVOKES_PER_BATCH):
            agent.invoke(request)
        samples.append((time.perf_counter_ns() - start) / INVOKES_PER_BATCH / 1000.0)
    return samples


def run_mode(mode: str) -> dict[str, Any]:
    """Measure one mode in this process; return the samples (µs per invoke) and what was recorded."""
    agent = _build_agent()
    recorded = 0
    if mode == "bare":
        samples = _measure(agent)
    elif mode == "agentgym":
        import agentgym_runtime as agentgym

        runtime = agentgym.configure(home=tempfile.mkdtemp(prefix="agentgym-bench-"))
        wrapped = agentgym.train_online(agent, name="bench")
        samples = _measure(wrapped)
        assert runtime.flush(), runtime.stats()
        rows = runtime.store.query_dicts("SELECT count(*) AS n FROM tool_calls WHERE outcome = 'ok'")
        recorded = int(rows[0]["n"])
        agentgym.shutdown()
    elif mode == "openinference":
        from openinference.instrumentation.langchain import LangChainInstrumentor
        from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

        class Counting(SpanExporter):
            def __init__(self) -> None:
                self.tools = 0

            def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
                self.tools += sum(1 for s in spans if (s.attributes or {}).get("openinference.span.kind") == "TOOL")
                return SpanExportResult.SUCCESS

        exporter = Counting()
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(exporter))
        LangChainInstrumentor().instrument(tracer_provider=provider)
        samples = _measure(agent)
        provider.force_flush()
        recorded = exporter.tools
        LangChainInstrumentor().uninstrument()
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    return {"mode": mode, "samples": samples, "tool_spans": recorded}


def main() -> None:
    """Run every mode in its own process, alternating over rounds, and print a markdown section."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    samples: dict[str, list[float]] = {m: [] for m in MODES}
    spans: dict[str, int] = dict.fromkeys(MODES, 0)
    for round_index in range(ROUNDS):
        order = MODES if round_index % 2 == 0 else tuple(reversed(MODES))
        for mode in order:
            out = subprocess.run(
                [sys.executable, __file__, "--mode", mode], env=env, check=True, capture_output=True, text=True
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            samples[mode].extend(result["samples"])
            spans[mode] += result["tool_spans"]
    medians = {m: statistics.median(s) for m, s in samples.items()}
    invokes = ROUNDS * (WARMUP + BATCHES * INVOKES_PER_BATCH)
    bare = medians["bare"]
    print("## LangChain adapter overhead (`benchmarks/bench_langchain.py`)\n")
    print(f"Machine: {machine()}\n")
    print(
        f"`create_agent` with a scripted model: 1 invoke = 2 LLM calls + {TOOL_CALLS} tool calls; "
        f"median of {ROUNDS * BATCHES} batches x {INVOKES_PER_BATCH} invokes per mode, each mode in its own "
        f"process, {ROUNDS} alternating rounds.\n"
    )
    print("| mode | µs / invoke | ratio vs bare | overhead µs / tool call | tool spans recorded |")
    print("|---|---:|---:|---:|---:|")
    for mode in MODES:
        median = medians[mode]
        overhead = (median - bare) / TOOL_CALLS
        recorded = "-" if mode == "bare" else f"{spans[mode]} / {invokes * TOOL_CALLS}"
        print(f"| {mode} | {median:,.0f} | {median / bare:.3f} | {overhead:,.1f} | {recorded} |")
    ours, theirs = medians["agentgym"] - bare, medians["openinference"] - bare
    print(f"\nagentgym overhead / OpenInference overhead: {ours / theirs:.2f}" if theirs > 0 else "")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--mode":
        print(json.dumps(run_mode(sys.argv[2])))
    else:
        main()
