"""A plain-Python tool-calling agent recorded by agentgym-runtime, runnable offline.

The "model" is scripted: it answers each question with the tool calls a real model might make,
including the usual mistakes (a hallucinated tool, an argument of the wrong type, malformed JSON).
Run it with ``.venv/bin/python examples/plain_python_agent.py``.
"""

from __future__ import annotations

import tempfile

from rich.console import Console
from rich.table import Table

import agentgym_runtime as agentgym

ORDERS = {1001: "shipped", 1002: "processing", 1003: "delivered"}


@agentgym.tool
def get_order_status(order_id: int) -> str:
    """Current status of an order.

    Args:
        order_id: The order number.
    """
    if order_id not in ORDERS:
        raise KeyError(f"no order {order_id}")
    return ORDERS[order_id]


@agentgym.tool
def refund(order_id: int, amount: float) -> str:
    """Refund an amount on an order.

    Args:
        order_id: The order number.
        amount: Amount to refund, in euros.
    """
    return f"refunded {amount:.2f} EUR on order {order_id}"


TOOLS = agentgym.Toolbox([get_order_status, refund])

# What the scripted model "decides" for each question: (tool name, raw JSON arguments).
SCRIPT: dict[str, list[tuple[str, str]]] = {
    "Where is order 1001?": [("get_order_status", '{"order_id": 1001}')],
    "Refund 20 euros on order 1002": [("refund", '{"order_id": 1002, "amount": 20}')],
    "Cancel order 1003": [("cancel_order", '{"order_id": 1003}')],  # hallucinated tool
    "Status of order ABC?": [("get_order_status", '{"order_id": "ABC"}')],  # wrong type
    "Where is 1003": [("get_order_status", '{"order_id": 1003')],  # malformed JSON
    "Where is order 999?": [("get_order_status", '{"order_id": 999}')],  # the tool raises
}


def scripted_model(question: str) -> list[tuple[str, str, str]]:
    """Stand-in for an LLM call: records a chat span, returns ``(call_id, tool, raw JSON arguments)``."""
    calls = [(f"call_{i}", name, arguments) for i, (name, arguments) in enumerate(SCRIPT[question])]
    with agentgym.llm_call(
        model="scripted-model",
        provider="example",
        input_messages=[{"role": "user", "content": question}],
        tools=TOOLS.definitions(),
    ) as llm:
        llm.finish(
            output_messages=[{"role": "assistant", "tool_calls": [{"id": c, "name": n} for c, n, _ in calls]}],
            requested=[
                agentgym.RequestedToolCall.from_raw(name, call_id, arguments) for call_id, name, arguments in calls
            ],
            input_tokens=len(question.split()),
            output_tokens=8,
        )
    return calls


def reliability_table(agent: str) -> Table:
    """What was recorded, as a table: ``agentgym.reliability`` returns the numbers as data."""
    table = Table(title="tool reliability by tool")
    headers = ("agent", "tool", "calls", "ok", "unknown tool", "invalid args", "tool error", "error result")
    for header in (*headers, "not executed", "reliability"):
        table.add_column(header, justify="left" if header in ("agent", "tool") else "right")
    for row in agentgym.reliability(agent, by="tool"):
        counts = ("calls", "successes", "unknown_tool", "invalid_arguments", "tool_error", "error_result")
        cells = [str(row[key]) for key in (*counts, "not_executed")]
        table.add_row(row["agent"], str(row["key"]), *cells, f"{row['reliability']:.1%}")
    return table


@agentgym.train_online(name="plain-support")
def support_agent(question: str) -> str:
    """Answer a customer question by running the tool calls the scripted model picks."""
    answers: list[str] = []
    for call_id, name, arguments in scripted_model(question):
        try:
            answers.append(str(TOOLS.call(name, arguments, call_id=call_id)))
        except (agentgym.UnknownToolError, agentgym.ToolArgumentsError, KeyError) as exc:
            answers.append(f"sorry: {exc}")
    return "; ".join(answers)


def main() -> None:
    runtime = agentgym.configure(home=tempfile.mkdtemp(prefix="agentgym-example-"), service_name="plain-example")
    console = Console(width=140)
    for question in SCRIPT:
        answer = support_agent(question)
        episode = agentgym.last_episode()
        assert episode is not None
        console.print(f"[bold]{question}[/bold] -> {answer}  [dim]({episode.outcomes})[/dim]")
    console.print(reliability_table("plain-support"))
    console.print(f"traces: {runtime.settings.store_path}")
    agentgym.shutdown()


if __name__ == "__main__":
    main()
