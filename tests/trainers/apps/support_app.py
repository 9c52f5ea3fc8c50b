"""A new user's agent, exactly as the README has it: a script run as ``python support_app.py HOME N``.

Plain Python, ``@agentgym.tool`` tools in a ``Toolbox``, and a scripted model that makes the
mistakes real models make (a hallucinated tool, a wrong argument type) unless the policy it is
served shows it a demonstration of the question's kind. Nothing in it knows about training.
"""

from __future__ import annotations

import sys
from typing import Any

import agentgym_runtime as agentgym

ORDERS = {1001: "shipped", 1002: "processing", 1003: "delivered", 1004: "shipped"}


@agentgym.tool
def get_order(order_id: int) -> str:
    """Current status of an order."""
    return ORDERS.get(order_id, "unknown")


@agentgym.tool
def refund(order_id: int, amount: float) -> str:
    """Refund an amount on an order."""
    return f"refunded {amount:.2f} on {order_id}"


TOOLS = agentgym.Toolbox([get_order, refund])

#: What the untrained model does on the questions it gets wrong, and what it does right.
WRONG = {"cancel": ("cancel_order", '{"order_id": 1003}'), "status": ("get_order", '{"order_id": "one"}')}
RIGHT = {"cancel": ("refund", '{"order_id": 1003, "amount": 5}'), "status": ("get_order", '{"order_id": 1001}')}


def scripted_model(question: str) -> tuple[str, str]:
    """Right on easy questions; on hard ones right only when a demonstration of the same kind is shown."""
    kind = "cancel" if "cancel" in question else "status"
    if question.startswith("easy"):
        return RIGHT[kind]
    policy = agentgym.current_policy()
    shown = [d.input for d in (policy.demonstrations if policy is not None else ())]
    if any(kind in str(example) for example in shown):
        return RIGHT[kind]
    return WRONG[kind]


@agentgym.train_online(name="my-support", trainer="demos", canary_share=0.5, schedule="1h", min_new_episodes=4)
def support(question: str) -> str:
    """Answer with the tool the model picks; a refused call is answered politely."""
    name, arguments = scripted_model(question)
    try:
        return str(TOOLS.call(name, arguments))
    except (agentgym.UnknownToolError, agentgym.ToolArgumentsError) as exc:
        return f"sorry: {exc}"


def main(home: str, rounds: int) -> dict[str, Any]:
    agentgym.configure(home=home)
    for i in range(rounds):
        for question in ("easy cancel my order", "easy status please", "hard cancel it", "hard status now"):
            support(f"{question} #{i}")
    agentgym.flush()
    policy = agentgym.current_policy()
    agentgym.shutdown()
    return {"policy": None if policy is None else policy.version}


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
