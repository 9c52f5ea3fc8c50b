"""An AutoGen ``AssistantAgent`` recorded by agentgym-runtime, runnable offline.

The model is AutoGen's own ``ReplayChatCompletionClient``, scripted with the tool calls a real
model might make, including the usual mistakes (a hallucinated tool, an argument of the wrong
type, malformed JSON, a tool that raises). The agent is wrapped with one call to
``agentgym.train_online``; it runs unchanged and every ``run`` becomes an episode.
Run it with ``.venv/bin/python examples/autogen_agent.py``.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile

from autogen_agentchat.agents import AssistantAgent
from autogen_core import EVENT_LOGGER_NAME, FunctionCall
from autogen_core.models import CreateResult, ModelFamily, ModelInfo, RequestUsage
from autogen_ext.models.replay import ReplayChatCompletionClient
from rich.console import Console

import agentgym_runtime as agentgym

ORDERS = {1001: "shipped", 1002: "processing", 1003: "delivered"}


def get_order_status(order_id: int) -> str:
    """Current status of an order."""
    if order_id not in ORDERS:
        raise KeyError(f"no order {order_id}")
    return ORDERS[order_id]


def refund(order_id: int, amount: float) -> str:
    """Refund an amount (in euros) on an order."""
    return f"refunded {amount:.2f} EUR on order {order_id}"


# What the scripted model "decides" for each question: (tool name, raw JSON arguments).
SCRIPT: dict[str, list[tuple[str, str]]] = {
    "Where is order 1001?": [("get_order_status", '{"order_id": 1001}')],
    "Refund 20 euros on order 1002": [("refund", '{"order_id": 1002, "amount": 20}')],
    "Cancel order 1003": [("cancel_order", '{"order_id": 1003}')],  # hallucinated tool
    "Status of order ABC?": [("get_order_status", '{"order_id": "ABC"}')],  # wrong type
    "Where is 1003": [("get_order_status", '{"order_id": 1003')],  # malformed JSON
    "Where is order 999?": [("get_order_status", '{"order_id": 999}')],  # the tool raises
}

MODEL_INFO = ModelInfo(
    vision=False, function_calling=True, json_output=False, family=ModelFamily.UNKNOWN, structured_output=False
)


def scripted_client() -> ReplayChatCompletionClient:
    """One scripted model answer (a batch of tool calls) per question, in order."""
    answers = [
        CreateResult(
            finish_reason="function_calls",
            content=[FunctionCall(id=f"q{q}_c{i}", name=n, arguments=a) for i, (n, a) in enumerate(calls)],
            usage=RequestUsage(prompt_tokens=40, completion_tokens=12),
            cached=False,
        )
        for q, calls in enumerate(SCRIPT.values())
    ]
    return ReplayChatCompletionClient(answers, model_info=MODEL_INFO)


async def serve(agent: AssistantAgent, console: Console) -> None:
    for question in SCRIPT:
        result = await agent.run(task=question)
        episode = agentgym.last_episode()
        assert episode is not None
        answer = result.messages[-1].to_text().replace("\n", " | ")
        console.print(f"[bold]{question}[/bold] -> {answer[:90]}  [dim]({episode.outcomes})[/dim]")


def main() -> None:
    # The replay client warns on every call that it only counts tokens of text content.
    logging.getLogger(EVENT_LOGGER_NAME).setLevel(logging.ERROR)
    runtime = agentgym.configure(home=tempfile.mkdtemp(prefix="agentgym-example-"), service_name="autogen-example")
    console = Console(width=140)
    assistant = AssistantAgent(
        "support",
        model_client=scripted_client(),
        tools=[get_order_status, refund],
        system_message="You are a customer support agent. Use the tools.",
    )
    agent = agentgym.train_online(assistant, name="autogen-support")
    asyncio.run(serve(agent, console))
    by = "tool"
    for row in agentgym.reliability("autogen-support", by=by):
        console.print(
            f"tool reliability by {by}: {row['agent']} {row['key']}: {row['successes']}/{row['calls']} ok "
            f"({row['reliability']:.0%})"
        )
    console.print(f"traces: {runtime.settings.store_path}")
    agentgym.shutdown()


if __name__ == "__main__":
    main()
