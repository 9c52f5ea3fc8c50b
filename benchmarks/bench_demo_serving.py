"""The demo model served through the shared engine: batched evaluation and concurrent chat calls.

The workloads the demo runs on its model: ``evaluate_model`` on 240 held-out tasks (lock-step
episodes, completions in batches of 64) for the base model and for a LoRA adapter, and three
threads calling the LangChain chat model at once, each on its own version (base, two adapters), as
the demo's users do while a canary splits traffic. The model is a small warm start of the demo's
architecture (built once into ``benchmarks/.bench-home``); the adapters are random LoRA weights.
Reports seconds per workload (the least of ``REPEATS``) as JSON. Run it once with each codebase on
``PYTHONPATH`` (before and after a change) and compare: ``python benchmarks/bench_demo_serving.py``.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _util import machine

HOME = Path(__file__).parent / ".bench-home" / "demo-serving"
SCENARIO = "customer_support"
TASKS = 240
CALLS_PER_THREAD = 20
REPEATS = 3


def make_adapter(model: Any, where: Path, seed: int, scale: float) -> str:
    """A LoRA adapter on the attention of ``model`` with random non-zero weights."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    peft_model = get_peft_model(
        copy.deepcopy(model), LoraConfig(r=4, lora_alpha=32, target_modules=["c_attn"], fan_in_fan_out=True)
    )
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, scale)
    peft_model.save_pretrained(where)
    return str(where)


def concurrent_chat(demo: Any, adapters: list[str | None], prompt: str, tools: list[dict[str, Any]]) -> float:
    """Seconds for one thread per adapter to make ``CALLS_PER_THREAD`` chat calls, all at once."""
    from langchain_core.messages import HumanMessage

    from agentgym_runtime.demo.model.chat import TinyToolCallingChatModel

    start = threading.Barrier(len(adapters) + 1)

    def serve(adapter: str | None) -> None:
        chat = TinyToolCallingChatModel.from_demo_model(demo, adapter=adapter).bind_tools(tools)
        start.wait()
        for _ in range(CALLS_PER_THREAD):
            chat.invoke([HumanMessage(prompt)])

    threads = [threading.Thread(target=serve, args=(a,)) for a in adapters]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began


def main() -> None:
    import torch

    import agentgym_runtime
    from agentgym_runtime.demo.model.evaluate import evaluate_model
    from agentgym_runtime.demo.model.tiny import TinyModelConfig, load_or_build_demo_model
    from agentgym_runtime.scenarios import get_scenario

    torch.set_num_threads(1)  # as the demo serves
    config = TinyModelConfig(train_tasks=200, steps=200, batch_size=16)
    demo = load_or_build_demo_model(SCENARIO, HOME, 0, config=config)
    mild = make_adapter(demo.model, HOME / "adapters" / "mild", 1, 0.05)
    other = make_adapter(demo.model, HOME / "adapters" / "other", 2, 0.05)
    scenario = get_scenario(SCENARIO)
    prompt = scenario.tasks("heldout", 1, seed=3)[0].prompt
    tools = [{"type": "function", "function": {"name": t.name}} for t in scenario.tools()]
    evaluate_model(demo, SCENARIO, n=8, adapter=mild)  # warm-up: adapters loaded, code paths compiled
    concurrent_chat(demo, [None, mild, other], prompt, tools)
    seconds: dict[str, list[float]] = {"evaluate_base": [], "evaluate_adapter": [], "chat_3_threads": []}
    rewards: dict[str, float] = {}
    for _ in range(REPEATS):
        for key, adapter in (("evaluate_base", None), ("evaluate_adapter", mild)):
            began = time.perf_counter()
            result = evaluate_model(demo, SCENARIO, n=TASKS, adapter=adapter)
            seconds[key].append(time.perf_counter() - began)
            rewards[key] = result.mean_reward
        seconds["chat_3_threads"].append(concurrent_chat(demo, [None, mild, other], prompt, tools))
    report = {
        "code": str(Path(agentgym_runtime.__file__).parent.parent),
        "seconds": {k: round(min(v), 3) for k, v in seconds.items()},
        "mean_reward": {k: round(v, 4) for k, v in rewards.items()},
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "machine": machine(),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
