"""load_policy and TrainedPolicy: seeding a fresh agent changes what its (scripted) model receives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import pytest

import agentgym_runtime as agentgym
from agentgym_runtime.policy.apply import apply_to_messages
from agentgym_runtime.policy.trained import SeededAgent, TrainedPolicy
from agentgym_runtime.recording.capture import start_llm_call
from agentgym_runtime.recording.runtime import Runtime
from agentgym_runtime.testing import Recorded

TRAINED_PROMPT = "Always look the order up with get_order before answering."
DEMO = {
    "input": "where is order 3?",
    "tool_calls": [{"name": "get_order", "arguments": {"order_id": 3}}],
    "output": "shipped",
}


@pytest.fixture
def trained(agentgym_runtime: Runtime) -> TrainedPolicy:
    agentgym.register_policy("support", system_prompt="old")
    agentgym.register_policy(
        "support",
        system_prompt=TRAINED_PROMPT,
        tool_descriptions={"get_order": "Fetch an order; order_id is an integer."},
        demonstrations=[DEMO],
        trainer="demos",
    )
    agentgym.promote("support", 2)
    return agentgym.load_policy("support@live")


def test_load_policy_references(trained: TrainedPolicy) -> None:
    assert (trained.ref, trained.system_prompt, trained.policy.trainer) == ("support@v2", TRAINED_PROMPT, "demos")
    assert agentgym.load_policy("support@v1").system_prompt == "old"
    assert agentgym.load_policy("support@2") == trained
    assert agentgym.load_policy("support@v0").is_baseline
    with pytest.raises(agentgym.PolicyNotFoundError, match="agent 'support' has no canary version; live is v2"):
        agentgym.load_policy("support@canary")
    with pytest.raises(
        agentgym.PolicyNotFoundError, match="no policies registered for agent 'billing'; agents with policies: support"
    ):
        agentgym.load_policy("billing@live")
    with pytest.raises(agentgym.ConfigurationError, match="not a policy version: 'latest'"):
        agentgym.load_policy("support@latest")


def test_apply_to_a_plain_callable_pins_the_policy(trained: TrainedPolicy, recorded: Recorded) -> None:
    received: list[list[dict[str, Any]]] = []

    @agentgym.train_online(name="support")
    def support(question: str) -> str:
        policy = agentgym.current_policy()
        messages = apply_to_messages(
            policy, [{"role": "system", "content": "mine"}, {"role": "user", "content": question}]
        )
        received.append(messages)
        start_llm_call(model="scripted", input_messages=messages).finish(output_messages=["ok"])
        return "ok"

    agentgym.promote("support", 1)  # the registry serves v1 now; the seeded object keeps v2
    seeded = trained.apply(support)
    assert isinstance(seeded, SeededAgent) and seeded.agentgym_policy.version == 2
    assert seeded("where is 7?") == "ok"
    assert support("where is 8?") == "ok"
    assert received[0][0] == {"role": "system", "content": TRAINED_PROMPT}
    assert [m["role"] for m in received[0]] == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert received[1] == [{"role": "system", "content": "old"}, {"role": "user", "content": "where is 8?"}]
    assert [e["policy_version"] for e in recorded.episodes("support")] == [2, 1]


def test_to_langchain_changes_the_messages_the_model_receives(trained: TrainedPolicy) -> None:
    from langchain.agents import create_agent
    from langchain_core.language_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage, BaseMessage
    from langchain_core.outputs import ChatGeneration, ChatResult
    from langchain_core.tools import tool
    from langchain_core.utils.function_calling import convert_to_openai_tool

    seen: list[dict[str, Any]] = []

    class Scripted(GenericFakeChatModel):
        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

        def _generate(
            self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
        ) -> ChatResult:
            seen.append({"messages": list(messages), "tools": kw.get("tools")})
            return ChatResult(generations=[ChatGeneration(message=AIMessage("done"))])

    @tool
    def get_order(order_id: int) -> str:
        """Look up an order by its id."""
        return "shipped"

    graph = create_agent(Scripted(messages=iter(())), tools=[get_order], system_prompt="ORIGINAL")
    graph.invoke({"messages": [("user", "where is 7?")]})
    seeded = trained.to_langchain(graph)
    seeded.invoke({"messages": [("user", "where is 7?")]})
    before, after = seen
    assert before["messages"][0].content == "ORIGINAL"
    assert after["messages"][0].content == TRAINED_PROMPT
    assert [m.type for m in after["messages"]] == ["system", "human", "ai", "tool", "ai", "human"]
    assert after["tools"][0]["function"]["description"] == "Fetch an order; order_id is an integer."
    assert before["tools"][0]["function"]["description"] == "Look up an order by its id."


def test_to_autogen_changes_the_messages_the_model_receives(trained: TrainedPolicy) -> None:
    from autogen_agentchat.agents import AssistantAgent
    from autogen_core.models import CreateResult, LLMMessage, RequestUsage

    from tests.adapters.autogen_stub import StubClient

    received: list[list[Any]] = []

    class Client(StubClient):
        async def create(self, messages: Sequence[LLMMessage], **kwargs: Any) -> CreateResult:
            received.append(list(messages))
            return CreateResult(
                finish_reason="stop",
                content="done",
                usage=RequestUsage(prompt_tokens=1, completion_tokens=1),
                cached=False,
            )

        async def create_stream(self, messages: Sequence[LLMMessage], **kwargs: Any) -> AsyncGenerator[Any, None]:  # type: ignore[override]
            yield await self.create(messages)

    def get_order(order_id: int) -> str:
        """Look up an order by its id."""
        return "shipped"

    plain = AssistantAgent("support", model_client=Client(), tools=[get_order], system_message="ORIGINAL")
    asyncio.run(plain.run(task="where is 7?"))
    fresh = AssistantAgent("support", model_client=Client(), tools=[get_order], system_message="ORIGINAL")
    assert trained.to_autogen(fresh) is fresh
    asyncio.run(fresh.run(task="where is 7?"))
    before, after = received
    assert before[0].content == "ORIGINAL"
    assert after[0].content == TRAINED_PROMPT
    assert len(after) == len(before) + 4  # user, assistant(tool call), tool result, assistant: the demonstration


def test_to_crewai_changes_the_messages_the_model_receives(trained: TrainedPolicy) -> None:
    from crewai import Agent, Crew, Task
    from crewai.llms.base_llm import BaseLLM

    received: list[list[dict[str, Any]]] = []

    class Scripted(BaseLLM):
        def call(self, messages: Any, *args: Any, **kwargs: Any) -> str:
            received.append([dict(m) for m in messages] if isinstance(messages, list) else [{"content": messages}])
            return "Thought: I now know the final answer\nFinal Answer: shipped"

        def supports_function_calling(self) -> bool:
            return False

    def crew() -> Crew:
        agent = Agent(
            role="support", goal="answer order questions", backstory="ORIGINAL", llm=Scripted(model="s"), verbose=False
        )
        return Crew(
            agents=[agent],
            tasks=[Task(description="Where is order 7?", expected_output="status", agent=agent)],
            verbose=False,
        )

    crew().kickoff()
    seeded = crew()
    trained.to_crewai(seeded.agents[0])
    seeded.kickoff()
    before, after = received
    assert "ORIGINAL" in before[0]["content"] and TRAINED_PROMPT not in before[0]["content"]
    assert TRAINED_PROMPT in after[0]["content"] and "ORIGINAL" not in after[0]["content"]
    assert "where is order 3?" in after[0]["content"]  # the demonstration
