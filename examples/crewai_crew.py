"""A two-agent CrewAI crew recorded by agentgym-runtime, runnable offline.

The crew's agents use a scripted CrewAI LLM (a ``BaseLLM`` subclass) that writes the ReAct text a
real model would write, including the usual mistakes: a hallucinated tool, an argument of the
wrong type (CrewAI retries it three times), malformed ``Action Input`` and a tool that raises.
The crew is wrapped with one call to ``agentgym.train_online``; it runs unchanged, each
``kickoff`` becomes one episode, and each agent's calls are attributed to that agent. Then a
policy (new backstory and tool description) is pinned for the researcher for one more run,
applied to each LLM call without touching the agents.
Run it with ``.venv/bin/python examples/crewai_crew.py``.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

# Offline switches, before CrewAI is imported (see the project's FRAMEWORK_NOTES).
os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("CREWAI_TESTING", "true")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from crewai import Agent, Crew, Task
from crewai.llms.base_llm import BaseLLM
from crewai.tools import tool
from rich.console import Console

import agentgym_runtime as agentgym

ORDERS = {1001: "shipped", 1002: "processing"}


@tool("get_order_status")
def get_order_status(order_id: int) -> str:
    """Current status of an order."""
    if order_id not in ORDERS:
        raise KeyError(f"no order {order_id}")
    return ORDERS[order_id]


@tool("send_reply")
def send_reply(text: str) -> str:
    """Send the reply to the customer."""
    return "sent"


class ScriptedLLM(BaseLLM):
    """Writes the next ReAct step of its script; counts tokens like a real LLM would."""

    def __init__(self, script: list[str], model: str = "scripted-crew-1") -> None:
        super().__init__(model=model)
        self.script = list(script)
        self.seen_system_prompts: list[str] = []

    def call(self, messages: Any, *args: Any, **kwargs: Any) -> str:
        system = next((m["content"] for m in messages if m.get("role") == "system"), "")
        self.seen_system_prompts.append(system)
        self._track_token_usage_internal({"prompt_tokens": 100, "completion_tokens": 20})
        return self.script.pop(0)

    def supports_function_calling(self) -> bool:
        return False


def step(tool_name: str, arguments: str) -> str:
    return f"Thought: I should use {tool_name}.\nAction: {tool_name}\nAction Input: {arguments}"


def final(answer: str) -> str:
    return f"Thought: I now know the final answer\nFinal Answer: {answer}"


RESEARCHER_SCRIPTS = [
    [step("get_order_status", '{"order_id": 1001}'), final("order 1001 is shipped")],
    [
        step("cancel_order", '{"order_id": 1002}'),  # a tool that does not exist
        step("get_order_status", '{"order_id": "1002x"}'),  # wrong type: CrewAI tries it three times
        step("get_order_status", '{"order_id": 1002}'),
        final("order 1002 is processing"),
    ],
    [
        step("get_order_status", "order 999 please"),  # Action Input that is not JSON
        step("get_order_status", '{"order_id": 999}'),  # the tool raises (three attempts)
        final("unknown"),
    ],
]
WRITER_SCRIPT = [step("send_reply", '{"text": "Your order is on its way."}'), final("Your order is on its way.")]


def build_crew(researcher_script: list[str]) -> tuple[Crew, ScriptedLLM]:
    researcher_llm = ScriptedLLM(researcher_script)
    researcher = Agent(
        role="researcher",
        goal="find the facts about the customer's order",
        backstory="You look orders up.",
        llm=researcher_llm,
        tools=[get_order_status],
        verbose=False,
    )
    writer = Agent(
        role="writer",
        goal="reply to the customer",
        backstory="You write short, friendly replies.",
        llm=ScriptedLLM(WRITER_SCRIPT),
        tools=[send_reply],
        verbose=False,
    )
    tasks = [
        Task(description="Find the status of the order in: {question}", expected_output="status", agent=researcher),
        Task(description="Reply to the customer.", expected_output="the reply", agent=writer),
    ]
    return Crew(name="support-crew", agents=[researcher, writer], tasks=tasks, verbose=False), researcher_llm


def main() -> None:
    home = tempfile.mkdtemp(prefix="agentgym-crewai-")
    runtime = agentgym.configure(home=home)
    console = Console(width=140)
    for question, script in zip(["Where is 1001?", "Where is 1002?", "Where is 999?"], RESEARCHER_SCRIPTS, strict=True):
        crew, _ = build_crew(script)
        support = agentgym.train_online(crew, name="support-crew")
        result = support.kickoff(inputs={"question": question})
        episode = agentgym.last_episode()
        assert episode is not None
        console.print(f"{question!r} -> {result.raw!r}: outcomes {episode.outcomes}")

    # A trained policy for the researcher: served for its LLM calls only, the agent is unchanged.
    improved = agentgym.Policy(
        agent="researcher",
        version=1,
        system_prompt="You look orders up. Order ids are integers: pass them as numbers.",
        tool_descriptions={"get_order_status": "Current status of an order; order_id is an integer."},
    )
    baseline = agentgym.Policy.baseline
    runtime.policy_resolver = lambda agent, session_id: improved if agent == "researcher" else baseline(agent)
    crew, researcher_llm = build_crew([step("get_order_status", '{"order_id": 1002}'), final("processing")])
    agentgym.train_online(crew, name="support-crew").kickoff(inputs={"question": "Where is 1002?"})
    assert "pass them as numbers" in researcher_llm.seen_system_prompts[0]
    console.print(
        "policy v1 reached the researcher's LLM calls:", "pass them as numbers" in researcher_llm.seen_system_prompts[0]
    )

    for by in ("tool", "policy"):
        for row in agentgym.reliability(by=by):
            console.print(
                f"tool reliability by {by}: {row['agent']} {row['key']}: {row['successes']}/{row['calls']} ok "
                f"({row['reliability']:.0%})"
            )
    agentgym.shutdown()


if __name__ == "__main__":
    main()
