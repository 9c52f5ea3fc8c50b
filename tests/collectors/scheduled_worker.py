"""A worker with a training schedule that records through a collector (run as a subprocess).

``python -m tests.collectors.scheduled_worker N`` records N episodes of agent ``scheduled``
and exits; the collector, not this process, runs the agent's training schedule.
"""

from __future__ import annotations

import sys

import agentgym_runtime as agentgym

TRAINER = "tests.trainers.fake_trainers:PromptTrainer"


@agentgym.tool
def get_order(order_id: int) -> str:
    """Look up an order."""
    return f"order {order_id}: shipped"


@agentgym.train_online(
    name="scheduled",
    schedule="1s",
    min_new_episodes=4,
    trainer="fake",
    gpu="cpu",
    trainer_options={"trainer_class": TRAINER},
)
def agent(order_id: int) -> str:
    return get_order(order_id=order_id)


def main(count: int) -> None:
    for n in range(count):
        agent(n)
    agentgym.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]))
