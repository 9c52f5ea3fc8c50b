"""AG2 adapter: real AG2 ConversableAgent pairs driven by a scripted model client, offline."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest
from autogen import ConversableAgent, OpenAIWrapper, register_function

import agentgym_runtime as agentgym
from agentgym_runtime.adapters import detect_framework, load_adapter
from agentgym_runtime.adapters.ag2 import AG2Adapter, register_client_factory
from agentgym_runtime.policy.trained import TrainedPolicy
from agentgym_runtime.recording.policy import LLMConfig, Policy
from agentgym_runtime.recording.runtime import Runtime
from agentgym_runtime.testing import Recorded
from tests.adapters.support_policy import SUPPORT_POLICY


class ScriptedClient:
    """An AG2 ``ModelClient`` answering from a script; it remembers every request it was sent."""

    def __init__(self, config: dict[str, Any], script: list[Any], received: list[dict[str, Any]]) -> None:
        self.script = script
        self.received = received

    def create(self, params: dict[str, Any]) -> Any:
        self.received.append(params)
        if not self.script:
            raise ValueError("the script is exhausted")
        return self.script.pop(0)

    def message_retrieval(self, response: Any) -> list[Any]:
        return [choice.message for choice in response.choices]

    def cost(self, response: Any) -> float:
        return 0.0

    @staticmethod
    def get_usage(response: Any) -> dict[str, Any]:
        return {}


def reply(content: str | None = None, *calls: tuple[str, str, str]) -> Any:
    """A chat completion as a model client returns it: text, or tool calls ``(id, name, arguments)``."""
    tool_calls = [{"id": i, "type": "function", "function": {"name": n, "arguments": a}} for i, n, a in calls]
    dumped = {"content": content, "role": "assistant", "tool_calls": tool_calls or None}
    message = SimpleNamespace(
        content=content,
        role="assistant",
        function_call=None,
        tool_calls=[
            SimpleNamespace(id=c["id"], type="function", function=SimpleNamespace(**c["function"])) for c in tool_calls
        ]
        or None,
        model_dump=lambda: dumped,
    )
    return SimpleNamespace(
        choices=[SimpleNamespace(message=message)],
        model="scripted",
        usage=SimpleNamespace(prompt_tokens=11, completion_tokens=7),
    )


def get_order(order_id: int) -> str:
    """Look up an order by its id."""
    return f"order {order_id} shipped"


def refund(order_id: int, amount: float) -> str:
    """Refund part of an order."""
    raise RuntimeError(f"refund service down for order {order_id}")


MIXED = reply(
    None,
    ("c1", "get_order", '{"order_id": 7}'),
    ("c2", "cancel_order", '{"order_id": 7}'),  # unknown tool
    ("c3", "get_order", '{"order_id": "seven"}'),  # breaks the schema the model was shown
    ("c4", "get_order", '{"order_id": 7'),  # not JSON
    ("c5", "refund", '{"order_id": 7, "amount": 5.0}'),  # the function raises
)
MIXED_BY_CALL = {
    "c1": "ok",
    "c2": "unknown_tool",
    "c3": "invalid_arguments",
    "c4": "invalid_arguments",
    "c5": "tool_error",
}
MIXED_OUTCOMES = {"ok": 1, "unknown_tool": 1, "invalid_arguments": 2, "tool_error": 1}


def pair(*script: Any, name: str = "support") -> tuple[ConversableAgent, ConversableAgent, list[dict[str, Any]]]:
    """An assistant whose model is scripted and a user proxy that executes its functions."""
    received: list[dict[str, Any]] = []
    assistant = ConversableAgent(
        name,
        system_message="You are support.",
        llm_config={"config_list": [{"model": "scripted", "model_client_cls": "ScriptedClient"}]},
        human_input_mode="NEVER",
    )
    user = ConversableAgent("user", llm_config=False, human_input_mode="NEVER")
    register_function(get_order, caller=assistant, executor=user, description="Look up an order by its id.")
    register_function(refund, caller=assistant, executor=user, description="Refund part of an order.")
    assistant.register_model_client(ScriptedClient, script=list(script), received=received)
    return assistant, user, received


def history(result: Any) -> list[tuple[Any, Any]]:
    return [(m.get("role"), m.get("content")) for m in result.chat_history]


# --- capture --------------------------------------------------------------------------------------
def test_chat_records_each_requested_call_once_with_its_outcome(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    assistant, user, _ = pair(MIXED, reply("Order 7 shipped."))
    wrapped = agentgym.train_online(assistant, name="support")

    user.initiate_chat(wrapped, message="where is order 7?", max_turns=2, silent=True)

    episode = agentgym.last_episode()
    assert episode is not None and episode.agent == "support"
    assert episode.outcomes == MIXED_OUTCOMES
    assert recorded.outcomes(episode.id) == MIXED_OUTCOMES
    rows = recorded.tool_calls(episode.id)
    assert {r["call_id"]: r["outcome"] for r in rows} == MIXED_BY_CALL and len(rows) == 5
    (row,) = recorded.episodes("support")
    assert row["framework"] == "ag2" and row["llm_calls"] == 2
    assert row["tool_calls"] == 5 and row["tool_failures"] == 4 and row["tool_reliability"] == pytest.approx(0.2)
    chats = recorded.query("SELECT * FROM llm_calls WHERE episode_id = ? ORDER BY started_at", [episode.id])
    assert [(c["agent"], c["provider"], c["output_tokens"]) for c in chats] == [
        ("support", "ScriptedClient", 7),
        ("support", "ScriptedClient", 7),
    ]
    # the schema the model was shown decides (AG2's own pydantic conversion failed too: it ran anyway)
    (checked,) = recorded.query("SELECT attributes FROM spans WHERE tool_call_id = 'c3'", [])
    attributes = json.loads(checked["attributes"])
    assert attributes["agentgym.tool.executed_anyway"] is True
    assert attributes["agentgym.tool.executed_outcome"] == "tool_error"
    assert attributes["agentgym.tool.error_message"] == "order_id: 'seven' is not of type 'integer'"


def test_results_are_identical_with_and_without_the_wrapper(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    assistant, user, _ = pair(MIXED, reply("Order 7 shipped."))
    bare = user.initiate_chat(assistant, message="where is order 7?", max_turns=2, silent=True)
    assistant, user, _ = pair(MIXED, reply("Order 7 shipped."))
    wrapped = user.initiate_chat(
        agentgym.train_online(assistant, name="support"), message="where is order 7?", max_turns=2, silent=True
    )

    assert history(wrapped) == history(bare)
    assert len(recorded.episodes()) == 1  # the bare chat, outside any episode, recorded nothing


def test_async_chat_started_by_the_wrapped_agent(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    assistant, user, _ = pair(reply(None, ("a1", "get_order", '{"order_id": 1}')), reply("done"))
    wrapped_user = agentgym.train_online(user, name="desk")

    result = asyncio.run(wrapped_user.a_initiate_chat(assistant, message="order 1?", max_turns=2, silent=True))

    assert result.chat_history[-1]["content"] == "done"
    (row,) = recorded.episodes("desk")
    assert row["llm_calls"] == 2 and row["tool_reliability"] == 1.0
    assert {r["call_id"]: r["outcome"] for r in recorded.tool_calls(row["episode_id"])} == {"a1": "ok"}


def test_unexecuted_calls_are_reconciled_at_episode_end(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    assistant, user, _ = pair(reply(None, ("u1", "get_order", '{"order_id": 1}'), ("u2", "ship", "{}")))
    wrapped = agentgym.train_online(assistant, name="support")

    user.initiate_chat(wrapped, message="order 1?", max_turns=1, silent=True)  # ends before the user executes

    (row,) = recorded.episodes()
    assert {r["call_id"]: r["outcome"] for r in recorded.tool_calls(row["episode_id"])} == {
        "u1": "not_executed",
        "u2": "unknown_tool",
    }


def test_decorated_function_running_bare_agents(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    adapter = load_adapter("ag2")
    adapter.instrument()
    try:

        @agentgym.train_online(name="handler")
        def handle(question: str) -> str:
            assistant, user, _ = pair(MIXED, reply("Order 7 shipped."))
            return str(user.initiate_chat(assistant, message=question, max_turns=2, silent=True).summary)

        assert handle("where is order 7?") == "Order 7 shipped."
    finally:
        adapter.uninstrument()

    (row,) = recorded.episodes()
    assert row["agent"] == "handler" and row["llm_calls"] == 2
    assert recorded.outcomes(row["episode_id"]) == MIXED_OUTCOMES


def test_agent_exception_passes_through_unchanged(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    assistant, user, _ = pair()  # empty script: the model client raises
    wrapped = agentgym.train_online(assistant, name="support")

    with pytest.raises(ValueError, match="the script is exhausted"):
        user.initiate_chat(wrapped, message="hello", max_turns=2, silent=True)

    (row,) = recorded.episodes()
    assert row["status"] == "error" and row["error_type"] == "ValueError"
    (chat,) = recorded.query("SELECT * FROM llm_calls")
    assert chat["error_type"] == "ValueError"


def test_a_failing_middleware_never_changes_the_agent_result(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from agentgym_runtime.adapters.ag2 import hooks

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("middleware bug")

    runtime = agentgym.configure(home=tmp_path / "lenient", strict=False)
    try:
        monkeypatch.setattr(hooks, "start_llm_call", broken)
        monkeypatch.setattr(hooks, "start_checked_tool_call", broken)
        bare_assistant, bare_user, _ = pair(MIXED, reply("Order 7 shipped."))
        expected = bare_user.initiate_chat(bare_assistant, message="where is order 7?", max_turns=2, silent=True)
        assistant, user, _ = pair(MIXED, reply("Order 7 shipped."))

        result = user.initiate_chat(
            agentgym.train_online(assistant, name="robust"), message="where is order 7?", max_turns=2, silent=True
        )

        assert history(result) == history(expected)
        # two LLM calls and the three calls that reach the schema check; the rest is still recorded
        assert runtime.stats()["internal_errors"] == 5
        episode = agentgym.last_episode()
        assert episode is not None and episode.outcomes == {"unknown_tool": 1, "invalid_arguments": 1}
    finally:
        agentgym.shutdown()


def test_proxy_keeps_type_and_detection(agentgym_runtime: Runtime) -> None:
    assistant, _, _ = pair()
    wrapped = agentgym.train_online(assistant, name="support")

    assert isinstance(wrapped, ConversableAgent) and wrapped.__wrapped__ is assistant
    assert detect_framework(assistant) == "ag2" and "ag2 proxy" in repr(wrapped)


def test_uninstrument_restores_ag2() -> None:
    adapter = AG2Adapter()
    count = type(adapter)._instrument_count
    for _ in range(count):
        adapter.uninstrument()
    try:
        assert not adapter.instrumented
        assert not hasattr(ConversableAgent.__dict__["execute_function"], "__wrapped__")
        assert not hasattr(OpenAIWrapper.__dict__["create"], "__wrapped__")
        adapter.instrument()
        assert hasattr(ConversableAgent.__dict__["execute_function"], "__wrapped__")
        assert hasattr(OpenAIWrapper.__dict__["create"], "__wrapped__")
        adapter.uninstrument()
        assert not hasattr(ConversableAgent.__dict__["execute_function"], "__wrapped__")
        assert not hasattr(OpenAIWrapper.__dict__["create"], "__wrapped__")
    finally:
        for _ in range(count):
            adapter.instrument()


# --- policies -------------------------------------------------------------------------------------
POLICY = SUPPORT_POLICY


def _descriptions(params: dict[str, Any]) -> dict[str, str]:
    return {t["function"]["name"]: t["function"]["description"] for t in params["tools"]}


def test_policy_is_applied_per_call_without_changing_the_agent(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    assistant, user, received = pair(reply("first"), reply("second"))
    wrapped = agentgym.train_online(assistant, name="support")
    agentgym_runtime.policy_resolver = lambda name, session: POLICY if name == "support" else Policy.baseline(name)
    user.initiate_chat(wrapped, message="where is order 4?", max_turns=1, silent=True)
    agentgym_runtime.policy_resolver = lambda name, session: Policy.baseline(name)
    user.initiate_chat(wrapped, message="and order 5?", max_turns=1, silent=True)

    with_policy, baseline = received
    messages = with_policy["messages"]
    assert messages[0] == {"role": "system", "content": POLICY.system_prompt}
    assert messages[1]["role"] == "user" and messages[1]["content"] == "where is order 1?"
    assert messages[2]["tool_calls"][0]["function"] == {"name": "get_order", "arguments": '{"order_id": 1}'}
    assert messages[3]["role"] == "tool" and messages[3]["content"] == "shipped"
    assert messages[4]["content"] == "Order 1 shipped."
    assert messages[5]["content"] == "where is order 4?" and len(messages) == 6
    assert _descriptions(with_policy) == {
        "get_order": "Fetch one order; order_id is an integer.",
        "refund": "Refund part of an order.",
    }
    # the baseline call sees the agent as written; the agent itself never changed
    assert baseline["messages"][0] == {"role": "system", "content": "You are support."}
    assert _descriptions(baseline)["get_order"] == "Look up an order by its id."
    assert assistant.system_message == "You are support."
    assert {t["function"]["description"] for t in assistant.llm_config["tools"]} == {
        "Look up an order by its id.",
        "Refund part of an order.",
    }
    first, second = recorded.episodes()
    assert (first["policy_version"], second["policy_version"]) == (3, 0)


def test_policy_llm_routes_to_the_registered_factory(agentgym_runtime: Runtime, recorded: Recorded) -> None:
    assistant, user, own = pair(reply("from the agent's own model"))
    routed_received: list[dict[str, Any]] = []
    built: list[LLMConfig] = []

    def factory(llm: LLMConfig) -> OpenAIWrapper:
        built.append(llm)
        wrapper = OpenAIWrapper(config_list=[{"model": llm.model, "model_client_cls": "ScriptedClient"}])
        wrapper.register_model_client(ScriptedClient, script=[reply("from the routed model")], received=routed_received)
        return wrapper

    llm = LLMConfig(endpoint="http://localhost:9/v1", model="tuned")
    agentgym_runtime.policy_resolver = lambda name, session: Policy(agent=name, version=2, llm=llm)
    register_client_factory(factory)
    try:
        result = user.initiate_chat(
            agentgym.train_online(assistant, name="router"), message="hi", max_turns=1, silent=True
        )
    finally:
        register_client_factory(None)

    assert result.chat_history[-1]["content"] == "from the routed model"
    assert built == [llm] and own == [] and len(routed_received) == 1
    assert _descriptions(routed_received[0])["get_order"] == "Look up an order by its id."  # the agent's tools


def test_seed_and_to_ag2_apply_a_policy_permanently(agentgym_runtime: Runtime) -> None:
    assistant, user, received = pair(reply("fine"))

    seeded = TrainedPolicy(POLICY).to_ag2(assistant)

    assert seeded is assistant
    user.initiate_chat(assistant, message="hello", max_turns=1, silent=True)  # no episode: it still applies
    (call,) = received
    assert call["messages"][0]["content"] == POLICY.system_prompt and len(call["messages"]) == 6
    with pytest.raises(TypeError, match="seeds ConversableAgent objects"):
        load_adapter("ag2").seed(object(), POLICY)
