"""A user's script whose background training job is still running when the script stops.

``python exiting_app.py HOME end``: records three episodes, waits until the scheduled job runs,
prints ``training``, and returns from the script as any script ends (no ``agentgym.shutdown()``).
``python exiting_app.py HOME serve``: the same, then keeps serving until it is stopped (SIGTERM).
The job (``HangingTrainer``) would run for ten minutes.
"""

from __future__ import annotations

import sys
import time

import agentgym_runtime as agentgym
from agentgym_runtime import services


@agentgym.train_online(
    name="support",
    schedule="1s",
    min_new_episodes=1,
    gpu="cpu",
    trainer="fake",
    trainer_options={"trainer_class": "tests.trainers.fake_trainers:HangingTrainer"},
)
def support(question: str) -> str:
    return question.upper()


if __name__ == "__main__":
    agentgym.configure(home=sys.argv[1])
    for i in range(3):
        support(f"question {i}")
    agentgym.flush()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not services.current().scheduler.active_runs():
        time.sleep(0.05)
    print("training" if services.current().scheduler.active_runs() else "never trained", flush=True)
    while sys.argv[2] == "serve":
        support("still serving")
        time.sleep(0.05)
