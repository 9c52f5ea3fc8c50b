"""1000 calls across threads and asyncio tasks while versions are promoted and rolled back 50 times."""

from __future__ import annotations

import asyncio
import threading
import time

import agentgym_runtime as agentgym
from agentgym_runtime.recording.capture import start_llm_call
from agentgym_runtime.recording.runtime import Runtime
from agentgym_runtime.testing import Recorded

CALLS_PER_SWAP = 20
SWAPS = 50
THREADS = 4
SYNC_CALLS = 500
ASYNC_CALLS = 500


class _Pacer:
    """Interleaves calls and swaps: call i starts only after swap i // 20 - 1, swap k after call 20 k."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started = 0
        self.swaps = 0

    def ticket(self) -> int:
        with self.lock:
            self.started += 1
            return self.started - 1

    def may_start(self, ticket: int) -> bool:
        return self.swaps >= min(ticket // CALLS_PER_SWAP - 1, SWAPS)


def test_each_call_keeps_one_version_while_versions_swap(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    registry = agentgym_runtime.policies
    for prompt in ("one", "two", "three"):
        registry.register("support", system_prompt=prompt)
    pacer = _Pacer()
    seen: list[tuple[str, int, int, int]] = []
    seen_lock = threading.Lock()

    def observe(episode_id: str, start: int, first: int, second: int) -> None:
        with seen_lock:
            seen.append((episode_id, start, first, second))

    def llm_call() -> int:
        policy = agentgym.current_policy()
        assert policy is not None
        call = start_llm_call(model="scripted", input_messages=[{"role": "system", "content": policy.system_prompt}])
        call.finish(output_messages=[{"role": "assistant", "content": "ok"}])
        return policy.version

    @agentgym.train_online(name="support")
    def sync_agent(ticket: int) -> None:
        episode = agentgym.current_episode()
        assert episode is not None
        start = episode.policy_version
        first = llm_call()
        time.sleep(0.0005)  # let swaps happen between the two LLM calls
        second = llm_call()
        observe(episode.id, start, first, second)

    @agentgym.train_online(name="support")
    async def async_agent(ticket: int) -> None:
        episode = agentgym.current_episode()
        assert episode is not None
        start = episode.policy_version
        first = llm_call()
        await asyncio.sleep(0.0005)
        second = llm_call()
        observe(episode.id, start, first, second)

    def swapper() -> None:
        for k in range(SWAPS):
            while pacer.started < k * CALLS_PER_SWAP:
                time.sleep(0.0005)
            state = registry.state("support")
            if k % 3 == 2:
                registry.rollback("support", actor="swapper")
            elif k % 3 == 1:
                choices = [v for v in (1, 2, 3) if v != state.live]
                registry.start_canary("support", choices[k % 2], 0.5, actor="swapper")
            else:
                registry.promote("support", [v for v in (0, 1, 2, 3) if v != state.live][k % 3], actor="swapper")
            pacer.swaps += 1

    def thread_worker(n: int) -> None:
        for _ in range(n):
            ticket = pacer.ticket()
            while not pacer.may_start(ticket):
                time.sleep(0.0005)
            sync_agent(ticket)

    async def task_worker() -> None:
        ticket = pacer.ticket()
        while not pacer.may_start(ticket):
            await asyncio.sleep(0.0005)
        await async_agent(ticket)

    async def run_tasks() -> None:
        await asyncio.gather(*(task_worker() for _ in range(ASYNC_CALLS)))

    threads = [threading.Thread(target=swapper)] + [
        threading.Thread(target=thread_worker, args=(SYNC_CALLS // THREADS,)) for _ in range(THREADS)
    ]
    for t in threads:
        t.start()
    asyncio.run(run_tasks())
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)

    assert pacer.swaps == SWAPS
    assert len(seen) == SYNC_CALLS + ASYNC_CALLS == 1000
    assert all(start == first == second for _, start, first, second in seen)
    versions = {start for _, start, _, _ in seen}
    assert len(versions) >= 3, versions
    swaps = [
        e
        for e in registry.events("support")
        if e.actor == "swapper" and e.to_status in ("live", "canary", "rolled_back")
    ]
    assert len({e.sequence for e in swaps}) == SWAPS

    episodes = {r["episode_id"]: r["policy_version"] for r in recorded.episodes("support")}
    assert len(episodes) == 1000
    assert {episode_id: start for episode_id, start, _, _ in seen} == episodes
    mismatched = recorded.query(
        "SELECT count(*) AS n FROM spans s JOIN episodes e USING (episode_id) "
        "WHERE s.operation = 'chat' AND s.policy_version <> e.policy_version"
    )
    assert mismatched[0]["n"] == 0
    chats = recorded.query("SELECT count(*) AS n, count(policy_version) AS tagged FROM spans WHERE operation = 'chat'")
    assert (chats[0]["n"], chats[0]["tagged"]) == (2000, 2000)
    stats = agentgym_runtime.stats()
    assert (stats["internal_errors"], stats["spans_lost"]) == (0, 0)
