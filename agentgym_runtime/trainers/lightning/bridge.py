"""Snapshot tasks → Agent Lightning rollouts with spans its own adapters read.

Each recorded episode (:class:`~agentgym_runtime.trainers.dataset.Task`) becomes
one finished rollout in a ``LightningStore`` whose attempt holds OpenTelemetry
spans shaped the way Agent Lightning's adapters expect:

* ``openai.chat.completion`` (matched by ``TracerTraceToTriplet``'s default
  ``llm_call_match``) with flattened ``gen_ai.prompt.{i}.*``,
  ``gen_ai.completion.0.*``, ``gen_ai.request.model`` and
  ``gen_ai.request.functions.{i}.*`` (read by ``TraceToMessages``), plus
  ``prompt_token_ids`` / ``response_token_ids`` when a tokenizer is given;
* one child span per recorded tool call with ``tool.name``, ``tool.parameters``,
  ``tool.call.id``, ``tool.call.type`` (``TraceToMessages.get_tool_calls``);
* an ``agentlightning.annotation`` span carrying the episode's reward as
  ``agentlightning.reward.0.{name,value}`` (what ``emit_reward`` writes).

The spans come from a private OTel SDK provider: the global tracer provider is
never touched.

Example:
    >>> rollout_ids = await load_tasks_into_store(store, train, mode="train")  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agentgym_runtime.trainers.dataset import Task, load_tasks
from agentgym_runtime.trainers.lightning import import_agentlightning

agl = import_agentlightning()

#: Span name of the recorded LLM call (``TracerTraceToTriplet``'s default ``llm_call_match``).
LLM_SPAN_NAME = "openai.chat.completion"
#: Span name of the reward annotation (Agent Lightning's ``AGL_ANNOTATION``).
REWARD_SPAN_NAME = "agentlightning.annotation"

Tokenize = Callable[[str], list[int]]


def as_text(value: Any) -> str:
    """A task input/output as the text a model sees (strings unchanged, the rest as JSON).

    Example:
        >>> as_text({"q": "hi"})
        '{"q": "hi"}'
    """
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def task_prompt_messages(task: Task, system_prompt: str | None = None) -> list[dict[str, str]]:
    """The recorded conversation's opening: the system prompt (override or recorded) and the user input.

    Example:
        >>> task_prompt_messages(Task(episode_id="e", agent="a", input="hi"), "Be exact.")
        [{'role': 'system', 'content': 'Be exact.'}, {'role': 'user', 'content': 'hi'}]
    """
    messages: list[dict[str, str]] = []
    system = system_prompt if system_prompt is not None else task.system_instructions
    if system:
        messages.append({"role": "system", "content": as_text(system)})
    messages.append({"role": "user", "content": as_text(task.input)})
    return messages


def task_reward(task: Task) -> float:
    """The reward a recorded episode is trained with: its reward, else its tool reliability, else 0.

    Example:
        >>> task_reward(Task(episode_id="e", agent="a", tool_reliability=0.5))
        0.5
    """
    if task.reward is not None:
        return float(task.reward)
    if task.tool_reliability is not None:
        return float(task.tool_reliability)
    return 0.0


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}", item, out)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _flatten(f"{prefix}.{index}", item, out)
    elif value is not None:
        out[prefix] = value if isinstance(value, str | int | float | bool) else as_text(value)


def llm_span_attributes(task: Task, tokenize: Tokenize | None = None, model: str | None = None) -> dict[str, Any]:
    """Attributes of the ``openai.chat.completion`` span for a task (flattened ``gen_ai.*``).

    Example:
        >>> attrs = llm_span_attributes(Task(episode_id="e", agent="a", input="hi", output="yes"))
        >>> attrs["gen_ai.prompt.0.content"], attrs["gen_ai.completion.0.content"]
        ('hi', 'yes')
    """
    prompt = task_prompt_messages(task)
    completion = as_text(task.output) if task.output is not None else ""
    attributes: dict[str, Any] = {"gen_ai.request.model": model or task.agent, "gen_ai.response.id": task.episode_id}
    _flatten("gen_ai.prompt", prompt, attributes)
    _flatten("gen_ai.completion", [{"role": "assistant", "content": completion}], attributes)
    functions = [
        {
            "name": str(tool.get("name")),
            "description": str(tool.get("description") or ""),
            "parameters": as_text(tool.get("parameters") or {}),
        }
        for tool in task.tools
    ]
    _flatten("gen_ai.request.functions", functions, attributes)
    if tokenize is not None:
        prompt_text = "\n".join(m["content"] for m in prompt)
        attributes["prompt_token_ids"] = list(tokenize(prompt_text))
        attributes["response_token_ids"] = list(tokenize(completion))
    return attributes


def _reward_attributes(reward: float) -> dict[str, Any]:
    return {"agentlightning.reward.0.name": "primary", "agentlightning.reward.0.value": float(reward)}


def task_otel_spans(task: Task, tokenize: Tokenize | None = None, model: str | None = None) -> list[Any]:
    """Finished OTel SDK spans for one task (LLM call, its tool calls, the reward), from a private provider.

    Example:
        >>> [s.name for s in task_otel_spans(Task(episode_id="e", agent="a"))]  # doctest: +SKIP
        ['openai.chat.completion', 'agentlightning.annotation']
    """
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("agentgym_runtime.trainers.lightning")
    with tracer.start_as_current_span(
        f"agentgym.episode {task.agent}", attributes={"agentgym.episode.id": task.episode_id}
    ):
        with tracer.start_as_current_span(LLM_SPAN_NAME, attributes=llm_span_attributes(task, tokenize, model)):
            for index, call in enumerate(task.tool_calls):
                attributes: dict[str, Any] = {
                    "tool.name": call.name or "",
                    "tool.parameters": as_text(call.arguments if call.arguments is not None else {}),
                    "tool.call.id": call.call_id or f"call_{index}",
                    "tool.call.type": "function",
                    "agentgym.tool.outcome": call.outcome,
                }
                with tracer.start_as_current_span(f"execute_tool {call.name}", attributes=attributes):
                    pass
        with tracer.start_as_current_span(REWARD_SPAN_NAME, attributes=_reward_attributes(task_reward(task))):
            pass
    provider.shutdown()
    return list(exporter.get_finished_spans())


async def load_tasks_into_store(
    store: Any,
    tasks: Sequence[Task],
    *,
    mode: str = "train",
    tokenize: Tokenize | None = None,
    model: str | None = None,
) -> list[str]:
    """Write each task as a finished (``succeeded``) rollout with its spans; return the rollout ids.

    The rollout's ``input`` is the task as JSON (``Task.model_validate(rollout.input)`` restores it)
    and its metadata names the episode.

    Example:
        >>> ids = await load_tasks_into_store(store, tasks, mode="val")  # doctest: +SKIP
    """
    rollout_ids: list[str] = []
    for task in tasks:
        attempted = await store.start_rollout(
            input=task.model_dump(mode="json"), mode=mode, metadata={"episode_id": task.episode_id}
        )
        attempt_id = attempted.attempt.attempt_id
        for span in task_otel_spans(task, tokenize, model):
            await store.add_otel_span(attempted.rollout_id, attempt_id, span)
        await store.update_attempt(attempted.rollout_id, attempt_id, status="succeeded")
        rollout_ids.append(attempted.rollout_id)
    return rollout_ids


def load_snapshot_tasks(
    spec_or_dir: Any, *, heldout_fraction: float = 0.2, seed: int = 0
) -> tuple[list[Task], list[Task]]:
    """(train, held-out) tasks of a snapshot: the one place trainers read a snapshot.

    Accepts a :class:`~agentgym_runtime.trainers.base.TrainingJobSpec` (its ``snapshot_dir``,
    ``seed`` and ``options["heldout_fraction"]``) or a directory.

    Example:
        >>> load_snapshot_tasks("/nonexistent")  # doctest: +SKIP
    """
    if isinstance(spec_or_dir, str | Path):
        return load_tasks(spec_or_dir, heldout_fraction=heldout_fraction, seed=seed)
    fraction = float(spec_or_dir.options.get("heldout_fraction", heldout_fraction))
    return load_tasks(spec_or_dir.snapshot_dir, heldout_fraction=fraction, seed=spec_or_dir.seed)
