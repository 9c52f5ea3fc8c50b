"""A LangChain ``create_agent`` agent recorded by agentgym-runtime, runnable offline.

The chat model is a scripted ``GenericFakeChatModel`` that "decides" the tool calls a real
model might make, including the usual mistakes (a hallucinated tool, an argument of the wrong
type, malformed JSON arguments, a tool that reports an error, a tool that raises). The agent is
wrapped with one call to ``agentgym.train_online``; it runs unchanged and every ``invoke``
becomes an episode. Then a trained policy (new system prompt and tool description) is pinned for
one more run, applied at the LLM-call boundary without touching the agent.
Run it with ``.venv/bin/python examples/langchain_agent.py``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import ToolException, tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field
from rich.console import Console

import agentgym_runtime as agentgym

ORDERS = {1001: "shipped", 1002: "processing", 1003: "delivered"}


@tool
def get_order_status(order_id: int) -> str:
    """Current status of an order."""
    if order_id not in ORDERS:
        raise KeyError(f"no order {order_id}")
    return ORDERS[order_id]


@tool
def refund(order_id: int, amount: float) -> str:
    """Refund an amount (in euros) on an order."""
    if amount > 100:
        raise ToolException("refunds above 100 EUR need a supervisor")
    return f"refunded {amount:.2f} EUR on order {order_id}"


refund.handle_tool_error = True  # a ToolException becomes an error ToolMessage the model sees


# What the scripted model "decides" for each question: (tool name, arguments or raw JSON text).
SCRIPT: dict[str, list[tuple[str, Any]]] = {
    "Where is order 1001?": [("get_order_status", {"order_id": 1001})],
    "Refund 20 euros on order 1002": [("refund", {"order_id": 1002, "amount": 20})],
    "Refund 500 euros on order 1002": [("refund", {"order_id": 1002, "amount": 500})],  # error result
    "Cancel order 1003": [("cancel_order", {"order_id": 1003})],  # hallucinated tool
    "Status of order ABC?": [("get_order_status", {"order_id": "ABC"})],  # wrong type
    "Where is 1003": [("get_order_status", '{"order_id": 1003')],  # malformed JSON
    "Where is order 999?": [("get_order_status", {"order_id": 999})],  # the tool raises
}


class ScriptedModel(GenericFakeChatModel):
    """Answers from SCRIPT: tool calls first, then a final answer once the tools have replied."""

    messages: Iterator[AIMessage | str] = Field(default_factory=lambda: iter(()))
    model_name: str = "scripted-support-1"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        """Bind OpenAI-format tool definitions, as real chat models do."""
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _generate(
        self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        question = next(str(m.content) for m in reversed(messages) if m.type == "human")
        if messages[-1].type == "tool":
            answer = AIMessage(f"Done: {messages[-1].content}")
        else:
            valid, invalid = [], []
            for i, (name, arguments) in enumerate(SCRIPT.get(question, [])):
                if isinstance(arguments, str):
                    invalid.append({"name": name, "args": arguments, "id": f"c{i}", "error": None})
                else:
                    valid.append({"name": name, "args": arguments, "id": f"c{i}", "type": "tool_call"})
            answer = AIMessage("", tool_calls=valid, invalid_tool_calls=invalid)
        answer.usage_metadata = {"input_tokens": 40, "output_tokens": 12, "total_tokens": 52}
        return ChatResult(generations=[ChatGeneration(message=answer)])


def main() -> None:
    runtime = agentgym.configure(home=tempfile.mkdtemp(prefix="agentgym-example-"), service_name="langchain-example")
    console = Console(width=140)
    graph = create_agent(
        ScriptedModel(), [get_order_status, refund], system_prompt="You are a customer support agent. Use the tools."
    )
    agent = agentgym.train_online(graph, name="langchain-support")

    for question in SCRIPT:
        try:
            result = agent.invoke({"messages": [HumanMessage(question)]})
            answer = str(result["messages"][-1].content)
        except KeyError as exc:  # the tool raised: the agent's own exception passes through unchanged
            answer = f"raised {exc!r}"
        episode = agentgym.last_episode()
        assert episode is not None
        console.print(f"[bold]{question}[/bold] -> {answer[:70]}  [dim]({episode.outcomes})[/dim]")

    # A trained policy pinned for the next call: applied to what the model receives, per call.
    runtime.policy_resolver = lambda name, session: agentgym.Policy(
        agent=name,
        version=1,
        system_prompt="Check the order status before anything else.",
        tool_descriptions={"get_order_status": "Status of an order; order_id is an integer like 1001."},
    )
    agent.invoke({"messages": [HumanMessage("Where is order 1001?")]})
    episode = agentgym.last_episode()
    assert episode is not None
    console.print(f"policy v{episode.policy_version}: {episode.outcomes}")

    for by in ("tool", "policy"):
        for row in agentgym.reliability("langchain-support", by=by):
            console.print(
                f"tool reliability by {by}: {row['agent']} {row['key']}: {row['successes']}/{row['calls']} ok "
                f"({row['reliability']:.0%})"
            )
    console.print(f"traces: {runtime.settings.store_path}")
    agentgym.shutdown()


if __name__ == "__main__":
    main()
