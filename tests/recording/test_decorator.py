"""@agentgym.train_online on functions of every shape and on plain agent objects."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

import agentgym_runtime as agentgym
from agentgym_runtime.testing import Recorded


@agentgym.tool
def lookup(order_id: int) -> dict[str, Any]:
    """Look up an order."""
    return {"id": order_id, "status": "shipped"}


def test_sync_function_keeps_result_signature_and_metadata(recorded: Recorded) -> None:
    def answer(question: str, *, polite: bool = True) -> str:
        """Answer a question."""
        lookup(order_id=7)
        return f"{'please, ' if polite else ''}{question}!"

    wrapped = agentgym.train_online(name="support")(answer)
    assert wrapped("hi", polite=False) == answer("hi", polite=False) == "hi!"
    assert wrapped.__name__ == "answer"
    assert wrapped.__doc__ == "Answer a question."
    assert inspect.signature(wrapped) == inspect.signature(answer)
    episodes = recorded.episodes()
    assert len(episodes) == 1
    row = episodes[0]
    assert row["agent"] == "support"
    assert row["status"] == "ok"
    assert row["tool_calls"] == 1
    assert row["tool_failures"] == 0
    assert row["tool_reliability"] == 1.0
    assert row["reward"] == 1.0
    assert row["entrypoint"].endswith(":test_sync_function_keeps_result_signature_and_metadata.<locals>.answer")
    assert row["input"] == '{"question":"hi","polite":false}'
    assert row["output"] == '"hi!"'


def test_bare_decorator_uses_function_name(recorded: Recorded) -> None:
    @agentgym.train_online
    def triage(ticket: str) -> str:
        return ticket.upper()

    assert triage("x") == "X"
    assert [e["agent"] for e in recorded.episodes()] == ["triage"]


def test_exception_passes_through_unchanged_and_marks_episode_error(recorded: Recorded) -> None:
    class Boom(Exception):
        pass

    error = Boom("the agent failed")

    @agentgym.train_online(name="fails")
    def agent() -> None:
        lookup(order_id=1)
        raise error

    with pytest.raises(Boom) as caught:
        agent()
    assert caught.value is error
    (row,) = recorded.episodes()
    assert row["status"] == "error"
    assert row["error_type"] == "test_exception_passes_through_unchanged_and_marks_episode_error.<locals>.Boom"
    assert row["tool_calls"] == 1


async def test_async_function(recorded: Recorded) -> None:
    @agentgym.train_online(name="async-agent")
    async def agent(n: int) -> int:
        await asyncio.sleep(0)
        lookup(order_id=n)
        return n * 2

    assert inspect.iscoroutinefunction(agent)
    assert await agent(21) == 42
    (row,) = recorded.episodes()
    assert (row["agent"], row["tool_calls"], row["output"]) == ("async-agent", 1, "42")


def test_generator_is_one_episode_spanning_iteration(recorded: Recorded) -> None:
    @agentgym.train_online(name="streamer")
    def agent(n: int):  # type: ignore[no-untyped-def]
        for i in range(n):
            lookup(order_id=i)
            yield i

    assert inspect.isgeneratorfunction(agent)
    assert list(agent(3)) == [0, 1, 2]
    (row,) = recorded.episodes()
    assert row["tool_calls"] == 3
    assert row["output"] == "[0,1,2]"
    assert len(recorded.tool_calls(row["episode_id"])) == 3


def test_generator_closed_early_is_cancelled(recorded: Recorded) -> None:
    @agentgym.train_online(name="streamer")
    def agent():  # type: ignore[no-untyped-def]
        yield 1
        yield 2

    gen = agent()
    assert next(gen) == 1
    gen.close()
    (row,) = recorded.episodes()
    assert row["status"] == "cancelled"


async def test_async_generator(recorded: Recorded) -> None:
    @agentgym.train_online(name="astreamer")
    async def agent(n: int):  # type: ignore[no-untyped-def]
        for i in range(n):
            await asyncio.sleep(0)
            lookup(order_id=i)
            yield i

    assert inspect.isasyncgenfunction(agent)
    assert [i async for i in agent(2)] == [0, 1]
    (row,) = recorded.episodes()
    assert (row["tool_calls"], row["status"]) == (2, "ok")


def test_object_proxy_keeps_type_attributes_and_entry_points(recorded: Recorded) -> None:
    class Agent:
        name = "helpdesk"

        def __init__(self) -> None:
            self.calls = 0

        def run(self, text: str) -> str:
            self.calls += 1
            lookup(order_id=1)
            return text[::-1]

        def __call__(self, text: str) -> str:
            return self.run(text)

        def helper(self) -> str:
            return "not an entry point"

    original = Agent()
    agent = agentgym.train_online(original)
    assert isinstance(agent, Agent)
    assert agent.run("abc") == "cba"
    assert agent("xy") == "yx"
    assert agent.helper() == "not an entry point"
    assert agent.calls == 2 and original.calls == 2
    episodes = recorded.episodes()
    # __call__ reaches run on the original object (self is not the proxy): one episode per call.
    assert [e["agent"] for e in episodes] == ["helpdesk", "helpdesk"]
    assert [e["tool_calls"] for e in episodes] == [1, 1]


def test_rejects_classes_and_bad_options(agentgym_runtime: object) -> None:
    class Agent:
        def run(self) -> None: ...

    with pytest.raises(agentgym.ConfigurationError, match="not classes: wrap an instance"):
        agentgym.train_online(Agent)
    with pytest.raises(agentgym.ConfigurationError, match="name must be a non-empty string"):
        agentgym.train_online(name="  ")(lambda: None)
    with pytest.raises(agentgym.ConfigurationError, match="unknown framework 'haystack'"):
        agentgym.train_online(framework="haystack")(lambda: None)
    with pytest.raises(agentgym.ConfigurationError, match="reward must be a callable"):
        agentgym.train_online(reward=3)(lambda: None)  # type: ignore[call-overload]
    with pytest.raises(agentgym.ConfigurationError, match="needs a function or an agent object"):
        agentgym.train_online(42)


def test_custom_reward_and_explicit_reward(recorded: Recorded) -> None:
    @agentgym.train_online(name="graded", reward=lambda episode, output: 0.25 if output == "ok" else 0.0)
    def graded() -> str:
        return "ok"

    @agentgym.train_online(name="explicit")
    def explicit() -> str:
        current = agentgym.current_episode()
        assert current is not None
        current.set_reward(0.9)
        return "done"

    graded()
    explicit()
    rewards = {e["agent"]: e["reward"] for e in recorded.episodes()}
    assert rewards == {"graded": 0.25, "explicit": 0.9}


def test_nested_agents_share_one_episode_with_per_agent_attribution(recorded: Recorded) -> None:
    @agentgym.train_online(name="researcher")
    def researcher() -> str:
        lookup(order_id=2)
        return "facts"

    @agentgym.train_online(name="manager")
    def manager() -> str:
        lookup(order_id=1)
        return researcher()

    assert manager() == "facts"
    (episode,) = recorded.episodes()
    assert episode["agent"] == "manager"
    assert episode["tool_calls"] == 2
    calls = recorded.tool_calls(episode["episode_id"])
    assert [c["agent"] for c in calls] == ["manager", "researcher"]


def test_episode_context_manager_adopts_first_agent_and_session(recorded: Recorded) -> None:
    @agentgym.train_online(name="support")
    def support() -> str:
        lookup(order_id=3)
        return "ok"

    with agentgym.episode(session_id="user-42", metadata={"channel": "chat"}) as ep:
        assert agentgym.current_episode() is ep
        support()
        support()
    assert agentgym.current_episode() is None
    assert agentgym.last_episode() is ep
    (row,) = recorded.episodes()
    assert (row["agent"], row["session_id"], row["tool_calls"]) == ("support", "user-42", 2)
    assert row["metadata"] == '{"channel":"chat"}'


def test_disabled_runtime_records_nothing_and_changes_nothing(tmp_path: Any) -> None:
    runtime = agentgym.configure(home=tmp_path / "off", enabled=False)
    try:

        @agentgym.train_online(name="quiet")
        def agent(x: int) -> int:
            return x + 1

        assert agent(1) == 2
        assert agentgym.last_episode() is None or agentgym.last_episode().agent != "quiet"  # type: ignore[union-attr]
        assert runtime.stats()["spans_enqueued"] == 0
    finally:
        agentgym.shutdown()


def test_last_episode_after_asyncio_run_is_the_newest(recorded: Recorded) -> None:
    with agentgym.episode(agent="older"):
        pass

    @agentgym.train_online(name="newer")
    async def agent() -> str:
        return "ok"

    assert asyncio.run(agent()) == "ok"
    latest = agentgym.last_episode()
    assert latest is not None
    assert latest.agent == "newer"


def test_last_episode_is_per_thread(recorded: Recorded) -> None:
    import threading

    @agentgym.train_online(name="threaded")
    def agent(tag: str) -> str:
        return tag

    seen: dict[str, str] = {}
    barrier = threading.Barrier(4)

    def worker(tag: str) -> None:
        agent(tag)
        barrier.wait()  # every thread has finished its episode before any reads
        episode = agentgym.last_episode()
        assert episode is not None
        seen[tag] = episode.input["tag"]

    threads = [threading.Thread(target=worker, args=(f"t{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {f"t{i}": f"t{i}" for i in range(4)}


def test_episode_block_adopts_the_first_agents_reward_and_identity(recorded: Recorded) -> None:
    @agentgym.train_online(name="graded", reward=lambda episode, output: 0.75)
    def graded(question: str) -> str:
        lookup(order_id=1)
        return "answer"

    with agentgym.episode(session_id="s-9") as ep:
        graded("q?")
    assert (ep.agent, ep.reward, ep.input) == ("graded", 0.75, {"question": "q?"})
    (row,) = recorded.episodes()
    assert (row["agent"], row["session_id"], row["reward"]) == ("graded", "s-9", 0.75)
    assert row["entrypoint"].endswith("graded")
    assert row["input"] == '{"question":"q?"}'
