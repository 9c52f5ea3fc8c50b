"""Training service costs: snapshot of 100k episodes, and the serving agent's latency while a job runs.

1. **Snapshot** — 100 episodes are recorded through the real pipeline (decorated agent, ``chat``
   span with tool definitions, one ``execute_tool`` span, feedback on every tenth), then
   replicated with SQL to ``EPISODES`` episodes (new ids, sessions kept distinct). Timed:
   ``write_snapshot`` (serving side: three ``COPY`` to Parquet in one read transaction + sha256 +
   manifest), ``load_tasks`` (job side: read the Parquet back and build the tasks), and as the
   baseline side by side, ``agentgym.export`` to a Parquet directory of the same agent.
2. **Serving while a job runs** — per-call latency of the wrapped agent (one LLM call and one
   tool call recorded per episode) in batches: with no job, while an *idle* job runs (a real
   subprocess through the scheduler that only reports progress: the scheduler's own cost:
   polling, progress reads, ``training_runs`` updates), and while a *CPU-bound* job runs (the
   job competes for the cores, as a real CPU training job would).

Run with ``python benchmarks/bench_training_service.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

sys.path.insert(0, str(Path(__file__).parent))

from agentgym_runtime.trainers.base import ProgressFn, TrainingJobSpec, TrainingResult

EPISODES = int(os.environ.get("BENCH_SNAPSHOT_EPISODES", "100000"))
SEED_EPISODES = 100
JOB_SECONDS = float(os.environ.get("BENCH_JOB_SECONDS", "4"))
BATCH = 200


class IdleTrainer:
    """Reports progress every 50 ms for ``duration_s`` seconds; uses no CPU otherwise."""

    name: ClassVar[str] = "bench-idle"

    def check_available(self, spec: TrainingJobSpec) -> None:
        return None

    def train(self, spec: TrainingJobSpec, progress: ProgressFn) -> TrainingResult:
        duration = float(spec.options["duration_s"])
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < duration:
            progress(elapsed / duration, "idle")
            time.sleep(0.05)
        return TrainingResult(trainer="bench-idle", system_prompt="idle", metrics={"busy": False})


class BusyTrainer:
    """Spins one core for ``duration_s`` seconds, reporting progress every 50 ms."""

    name: ClassVar[str] = "bench-busy"

    def check_available(self, spec: TrainingJobSpec) -> None:
        return None

    def train(self, spec: TrainingJobSpec, progress: ProgressFn) -> TrainingResult:
        duration = float(spec.options["duration_s"])
        start = last = time.monotonic()
        x = 0
        while (now := time.monotonic()) - start < duration:
            x += sum(range(1000))
            if now - last >= 0.05:
                progress((now - start) / duration, "busy")
                last = now
        return TrainingResult(trainer="bench-busy", system_prompt="busy", metrics={"busy": True, "x": x % 7})


def _agent() -> Any:
    import agentgym_runtime as agentgym
    from agentgym_runtime.recording.capture import start_llm_call
    from agentgym_runtime.recording.context import RequestedToolCall

    @agentgym.tool
    def get_order(order_id: int) -> dict[str, Any]:
        """Look up an order."""
        return {"id": order_id, "status": "shipped"}

    definition = get_order.definition()

    def make(session: str) -> Any:
        @agentgym.train_online(name="support", session_id=session)
        def support(question: str, order_id: int) -> str:
            call = start_llm_call(
                model="scripted",
                provider="bench",
                tools=[definition],
                input_messages=[{"role": "user", "content": question}],
                system_instructions="Be exact.",
            )
            call.finish(
                requested=[RequestedToolCall.from_raw("get_order", f"c{order_id}", json.dumps({"order_id": order_id}))],
                input_tokens=20,
                output_tokens=8,
            )
            return f"order {order_id} is {get_order(order_id=order_id)['status']}"

        return support

    return make


def bench_snapshot(home: Path) -> list[str]:
    import agentgym_runtime as agentgym
    from agentgym_runtime.trainers.dataset import load_tasks, write_snapshot

    runtime = agentgym.configure(home=home, schedule_delay_ms=20)
    make = _agent()
    agents = [make(f"s{k}") for k in range(10)]
    for i in range(SEED_EPISODES):
        agents[i % 10](f"where is order {i}?", i)
        if i % 10 == 0:
            agentgym.feedback(agentgym.last_episode(), True, name="thumbs")  # type: ignore[arg-type]
    assert agentgym.flush()
    copies = EPISODES // SEED_EPISODES
    replicate = (
        "INSERT INTO episodes SELECT episodes.* REPLACE (episode_id || '-' || k AS episode_id, "
        "session_id || '-' || k AS session_id) FROM episodes, range(1, ?) t(k)"
    )

    def grow(con: Any) -> None:
        con.execute(replicate, [copies])
        con.execute(
            "INSERT INTO spans SELECT spans.* EXCLUDE (started_at, ended_at, duration_ms) "
            "REPLACE (episode_id || '-' || k AS episode_id) "
            "FROM spans, range(1, ?) t(k) WHERE episode_id IS NOT NULL",
            [copies],
        )
        con.execute(
            "INSERT INTO feedback SELECT feedback.* REPLACE (episode_id || '-' || k AS episode_id, feedback_id || k AS "
            "feedback_id) FROM feedback, range(1, ?) t(k)",
            [copies],
        )

    runtime.store.write(grow)
    counts = runtime.store.query(
        "SELECT (SELECT count(*) FROM episodes), (SELECT count(*) FROM spans), (SELECT count(*) FROM feedback)"
    )[0]
    runtime.store.checkpoint()

    snap_times, export_times, load_times = [], [], []
    manifest = None
    for attempt in range(2):
        start = time.perf_counter()
        manifest = write_snapshot(runtime.store, "support", home / f"snap{attempt}", run_id=f"bench{attempt}")
        snap_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        agentgym.export(home / f"export{attempt}", "parquet", agent="support")
        export_times.append(time.perf_counter() - start)
    assert manifest is not None
    start = time.perf_counter()
    train, heldout = load_tasks(home / "snap0")
    load_times.append(time.perf_counter() - start)
    size = sum((home / "snap0" / name).stat().st_size for name in manifest.files)
    agentgym.shutdown()
    snap, export, load = min(snap_times), min(export_times), min(load_times)
    return [
        f"Store: {counts[0]:,} episodes, {counts[1]:,} spans, {counts[2]:,} feedback rows "
        f"({SEED_EPISODES} recorded through the pipeline, replicated with SQL).",
        "",
        "| step | time | per 1k episodes | ratio |",
        "|---|---:|---:|---:|",
        f"| `agentgym.export` parquet of the agent (baseline) | {export:.2f} s | "
        f"{export / counts[0] * 1e6:.1f} ms | 1.00 |",
        f"| `write_snapshot` (serving side, incl. sha256 + manifest) | {snap:.2f} s | "
        f"{snap / counts[0] * 1e6:.1f} ms | {snap / export:.2f} |",
        f"| `load_tasks` (job side: read Parquet, build {len(train) + len(heldout):,} tasks, split) | {load:.2f} s | "
        f"{load / counts[0] * 1e6:.1f} ms | {load / export:.2f} |",
        "",
        f"Snapshot: {manifest.counts['episodes']:,} episodes, {manifest.counts['spans']:,} spans, "
        f"{manifest.counts['feedback']:,} feedback, {size / 2**20:.1f} MiB of Parquet (zstd); "
        f"split {len(train):,} train / {len(heldout):,} held-out tasks. Best of 2 (snapshot, export), 1 (load).",
    ]


def bench_serving(home: Path) -> list[str]:
    import agentgym_runtime as agentgym
    from agentgym_runtime.trainers.scheduler import TrainingConfig

    runtime = agentgym.configure(home=home)
    make = _agent()
    agents = [make(f"s{k}") for k in range(4)]
    for i in range(40):
        agents[i % 4](f"warm {i}", i)
    assert agentgym.flush()
    agent = agents[0]
    module = Path(__file__).stem

    def batch() -> float:
        start = time.perf_counter_ns()
        for i in range(BATCH):
            agent("where is my order?", i)
        return (time.perf_counter_ns() - start) / BATCH / 1000

    def during(trainer: str) -> list[float]:
        config = TrainingConfig(
            agent="support",
            trainer="bench",
            min_new_episodes=1,
            gpu="cpu",
            timeout_s=120,
            trainer_options={"trainer_class": f"{module}:{trainer}", "duration_s": JOB_SECONDS},
        )
        runs: list[Any] = []

        def train() -> None:
            cpu = time.thread_time()
            wall = time.perf_counter()
            runs.append(runtime.scheduler.run_now("support", config=config))
            scheduler_cpu.append((time.thread_time() - cpu, time.perf_counter() - wall))

        thread = threading.Thread(target=train)
        thread.start()
        while not runtime.scheduler.active_runs() and thread.is_alive():
            time.sleep(0.005)
        time.sleep(0.8)  # past the job's interpreter start-up: measure while it trains
        samples = []
        while runtime.scheduler.active_runs():
            samples.append(batch())
        thread.join()
        assert runs, "the training run did not return"
        assert runs[0].status == "succeeded", runs
        return samples[:-1] or samples  # the last batch may straddle the job's end

    for _ in range(10):
        batch()  # warm-up
    results: dict[str, list[float]] = {"none": [], "idle": [], "busy": []}
    scheduler_cpu: list[tuple[float, float]] = []
    for _ in range(2):
        for kind, trainer in (("idle", "IdleTrainer"), ("busy", "BusyTrainer")):
            time.sleep(0.8)  # the same pause and the same span of continuous calls as during a job
            until = time.monotonic() + JOB_SECONDS - 0.8
            while time.monotonic() < until:
                results["none"].append(batch())
            results[kind].extend(during(trainer))
    agentgym.flush()
    stats = agentgym.stats()
    lost = stats["spans_lost"]
    if os.environ.get("BENCH_DEBUG"):
        print(stats, file=sys.stderr)
    agentgym.shutdown()

    import statistics

    base = statistics.median(results["none"])
    lines = [
        f"Wrapped agent (episode + `chat` span + `execute_tool` span), batches of {BATCH} calls; "
        f"{JOB_SECONDS:g} s jobs, 2 of each kind, run through `runtime.scheduler.run_now` on another thread.",
        "",
        "| serving while | median per call | ratio | batches |",
        "|---|---:|---:|---:|",
    ]
    for key, label in (
        ("none", "no job (baseline)"),
        ("idle", "idle job (scheduler overhead only)"),
        ("busy", "CPU-bound job (core contention)"),
    ):
        median = statistics.median(results[key])
        lines.append(f"| {label} | {median:.0f} µs | {median / base:.2f} | {len(results[key])} |")
    cpu = sum(c for c, _ in scheduler_cpu)
    wall = sum(w for _, w in scheduler_cpu)
    lines += [
        "",
        f"CPU time of the serving process's scheduler thread over the {len(scheduler_cpu)} runs "
        f"(snapshot, submit, polling, progress, `training_runs` updates, registration): {cpu * 1000:.0f} ms "
        f"in {wall:.1f} s of wall time ({cpu / wall:.1%} of one core). Spans lost: {lost}. "
        f"Load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.",
    ]
    return lines


def main() -> None:
    from _util import machine

    tmp = Path(tempfile.mkdtemp(prefix="agentgym-bench-train-"))
    try:
        print("## Training service: snapshot and serving while a job runs\n")
        print(f"Machine: {machine()}\n")
        print(f"### Snapshot of {EPISODES:,} episodes\n")
        print("\n".join(bench_snapshot(tmp / "snapshot")))
        print("\n### Serving latency while a training job runs\n")
        print("\n".join(bench_serving(tmp / "serving")))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
