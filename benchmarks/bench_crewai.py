"""CrewAI adapter overhead: a scripted crew run bare, with agentgym, with OpenInference's instrumentor.

Workload: one ``Crew.kickoff`` of a one-agent crew whose scripted ReAct LLM (a ``BaseLLM``
subclass) makes ``TOOL_CALLS`` calls of a trivial tool, one per turn, then answers
(``TOOL_CALLS + 1`` LLM calls). Each mode runs in its own process (a fresh interpreter, so no
instrumentation leaks between modes), the processes alternate over several rounds, and each
reports the median time per ``kickoff`` over its batches:

* ``bare``: the crew as written, nothing installed;
* ``agentgym``: ``agentgym.train_online(crew)`` recording every span into DuckDB (the exporter
  runs on its background thread, as in production; the spans are counted after the run);
* ``openinference``: ``CrewAIInstrumentor`` on an SDK ``TracerProvider`` with a
  ``BatchSpanProcessor`` to an exporter that only counts spans (cheaper than any real sink).

Overhead per tool call = (mode - bare) / tool calls per kickoff (the LLM calls' share included).
Run: ``.venv/bin/python benchmarks/bench_crewai.py``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _util import machine

TOOL_CALLS = 5
KICKOFFS_PER_BATCH = 8
BATCHES = 12
WARMUP = 5
ROUNDS = 2
MODES = ("bare", "agentgym", "openinference")
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "CREWAI_DISABLE_TELEMETRY": "true",
    "CREWAI_TESTING": "true",
}


def _build_crew() -> Any:
    from crewai import Agent, Crew, Task
    from crewai.llms.base_llm import BaseLLM
    from crewai.tools import tool

    class Scripted(BaseLLM):
        def __init__(self) -> None:
            super().__init__(model="bench-1")
            self.turn = 0

        def call(self, messages: Any, *args: Any, **kwargs: Any) -> str:
            turn = self.turn % (TOOL_CALLS + 1)
            self.turn += 1
            self._track_token_usage_internal({"prompt_tokens": 50, "completion_tokens": 10})
            if turn < TOOL_CALLS:
                return f'Thought: look it up\nAction: lookup\nAction Input: {{"key": {turn}}}'
            return "Thought: I now know the final answer\nFinal Answer: done"

        def supports_function_calling(self) -> bool:
            return False

    @tool("lookup")
    def lookup(key: int) -> str:
        """Look a key up."""
        return f"value {key}"

    agent = Agent(role="bench", goal="look things up", backstory="You look things up.", llm=Scripted(),
                  tools=[lookup], verbose=False, max_iter=TOOL_CALLS + 5)  # fmt: skip
    task = Task(description="Look up every key.", expected_output="done", agent=agent)
    return Crew(agents=[agent], tasks=[task], verbose=False, cache=False)


def _batch(crew: Any) -> float:
    start = time.perf_counter_ns()
    for _ in range(KICKOFFS_PER_BATCH):
        crew.kickoff()
    return (time.perf_counter_ns() - start) / KICKOFFS_PER_BATCH / 1000.0


def _measure(crew: Any) -> list[float]:
    for _ in range(WARMUP):
        crew.kickoff()
    return [_batch(crew) for _ in range(BATCHES)]


def _measure_interleaved(bare: Any, wrapped: Any) -> tuple[list[float], list[float]]:
    """Alternate batches of the unwrapped and the wrapped crew, so load drift hits both alike."""
    for _ in range(WARMUP):
        bare.kickoff()
        wrapped.kickoff()
    bare_samples: list[float] = []
    wrapped_samples: list[float] = []
    for index in range(BATCHES):
        pair = ((bare, bare_samples), (wrapped, wrapped_samples))
        for crew, samples in pair if index % 2 == 0 else reversed(pair):
            samples.append(_batch(crew))
    return bare_samples, wrapped_samples


def run_mode(mode: str) -> dict[str, Any]:
    """Measure one mode in this process; return the samples (µs per kickoff) and what was recorded."""
    crew = _build_crew()
    recorded = 0
    bare_samples: list[float] = []
    if mode == "bare":
        samples = _measure(crew)
    elif mode == "agentgym":
        import agentgym_runtime as agentgym

        runtime = agentgym.configure(home=tempfile.mkdtemp(prefix="agentgym-bench-"))
        wrapped = agentgym.train_online(_build_crew(), name="bench")
        # ``crew`` is not wrapped: it runs through the installed hooks' no-episode fast path.
        bare_samples, samples = _measure_interleaved(crew, wrapped)
        assert runtime.flush(), runtime.stats()
        rows = runtime.store.query_dicts("SELECT count(*) AS n FROM tool_calls WHERE outcome = 'ok'")
        recorded = int(rows[0]["n"])
        agentgym.shutdown()
    elif mode == "openinference":
        from openinference.instrumentation.crewai import CrewAIInstrumentor
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
        # The installed instrumentor declares crewai >= 1.10.1 and instruments nothing on 1.6 unless
        # forced; its event-listener mode is the one that makes tool and LLM spans.
        CrewAIInstrumentor().instrument(tracer_provider=provider, skip_dep_check=True, use_event_listener=True)
        samples = _measure(crew)
        # Its spans come from CrewAI's event handlers on CrewAI's thread pool, i.e. after the
        # kickoffs returned: drain the pool before counting them.
        from crewai.events import crewai_event_bus

        crewai_event_bus._sync_executor.shutdown(wait=True)
        provider.force_flush()
        recorded = exporter.tools
        CrewAIInstrumentor().uninstrument()
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    return {"mode": mode, "samples": samples, "bare_samples": bare_samples, "tool_spans": recorded}


def main() -> None:
    """Run every mode in its own process, alternating over rounds, and print a markdown section."""
    env = {**os.environ, **OFFLINE_ENV}
    samples: dict[str, list[float]] = {m: [] for m in MODES}
    spans: dict[str, int] = dict.fromkeys(MODES, 0)
    same_process_bare: list[float] = []
    available = list(MODES)
    for round_index in range(ROUNDS):
        order = available if round_index % 2 == 0 else list(reversed(available))
        for mode in order:
            out = subprocess.run([sys.executable, __file__, "--mode", mode], env=env, capture_output=True, text=True)
            if out.returncode != 0:
                if mode == "openinference":  # the instrumentor is optional: report without it
                    available.remove(mode)
                    continue
                raise SystemExit(f"{mode} failed:\n{out.stderr[-2000:]}")
            result = json.loads(out.stdout.strip().splitlines()[-1])
            samples[mode].extend(result["samples"])
            same_process_bare.extend(result["bare_samples"])
            spans[mode] += result["tool_spans"]
    medians = {m: statistics.median(s) for m, s in samples.items() if s}
    kickoffs = ROUNDS * (WARMUP + BATCHES * KICKOFFS_PER_BATCH)
    bare = medians["bare"]
    print("## CrewAI adapter overhead (`benchmarks/bench_crewai.py`)\n")
    print(f"Machine: {machine()}\n")
    print(
        f"One-agent crew with a scripted ReAct LLM: 1 kickoff = {TOOL_CALLS + 1} LLM calls + {TOOL_CALLS} tool "
        f"calls; median of {ROUNDS * BATCHES} batches x {KICKOFFS_PER_BATCH} kickoffs per mode, each mode in its "
        f"own process, {ROUNDS} alternating rounds.\n"
    )
    print("| mode | µs / kickoff | ratio vs bare | overhead µs / tool call | tool spans recorded |")
    print("|---|---:|---:|---:|---:|")
    for mode in MODES:
        if mode not in medians:
            print(f"| {mode} | n/a (instrumentor failed to run) | | | |")
            continue
        median = medians[mode]
        overhead = (median - bare) / TOOL_CALLS
        recorded = "-" if mode == "bare" else f"{spans[mode]} / {kickoffs * TOOL_CALLS}"
        print(f"| {mode} | {median:,.0f} | {median / bare:.3f} | {overhead:,.1f} | {recorded} |")
    inner_bare = statistics.median(same_process_bare)
    inner = (medians["agentgym"] - inner_bare) / TOOL_CALLS
    print(
        f"\nSame process, alternating batches (unwrapped crew with the hooks installed vs wrapped crew): "
        f"{inner_bare:,.0f} vs {medians['agentgym']:,.0f} µs / kickoff, ratio {medians['agentgym'] / inner_bare:.3f}, "
        f"overhead {inner:,.1f} µs per tool call (its LLM-call share included)."
    )
    if "openinference" in medians:
        ours, theirs = medians["agentgym"] - bare, medians["openinference"] - bare
        print(f"\nagentgym overhead / OpenInference overhead: {ours / theirs:.2f}" if theirs > 0 else "")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--mode":
        for key, value in OFFLINE_ENV.items():
            os.environ.setdefault(key, value)
        print(json.dumps(run_mode(sys.argv[2])), flush=True)
        # CrewAI's own event handlers still work through a backlog on their thread pool, which the
        # interpreter would wait for (tens of seconds); the measurement is done and flushed.
        os._exit(0)
    else:
        main()
