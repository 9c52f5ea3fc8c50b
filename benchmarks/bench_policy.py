"""Policy benchmarks: resolve cost per call, promotion latency (same process, other process), swaps under load.

Run with ``make bench`` (all benchmarks) or ``python benchmarks/bench_policy.py``.
"""

from __future__ import annotations

import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _util import interleaved, machine, median


def resolve_cost() -> list[str]:
    from agentgym_runtime.policy.registry import PolicyRegistry
    from agentgym_runtime.policy.router import PolicyRouter
    from agentgym_runtime.recording.policy import Policy

    registry = PolicyRegistry(Path(tempfile.mkdtemp(prefix="bench-policy-")))
    router = PolicyRouter(registry)
    registry.promote("bot", registry.register("bot", system_prompt="live").version)
    registry.start_canary("bot", registry.register("bot", system_prompt="canary").version, 0.1)
    registry.promote("plain", registry.register("plain", system_prompt="live").version)
    baseline = Policy.baseline("bot")

    def constant() -> Policy:  # what the runtime did before: a fixed baseline
        return baseline

    def live_only() -> Policy:
        return router.resolve("plain", "session-42")

    def canary_session() -> Policy:
        return router.resolve("bot", "session-42")

    def canary_random() -> Policy:
        return router.resolve("bot", None)

    rows = []
    for label, fn in (
        ("live only, session id", live_only),
        ("canary 10%, sticky session id", canary_session),
        ("canary 10%, no session (random)", canary_random),
    ):
        base, measured = interleaved(constant, fn, calls=20_000, repeats=15)
        rows.append(
            f"| resolve policy per call ({label}) | {median(measured) / 1000:.2f} µs median | "
            f"constant-baseline resolver {median(base) / 1000:.2f} µs; ratio {median(measured) / median(base):.1f}x "
            f"(includes a pointers.json stat every 150 ms) | ≤ 2 µs |"
        )
    return rows


def promote_same_process() -> str:
    import agentgym_runtime as agentgym

    runtime = agentgym.configure(home=tempfile.mkdtemp(prefix="bench-policy-"))
    versions = [agentgym.register_policy("bot", system_prompt=f"p{i}").version for i in range(10)]
    calls_until_seen = []
    promote_ms = []
    for version in versions:
        start = time.perf_counter()
        agentgym.promote("bot", version)
        promote_ms.append((time.perf_counter() - start) * 1000)
        calls = 1
        while runtime.router.resolve("bot", None).version != version:
            calls += 1
        calls_until_seen.append(calls)
    agentgym.shutdown()
    return (
        f"| promote → next call in the same process uses it | {max(calls_until_seen)} call (max of "
        f"{len(versions)} promotions) | promote itself {statistics.median(promote_ms):.1f} ms median "
        f"(flock, 2 fsyncs, atomic replace; the DuckDB mirror runs in the background) | one call |"
    )


_WATCHER = """
import sys, threading, time
from pathlib import Path
from agentgym_runtime.policy.registry import PolicyRegistry
from agentgym_runtime.policy.router import PolicyRouter
router = PolicyRouter(PolicyRegistry(Path(sys.argv[1])))
first_seen = {}
def serve():  # steady traffic: the refresh phase is independent of the promotions
    while True:
        version = router.resolve("bot", None).version
        first_seen.setdefault(version, time.time())
        time.sleep(0.0005)
threading.Thread(target=serve, daemon=True).start()
print("ready", flush=True)
for line in sys.stdin:
    want = int(line)
    while want not in first_seen:
        time.sleep(0.0005)
    print(repr(first_seen[want]), flush=True)
"""


def promote_other_process(rounds: int = 10) -> str:
    from agentgym_runtime.policy.registry import PolicyRegistry

    root = Path(tempfile.mkdtemp(prefix="bench-policy-"))
    registry = PolicyRegistry(root)
    versions = [registry.register("bot", system_prompt=f"p{i}").version for i in range(rounds)]
    watcher = subprocess.Popen(
        [sys.executable, "-c", _WATCHER, str(root)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert watcher.stdin is not None
    assert watcher.stdout is not None
    assert watcher.stdout.readline().strip() == "ready"
    latencies = []
    for version in versions:
        time.sleep(random.uniform(0.05, 0.35))  # promotions land at random phases of the refresh interval
        start = time.time()
        registry.promote("bot", version)
        watcher.stdin.write(f"{version}\n")
        watcher.stdin.flush()
        seen = float(watcher.stdout.readline())
        latencies.append((seen - start) * 1000)
    watcher.stdin.close()
    watcher.wait(timeout=10)
    return (
        f"| promote → another process uses it | {statistics.median(latencies):.0f} ms median, "
        f"{max(latencies):.0f} ms max ({rounds} promotions) | refresh interval 150 ms (one stat) | ≤ 1 s |"
    )


def swaps_under_load(swaps: int = 50, threads: int = 4, rounds: int = 3) -> list[str]:
    import agentgym_runtime as agentgym
    from agentgym_runtime.recording.capture import start_llm_call

    runtime = agentgym.configure(home=tempfile.mkdtemp(prefix="bench-policy-"))
    registry = runtime.policies
    for i in range(3):
        registry.register("bot", system_prompt=f"p{i}")

    def one_call(i: int) -> None:
        with agentgym.episode(agent="bot", session_id=f"s{i}"):
            for _ in range(2):
                policy = agentgym.current_policy()
                assert policy is not None
                start_llm_call(model="m", input_messages=[{"role": "system", "content": policy.system_prompt}]).finish()

    def load(end: float, counters: dict[str, int], lock: threading.Lock) -> None:
        i = 0
        while time.perf_counter() < end:
            try:
                one_call(i)
                with lock:
                    counters["ok"] += 1
            except Exception:
                with lock:
                    counters["failed"] += 1
            i += 1

    def run(swap_count: int, duration: float = 1.5) -> tuple[dict[str, int], float, int]:
        runtime.flush()  # start each round with an idle writer
        counters = {"ok": 0, "failed": 0}
        lock = threading.Lock()
        start = time.perf_counter()
        workers = [threading.Thread(target=load, args=(start + duration, counters, lock)) for _ in range(threads)]
        for w in workers:
            w.start()
        done = 0
        for k in range(swap_count):
            state = registry.state("bot")
            if k % 2:
                registry.rollback("bot", actor="bench")
            else:
                registry.promote("bot", [v for v in (1, 2, 3) if v != state.live][k % 2], actor="bench")
            done += 1
            time.sleep(max(0.0, start + (k + 1) * duration / swap_count - time.perf_counter()))
        for w in workers:
            w.join()
        return counters, time.perf_counter() - start, done

    quiet_rates, swap_rates = [], []
    failed = total = done = 0
    per_round = swaps // rounds + 1
    for _ in range(rounds):  # alternate, so machine load and store growth hit both alike
        quiet, quiet_s, _ = run(0)
        quiet_rates.append(quiet["ok"] / quiet_s)
        swapping, swapping_s, n = run(min(per_round, swaps - done))
        swap_rates.append(swapping["ok"] / swapping_s)
        failed += swapping["failed"] + quiet["failed"]
        total += swapping["ok"] + swapping["failed"]
        done += n
    runtime.flush()
    errors = runtime.stats()["internal_errors"]
    agentgym.shutdown()
    quiet_rate, swap_rate = statistics.median(quiet_rates), statistics.median(swap_rates)
    return [
        f"| requests failed during {done} swaps under load | {failed} of {total} ({errors} internal errors) | "
        f"{threads} threads, episodes of 2 LLM calls, promote/rollback alternating | 0 |",
        f"| throughput while swapping vs. without | {swap_rate:.0f} vs {quiet_rate:.0f} episodes/s "
        f"(ratio {swap_rate / quiet_rate:.2f}) | {rounds} alternating rounds of 1.5 s, medians | — |",
    ]


def main() -> None:
    print("## Policies and hot swap\n")
    print(f"Machine: {machine()}\n")
    print("| what | measured | context | target |")
    print("|---|---|---|---|")
    for line in resolve_cost():
        print(line, flush=True)
    print(promote_same_process(), flush=True)
    print(promote_other_process(), flush=True)
    for line in swaps_under_load():
        print(line, flush=True)


if __name__ == "__main__":
    main()
