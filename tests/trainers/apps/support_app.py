"""A new user's agent, exactly as the README has it: a script run as ``python support_app.py HOME N``.

Plain Python, ``@agentgym.tool`` tools in a ``Toolbox``, and a scripted model that makes the
mistakes real models make (a hallucinated tool, a wrong argument type) unless the policy it is
served shows it a demonstration of the question's kind, whose call it then copies (few-shot
models copy their examples, good or bad). Nothing in it knows about training.

``python support_app.py HOME serve`` runs it as a service: it answers the four questions in a
loop until it is stopped (SIGTERM, as orchestrators stop services), printing one JSON line per
answered call. ``SUPPORT_SCHEDULE``, ``SUPPORT_MIN_NEW_EPISODES`` and ``SUPPORT_TRAINER_OPTIONS``
(JSON) set the training schedule and options, as a deployment's configuration would; ``SUPPORT_PAUSE_S`` the time between
calls (users do not ask a hundred questions a second).
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
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
    """Copies the call of a shown demonstration of the question's kind; else right only on easy questions."""
    kind = "cancel" if "cancel" in question else "status"
    policy = agentgym.current_policy()
    for example in policy.demonstrations if policy is not None else ():
        if kind in str(example.input) and example.tool_calls:
            call = example.tool_calls[0]
            return call.name, json.dumps(call.arguments)
    return RIGHT[kind] if question.startswith("easy") else WRONG[kind]


@agentgym.train_online(
    name="my-support",
    trainer="demos",
    canary_share=0.5,
    schedule=os.environ.get("SUPPORT_SCHEDULE", "1h"),
    min_new_episodes=int(os.environ.get("SUPPORT_MIN_NEW_EPISODES", "4")),
    trainer_options=json.loads(os.environ.get("SUPPORT_TRAINER_OPTIONS", "{}")),
)
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


def serve(home: str) -> None:
    """Answer the questions in a loop until stopped; one JSON line per answered call."""
    agentgym.configure(home=home)
    pause = float(os.environ.get("SUPPORT_PAUSE_S", "0"))
    try:
        for i in itertools.count():
            for question in ("easy cancel my order", "easy status please", "hard cancel it", "hard status now"):
                answer = support(f"{question} #{i}")
                episode = agentgym.last_episode()
                policy = episode.policy if episode is not None else None
                print(
                    json.dumps(
                        {
                            "question": question,
                            "version": None if policy is None else policy.version,
                            "demonstrations": [] if policy is None else [str(d.input) for d in policy.demonstrations],
                            "ok": not answer.startswith("sorry"),
                        }
                    ),
                    flush=True,
                )
                time.sleep(pause)
    finally:
        agentgym.shutdown()


if __name__ == "__main__":
    if sys.argv[2] == "serve":
        serve(sys.argv[1])
    else:
        main(sys.argv[1], int(sys.argv[2]))
