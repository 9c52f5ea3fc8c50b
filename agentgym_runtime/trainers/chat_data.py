"""Training data straight from the traces: one sample per recorded ``chat`` span.

Every LLM call the runtime records is a ``chat`` span holding the messages the model was sent
(``gen_ai.input.messages``, plus ``gen_ai.system_instructions`` when the framework passes the
system prompt apart), the tools it was offered (``gen_ai.tool.definitions``), and what it answered
(``gen_ai.output.messages`` and the requested tool calls). :func:`read_chat_samples` turns each
into a :class:`ChatSample` — prompt = those messages and tools exactly as recorded, target = the
assistant turn — and attaches the recorded outcome of each requested call (matched by call id,
else by name and arguments) from the episode's ``execute_tool`` spans.

:func:`render_sample` renders a sample with the model's own chat template
(:mod:`agentgym_runtime.models.chat_format`); :class:`OutcomeReward` scores a completion with the
runtime's own outcome logic: the completion is parsed in the model's tool-call format, and each
call is run in the replay :class:`~agentgym_runtime.recording.sandbox.ToolSandbox` of the recorded
episode (unknown tool, arguments failing the schema, a call whose recorded execution failed:
0; a call that runs: 1), plus the user's or scenario's reward when one is given.
:func:`guides` gives, for each sample, completions the traces show to have worked: its own target
when it succeeded, and the call the agent recovered with after a failure.

The samples come from every recorded model and policy version, so traces of one agent (say a
large API model in production) train another agent's small open model (distillation).

Example:
    >>> sample = ChatSample(episode_id="e", agent="a", messages=[{"role": "user", "content": "hi"}],
    ...                     target={"role": "assistant", "content": "hello"})
    >>> sample.successful, sample.is_tool_call
    (True, False)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from agentgym_runtime import semconv
from agentgym_runtime.recording.sandbox import ToolSandbox
from agentgym_runtime.semconv import ToolOutcome
from agentgym_runtime.trainers.dataset import RecordedToolCall, Task

if TYPE_CHECKING:
    from agentgym_runtime.models.chat_format import ToolCallFormat

ExtraReward = Callable[[Task, str], float]

logger = logging.getLogger(__name__)


class ChatSample(BaseModel):
    """One recorded LLM call: what the model saw and what it answered, with the answer's outcome.

    Attributes:
        episode_id: The episode the call belongs to.
        session_id: Its session (held-out splits never cut one).
        agent: The agent that made the call.
        policy_version: The policy version it ran under.
        model: The model that answered (``gen_ai.request.model``), e.g. the teacher's.
        messages: The messages sent, in order, as recorded (the system prompt first).
        tools: The tool definitions offered (``{name, description, parameters}``), as recorded.
        target: The assistant turn the model produced (``content`` and OpenAI-style ``tool_calls``).
        outcomes: The recorded outcome of each of ``target``'s tool calls (``None``: never executed).
        error_types: The recorded error type of each of ``target``'s tool calls (``None``: none).
        episode_status: The episode's status (an answer counts only in an ``ok`` episode...).
        episode_reward: The episode's reward (... whose reward, when it has one, is above 0).
        task: The recorded episode (its tools and calls make the replay sandbox).
    """

    model_config = ConfigDict(extra="forbid")

    episode_id: str
    session_id: str | None = None
    agent: str
    policy_version: int = 0
    model: str | None = None
    messages: list[dict[str, Any]] = Field(default_factory=list)
    tools: list[dict[str, Any]] = Field(default_factory=list)
    target: dict[str, Any] = Field(default_factory=dict)
    outcomes: list[str | None] = Field(default_factory=list)
    error_types: list[str | None] = Field(default_factory=list)
    episode_status: str = semconv.EpisodeStatus.OK.value
    episode_reward: float | None = None
    task: Task | None = None

    @property
    def is_tool_call(self) -> bool:
        """Whether the recorded answer asked for tools."""
        return bool(self.target.get("tool_calls"))

    @property
    def successful(self) -> bool:
        """Every requested call ran ok, or (an answer) the episode ended ok and was not scored 0: worth imitating."""
        if self.is_tool_call:
            return bool(self.outcomes) and all(o == ToolOutcome.OK.value for o in self.outcomes)
        rewarded = self.episode_reward is None or self.episode_reward > 0
        return self.episode_status == semconv.EpisodeStatus.OK.value and rewarded and bool(self.target.get("content"))


def _loads(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _canonical(arguments: Any) -> str:
    return json.dumps(_loads(arguments), sort_keys=True, ensure_ascii=False, default=str)


def _openai_call(call: Mapping[str, Any], index: int) -> dict[str, Any]:
    """A requested call (recorded ``{name, id, arguments}`` or OpenAI style) as an OpenAI ``tool_calls`` entry."""
    function = call.get("function") if isinstance(call.get("function"), Mapping) else call
    assert isinstance(function, Mapping)
    arguments = _loads(function.get("arguments", function.get("args")))
    return {
        "id": call.get("id") or f"call_{index}",
        "type": "function",
        "function": {"name": str(function.get("name")), "arguments": arguments if arguments is not None else {}},
    }


def _target(output: Any, requested: Any) -> dict[str, Any]:
    """The assistant turn: the last recorded output message, its tool calls from the requested ones if absent."""
    messages = output if isinstance(output, list) else [output] if isinstance(output, Mapping) else []
    last = next((m for m in reversed(messages) if isinstance(m, Mapping) and m.get("role") == "assistant"), None)
    content = last.get("content") if last is not None else (output if isinstance(output, str) else None)
    raw_calls = (last.get("tool_calls") if last is not None else None) or requested or []
    target: dict[str, Any] = {"role": "assistant", "content": content if isinstance(content, str) else ""}
    if raw_calls:
        target["tool_calls"] = [_openai_call(c, i) for i, c in enumerate(raw_calls) if isinstance(c, Mapping)]
    return target


def _messages(input_messages: Any, system: Any) -> list[dict[str, Any]]:
    messages = [dict(m) for m in (input_messages if isinstance(input_messages, list) else []) if isinstance(m, Mapping)]
    if system is not None and not (messages and messages[0].get("role") == "system"):
        # Frameworks that pass the system prompt apart (AutoGen) record it apart: the model saw it first.
        parts = system if isinstance(system, list) else [system]
        text = "\n".join(str(p.get("content", "")) if isinstance(p, Mapping) else _text(p) for p in parts)
        messages.insert(0, {"role": "system", "content": text})
    return messages


def _outcomes(
    target: Mapping[str, Any], recorded: Sequence[RecordedToolCall], used: set[int]
) -> tuple[list[str | None], list[str | None]]:
    """The recorded outcome and error type of each requested call.

    A call is matched by call id, else to the first unused recorded call with the same name and
    arguments; an unmatched one (never executed) has ``None`` for both.
    """
    outcomes: list[str | None] = []
    error_types: list[str | None] = []
    for call in target.get("tool_calls") or []:
        function, call_id = call["function"], call.get("id")
        match = next((i for i, r in enumerate(recorded) if i not in used and call_id and r.call_id == call_id), None)
        if match is None:
            wanted = (function["name"], _canonical(function["arguments"]))
            match = next(
                (i for i, r in enumerate(recorded) if i not in used and (r.name, _canonical(r.arguments)) == wanted),
                None,
            )
        if match is None:
            outcomes.append(None)
            error_types.append(None)
        else:
            used.add(match)
            outcomes.append(recorded[match].outcome)
            error_types.append(recorded[match].error_type)
    return outcomes, error_types


def read_chat_samples(snapshot_dir: str | Path, tasks: Sequence[Task]) -> list[ChatSample]:
    """One :class:`ChatSample` per recorded ``chat`` span of ``tasks``' episodes, in recorded order.

    Args:
        snapshot_dir: A snapshot (:func:`~agentgym_runtime.trainers.dataset.write_snapshot`).
        tasks: Its tasks (:func:`~agentgym_runtime.trainers.dataset.load_tasks`); spans of other
            episodes are left out, so passing the train split gives train samples only.

    Returns:
        The samples; a span without recorded messages (content capture off) gives none.

    Example:
        >>> read_chat_samples("/nonexistent", [])
        []
    """
    if not tasks:
        return []
    import duckdb

    spans_file = "'" + str(Path(snapshot_dir) / "spans.parquet").replace("'", "''") + "'"

    def attribute(name: str) -> str:
        return f"json_extract_string(attributes, '$.\"{name}\"')"

    con = duckdb.connect()
    try:
        cursor = con.execute(
            "SELECT episode_id, coalesce(response_model, request_model) AS model, "
            f"{attribute(semconv.GEN_AI_INPUT_MESSAGES)} AS input, "
            f"{attribute(semconv.GEN_AI_SYSTEM_INSTRUCTIONS)} AS system, "
            f"{attribute(semconv.GEN_AI_TOOL_DEFINITIONS)} AS tools, "
            f"{attribute(semconv.GEN_AI_OUTPUT_MESSAGES)} AS output, "
            f"{attribute(semconv.TOOL_REQUESTED_CALLS)} AS requested "
            f"FROM read_parquet({spans_file}) WHERE operation = ? ORDER BY start_unix_nano",
            [semconv.OP_CHAT],
        )
        columns = [d[0] for d in cursor.description]
        rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    finally:
        con.close()
    by_episode = {t.episode_id: t for t in tasks}
    used: dict[str, set[int]] = {}
    samples: list[ChatSample] = []
    for row in rows:
        task = by_episode.get(row["episode_id"])
        messages = _messages(_loads(row["input"]), _loads(row["system"]))
        if task is None or not messages:
            continue
        target = _target(_loads(row["output"]), _loads(row["requested"]))
        if not target.get("tool_calls") and not target["content"]:
            continue  # the call failed or its answer was not recorded: nothing to learn from
        tools = _loads(row["tools"])
        outcomes, error_types = _outcomes(target, task.tool_calls, used.setdefault(task.episode_id, set()))
        samples.append(
            ChatSample(
                episode_id=task.episode_id,
                session_id=task.session_id,
                agent=task.agent,
                policy_version=task.policy_version,
                model=row["model"],
                messages=messages,
                tools=[dict(t) for t in tools if isinstance(t, Mapping)] if isinstance(tools, list) else [],
                target=target,
                outcomes=outcomes,
                error_types=error_types,
                episode_status=task.status,
                episode_reward=task.reward,
                task=task,
            )
        )
    return samples


def render_sample(
    tokenizer: Any, sample: ChatSample, fmt: ToolCallFormat | None = None, chat_template: str | None = None
) -> tuple[str, str]:
    """``(prompt, completion)`` of ``sample`` in the model's chat template; the completion ends its turn.

    Raises:
        ChatTemplateError: The tokenizer has no chat template (or it refuses the conversation).

    Example:
        >>> prompt, completion = render_sample(tokenizer, sample)  # doctest: +SKIP
    """
    from agentgym_runtime.models.chat_format import split_prompt_completion

    return split_prompt_completion(
        tokenizer, [*sample.messages, sample.target], sample.tools, fmt=fmt, chat_template=chat_template
    )


def render_prompt(
    tokenizer: Any, sample: ChatSample, fmt: ToolCallFormat | None = None, chat_template: str | None = None
) -> str:
    """The prompt of ``sample`` alone, ending with the assistant turn's opening (for generation).

    Example:
        >>> render_prompt(tokenizer, sample)  # doctest: +SKIP
    """
    from agentgym_runtime.models.chat_format import render_chat

    return render_chat(tokenizer, sample.messages, sample.tools, fmt=fmt, chat_template=chat_template)


def target_text(tokenizer: Any, sample: ChatSample, fmt: ToolCallFormat) -> str:
    r"""The target turn as the model writes it, without the end-of-turn marker (a GRPO guide).

    Example:
        >>> target_text(tokenizer, sample, "hermes")  # doctest: +SKIP
        '<tool_call>\\n{"name": "get_order", "arguments": {"order_id": 7}}\\n</tool_call>'
    """
    from agentgym_runtime.models.chat_format import end_of_turn_markers, strip_end_of_turn

    _, completion = render_sample(tokenizer, sample, fmt)
    return strip_end_of_turn(completion, end_of_turn_markers(tokenizer)).strip()


class OutcomeReward:
    """Scores a completion for a sample's prompt with the runtime's own outcome logic.

    A completion that should call tools (the recorded answer did) scores the share of its calls
    that succeed in the episode's replay sandbox: a call to an unknown tool, arguments that fail
    the tool's schema, an unreadable call, or arguments whose recorded execution failed score 0;
    a call that runs scores 1. No call at all scores 0. Where the recorded turn answered in text,
    an answer without tool calls scores 1. ``extra(task, completion)`` (the scenario's or the
    user's reward) is added when given.

    Args:
        fmt: The model's tool-call format (see :func:`~agentgym_runtime.models.chat_format.detect_format`).
        extra: An additional reward, added to the outcome score.

    Example:
        >>> reward = OutcomeReward("hermes")
        >>> s = ChatSample(episode_id="e", agent="a", target={"role": "assistant", "content": "hi"})
        >>> reward(s, "hello"), reward(s, '<tool_call>{"name": "x", "arguments": {}}</tool_call>')
        (1.0, 0.0)
    """

    def __init__(self, fmt: ToolCallFormat, extra: ExtraReward | None = None) -> None:
        self.fmt = fmt
        self.extra = extra

    def outcomes(self, sample: ChatSample, completion: str) -> list[str]:
        """The outcome of each call ``completion`` asks for (``invalid_arguments`` for an unreadable one)."""
        from agentgym_runtime.models.chat_format import parse_completion

        parsed = parse_completion(completion, self.fmt)
        task = sample.task
        sandbox = ToolSandbox(
            tools=sample.tools or (task.tools if task else []), recorded=task.tool_calls if task else []
        )
        failed = {
            (r.name, _canonical(r.arguments))
            for r in (task.tool_calls if task else [])
            if r.outcome == ToolOutcome.TOOL_ERROR.value
        }
        results: list[str] = []
        for call in parsed.tool_calls:
            outcome = str(sandbox.call(call.name, call.arguments)["outcome"])
            if outcome == ToolOutcome.OK.value and (call.name, _canonical(call.arguments)) in failed:
                # Replaying what was recorded: these very arguments made the tool fail.
                outcome = ToolOutcome.TOOL_ERROR.value
            results.append(outcome)
        results.extend(ToolOutcome.INVALID_ARGUMENTS.value for _ in parsed.invalid_tool_calls)
        return results

    def __call__(self, sample: ChatSample, completion: str) -> float:
        """The reward of ``completion`` for ``sample``'s prompt."""
        outcomes = self.outcomes(sample, completion)
        if sample.is_tool_call:
            score = sum(o == ToolOutcome.OK.value for o in outcomes) / len(outcomes) if outcomes else 0.0
        else:
            score = 0.0 if outcomes or not completion.strip() else 1.0
        if self.extra is not None and sample.task is not None:
            score += float(self.extra(sample.task, completion))
        return score


def exact_call(sample: ChatSample, completion: str, fmt: ToolCallFormat) -> bool:
    """Whether ``completion`` asks for exactly the recorded calls of ``sample`` (names and arguments, in order).

    Stricter than :class:`OutcomeReward`, whose replay accepts any schema-valid arguments: this one
    checks the facts (the order id the user gave, say).

    Example:
        >>> s = ChatSample(episode_id="e", agent="a", target={"role": "assistant", "content": "",
        ...     "tool_calls": [{"function": {"name": "get_order", "arguments": {"order_id": 7}}}]})
        >>> exact_call(s, '<tool_call>{"name": "get_order", "arguments": {"order_id": 7}}</tool_call>', "hermes")
        True
        >>> exact_call(s, '<tool_call>{"name": "get_order", "arguments": {"order_id": 8}}</tool_call>', "hermes")
        False
    """
    from agentgym_runtime.models.chat_format import parse_completion

    wanted = [
        (c["function"]["name"], _canonical(c["function"]["arguments"])) for c in sample.target.get("tool_calls") or []
    ]
    parsed = parse_completion(completion, fmt)
    got = [(c.name, _canonical(c.arguments)) for c in parsed.tool_calls]
    return bool(wanted) and not parsed.invalid_tool_calls and got == wanted


def guides(samples: Sequence[ChatSample], texts: Sequence[str]) -> list[list[str]]:
    """Per sample, the completions the traces show to have worked for it (``texts[i]`` is sample ``i``'s target).

    A successful sample guides itself; a failed tool-call sample is guided by the next successful
    call of the same episode (the agent's recovery after the tool's error) when it asks for a tool
    the failed call also named or the call that failed named an unknown one. Samples of every
    policy version and model count.

    Example:
        >>> ok = ChatSample(episode_id="e", agent="a", target={"role": "assistant", "content": "x"})
        >>> guides([ok], ["x"])
        [['x']]
    """
    result: list[list[str]] = []
    for i, sample in enumerate(samples):
        if sample.successful:
            result.append([texts[i]])
            continue
        found: list[str] = []
        if sample.is_tool_call:
            failed_names = {c["function"]["name"] for c in sample.target["tool_calls"]}
            unknown = ToolOutcome.UNKNOWN_TOOL.value in sample.outcomes
            for j in range(i + 1, len(samples)):
                later = samples[j]
                if later.episode_id != sample.episode_id:
                    continue
                names = {c["function"]["name"] for c in later.target.get("tool_calls") or []}
                if later.successful and later.is_tool_call and (unknown or names & failed_names):
                    found.append(texts[j])
                    break
        result.append(found)
    return result


def split_samples(samples: Sequence[ChatSample], heldout: Sequence[Task]) -> tuple[list[ChatSample], list[ChatSample]]:
    """``(train, held-out)`` samples, following the tasks' session split.

    Example:
        >>> split_samples([], [])
        ([], [])
    """
    held = {t.episode_id for t in heldout}
    return [s for s in samples if s.episode_id not in held], [s for s in samples if s.episode_id in held]


class ChatJobData(BaseModel):
    """What a job that trains on the traces loads: tokenizer, tool-call format, train and held-out samples.

    Attributes:
        tokenizer: The model's tokenizer (checked: chat template and pad token).
        fmt: The tool-call format completions are parsed in.
        train: Training samples (the job's snapshot, then every ``extra_snapshots`` one).
        heldout: Held-out samples (sessions never trained on).
        tasks: Training tasks, for the counts.
        left_out: Samples left out because their recorded text spells one of the tokenizer's
            control tokens (:func:`~agentgym_runtime.models.chat_format.control_strings`): rendered,
            the text would become that token, so the sample would teach the model to end its turn
            in the middle of a call. Jobs report it as ``metrics["left_out_samples"]``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    tokenizer: Any
    fmt: str
    train: list[ChatSample]
    heldout: list[ChatSample]
    tasks: int = 0
    left_out: int = 0


def load_tokenizer(model_path: str, options: Mapping[str, Any]) -> Any:
    """The model's tokenizer, checked for what chat training needs.

    ``options["chat_template"]`` overrides the template; ``options["pad_token"]`` names a token
    to pad with (``"eos"``: the eos token) for tokenizers that ship none.

    Raises:
        ChatTemplateError: No chat template.
        PadTokenError: No pad token and no ``pad_token`` option.

    Example:
        >>> load_tokenizer("/models/qwen", {})  # doctest: +SKIP
    """
    from transformers import AutoTokenizer

    from agentgym_runtime.models.chat_format import PadTokenError, require_chat_template, require_pad_token

    tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True, **gguf_kwargs(model_path))
    if options.get("chat_template"):
        tokenizer.chat_template = str(options["chat_template"])
    require_chat_template(tokenizer)
    pad = options.get("pad_token")
    if pad:
        tokenizer.pad_token = tokenizer.eos_token if pad == "eos" else str(pad)
    try:
        require_pad_token(tokenizer)
    except PadTokenError as exc:
        raise PadTokenError(f"{exc}; or pass the job option pad_token='eos'") from None
    return tokenizer


def gguf_kwargs(model_path: str) -> dict[str, Any]:
    """``{"gguf_file": name}`` when ``model_path`` is a directory holding one GGUF file (transformers loads it).

    Example:
        >>> gguf_kwargs("/nonexistent")
        {}
    """
    path = Path(model_path)
    files = sorted(path.glob("*.gguf")) if path.is_dir() else []
    has_weights = any(path.glob("*.safetensors")) or any(path.glob("*.bin")) if path.is_dir() else False
    return {"gguf_file": files[0].name} if len(files) == 1 and not has_weights else {}


def snapshot_dirs(spec: Any) -> list[Path]:
    """The job's snapshot, then each ``extra_snapshots`` one (a relative one is inside the job's snapshot).

    Example:
        >>> from types import SimpleNamespace
        >>> spec = SimpleNamespace(snapshot_dir="/s", options={"extra_snapshots": ["teachers/big", "/other"]})
        >>> [str(p) for p in snapshot_dirs(spec)]
        ['/s', '/s/teachers/big', '/other']
    """
    root = Path(spec.snapshot_dir)
    return [root, *(root / d for d in spec.options.get("extra_snapshots") or [])]  # an absolute path stays


def load_job_data(spec: Any, *, heldout_fraction: float = 0.2) -> ChatJobData:
    """Train and held-out chat samples of a job's snapshot(s), and its checked tokenizer.

    ``spec.options``: ``model_path``; ``tool_format`` (default: detected from the tokenizer);
    ``extra_snapshots``: more snapshot directories (e.g. another agent's: a teacher's traces)
    whose samples join the training (their held-out sessions join the held-out set); a relative
    one is inside the job's snapshot (where the scheduler writes ``teachers``' episodes).

    Raises:
        TrainerUnavailable: No chat span with recorded messages in the snapshots.

    Example:
        >>> load_job_data(spec)  # doctest: +SKIP
    """
    from agentgym_runtime.models.chat_format import check_format, control_strings, detect_format
    from agentgym_runtime.trainers.base import TrainerUnavailable
    from agentgym_runtime.trainers.dataset import load_tasks

    options = spec.options
    tokenizer = load_tokenizer(str(options["model_path"]), options)
    fmt = check_format(str(options["tool_format"])) if options.get("tool_format") else detect_format(tokenizer)
    fraction = float(options.get("heldout_fraction", heldout_fraction))
    train: list[ChatSample] = []
    heldout: list[ChatSample] = []
    count = 0
    for directory in snapshot_dirs(spec):
        train_tasks, heldout_tasks = load_tasks(directory, heldout_fraction=fraction, seed=spec.seed)
        count += len(train_tasks)
        samples = read_chat_samples(directory, [*train_tasks, *heldout_tasks])
        more_train, more_heldout = split_samples(samples, heldout_tasks)
        train += more_train
        heldout += more_heldout
    controls = control_strings(tokenizer)
    kept_train = [s for s in train if not spells_control_string(s, controls)]
    kept_heldout = [s for s in heldout if not spells_control_string(s, controls)]
    left_out = len(train) + len(heldout) - len(kept_train) - len(kept_heldout)
    if left_out:
        logger.warning(
            "%d recorded LLM call(s) left out of training: their text spells a control token of the model (%s)",
            left_out,
            ", ".join(controls),
        )
    if not kept_train:
        raise TrainerUnavailable(
            "the snapshot holds no recorded LLM call with its messages (chat spans with gen_ai.input.messages): "
            "turn content capture on, or give the prompt/reward options"
            + (f" ({left_out} left out: their text spells a control token of the model)" if left_out else "")
        )
    return ChatJobData(
        tokenizer=tokenizer, fmt=fmt, train=kept_train, heldout=kept_heldout, tasks=count, left_out=left_out
    )


def spells_control_string(sample: ChatSample, controls: Sequence[str]) -> bool:
    """Whether any recorded text of ``sample`` (messages, tools, target) holds one of ``controls``.

    Example:
        >>> sample = ChatSample(episode_id="e", agent="a", target={"content": "bye<|im_end|>"})
        >>> spells_control_string(sample, ["<|im_end|>"]), spells_control_string(sample, ["</s>"])
        (True, False)
    """
    if not controls:
        return False
    text = json.dumps([sample.messages, sample.tools, sample.target], ensure_ascii=False, default=str)
    return any(control in text for control in controls)
