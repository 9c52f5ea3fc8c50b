"""One transformers engine per base model, serving the pinned policy version's LoRA adapter per call.

The framework chat models (:mod:`~agentgym_runtime.models.langchain`, ...) are thin wrappers over
:class:`ChatEngine`: it renders the conversation with the model's own chat template
(:func:`~agentgym_runtime.models.chat_format.render_chat`), generates greedily (unless a temperature
is given), and parses the completion into tool calls in the model family's format. The base model is
loaded once per process (:meth:`ChatEngine.shared`); each LoRA adapter is loaded once into the same
peft model under the digest of its files, so a promoted version's adapter is picked up on its first
call, a retrained adapter at the same path is a new one, and a rollback switches back without
reloading anything.

Generation holds a lock: peft's active adapter is state of the one model, so calls are serialized
(on CPU one generation uses every core anyway), and concurrent calls on different adapters each get
their own adapter's output. The base model serves with the adapters disabled.

What is particular to a model — how a conversation becomes its prompt, how its completion becomes
tool calls — is its :class:`~agentgym_runtime.models.formats.ServingFormat`: a Hugging Face chat model
gets :class:`~agentgym_runtime.models.formats.TemplateFormat` (its own chat template); a model with a
prompt format of its own (the demo's tiny model, your own fine-tune) is served with
:meth:`ChatEngine.for_model`, and :meth:`ChatEngine.complete` completes many rendered prompts in
batches (left-padded, one adapter per batch).

An adapter trained on another base model is refused with :class:`AdapterError` (its
``adapter_config.json`` names another model, or its weights do not fit this one).

Example:
    >>> from agentgym_runtime.models.engine import ChatEngine  # doctest: +SKIP
    >>> engine = ChatEngine.shared("/models/smollm2")  # doctest: +SKIP
    >>> engine.generate([{"role": "user", "content": "Where is order 7?"}], tools).parsed.tool_calls  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentgym_runtime.errors import ConfigurationError, MissingExtraError
from agentgym_runtime.models.chat_format import ParsedCompletion, ToolCallFormat, check_format, detect_format
from agentgym_runtime.models.formats import EncodedPrompt, ServingFormat, TemplateFormat

_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")
_WEIGHT_FILES = _ADAPTER_FILES[1:]


class AdapterError(ConfigurationError):
    """A LoRA adapter that cannot be served by this engine (missing, or trained on another base model).

    Example:
        >>> issubclass(AdapterError, ValueError)
        True
    """


@dataclass(frozen=True)
class Generation:
    """One completion of the engine.

    Attributes:
        text: The completion, cut at the end of the assistant's turn.
        parsed: ``text`` split into prose and tool calls.
        prompt_tokens: Tokens of the rendered prompt.
        completion_tokens: Tokens generated.
        adapter: The digest of the LoRA adapter that served the call (``None``: the base model).

    Example:
        >>> from agentgym_runtime.models.chat_format import ParsedCompletion
        >>> Generation("hi", ParsedCompletion("hi"), 3, 1).adapter is None
        True
    """

    text: str
    parsed: ParsedCompletion
    prompt_tokens: int
    completion_tokens: int
    adapter: str | None = None

    def calls(self) -> list[ReplyCall]:
        """The tool calls asked for, each with an id, as the framework models hand them on: readable first.

        A call the format carries no id for gets a fresh one (``call_`` + 12 hex digits); a call that could
        not be read keeps the text the model wrote as its arguments (frameworks report it back to the model).

        Example:
            >>> from agentgym_runtime.models.chat_format import parse_completion
            >>> text = '<tool_call>{"name": "ping", "arguments": {"n": 1}}</tool_call>'
            >>> generation = Generation(text, parse_completion(text, "hermes"), 3, 9)
            >>> [(c.name, c.arguments, c.valid) for c in generation.calls()]
            [('ping', '{"n": 1}', True)]
        """
        parsed = self.parsed
        return [
            ReplyCall(c.id or new_call_id(), c.name, json.dumps(c.arguments), c.arguments) for c in parsed.tool_calls
        ] + [ReplyCall(new_call_id(), c.name or "", c.text, None, c.error) for c in parsed.invalid_tool_calls]


def new_call_id() -> str:
    """A fresh tool-call id, in OpenAI's style.

    Example:
        >>> new_call_id().startswith("call_"), len(new_call_id())
        (True, 17)
    """
    return f"call_{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class ReplyCall:
    """One tool call of a completion, in the shape every framework chat model builds its own from.

    Attributes:
        id: The call id (the model's, else a fresh one).
        name: The tool's name (``""`` when it could not be read).
        arguments: The arguments as JSON text (for an unreadable call: the text the model wrote).
        args: The arguments as an object (``None``: the call could not be read).
        error: Why the call could not be read (``None`` for a readable one).

    Example:
        >>> ReplyCall("c1", "ping", "{}", {}).valid
        True
    """

    id: str
    name: str
    arguments: str
    args: dict[str, Any] | None
    error: str | None = None

    @property
    def valid(self) -> bool:
        """Whether the call could be read (name and JSON-object arguments)."""
        return self.args is not None


def adapter_digest(path: Path) -> str:
    """A short digest of an adapter directory's files (its cache key: a retrained adapter is a new one).

    Raises:
        AdapterError: ``path`` holds no adapter.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> _ = (d / "adapter_config.json").write_text("{}")
        >>> _ = (d / "adapter_model.safetensors").write_bytes(b"")
        >>> len(adapter_digest(d))
        16
    """
    if not (path / "adapter_config.json").is_file() or not any((path / n).is_file() for n in _WEIGHT_FILES):
        raise AdapterError(
            f"{path} holds no LoRA adapter (expected adapter_config.json and adapter_model.safetensors, "
            "as peft's save_pretrained writes them)"
        )
    digest = hashlib.sha256()
    for name in _ADAPTER_FILES:
        file = path / name
        if file.is_file():
            digest.update(name.encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def _import_torch() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise MissingExtraError("in-process chat model", "train", exc.name or "transformers") from exc
    return torch, transformers


@dataclass
class ChatEngine:
    """A chat model over transformers with per-call LoRA adapters (module docstring).

    Args:
        model_path: A local Hugging Face model directory (or one holding a single GGUF file).
        fmt: The tool-call format (default: read from the chat template).
        max_new_tokens: Default completion budget.
        chat_template: A template overriding the tokenizer's.
        pad_token: A token to pad with for tokenizers that ship none (``"eos"``: the eos token).
        name: The model's name in responses and traces (default: ``model_path``).

    Example:
        >>> ChatEngine("/models/x").model_path
        '/models/x'
    """

    model_path: str
    fmt: ToolCallFormat | None = None
    max_new_tokens: int = 256
    chat_template: str | None = None
    pad_token: str | None = None
    name: str | None = None
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _tokenizer: Any = field(default=None, repr=False)
    _model: Any = field(default=None, repr=False)
    _format: ServingFormat | None = field(default=None, repr=False)
    _digests: dict[str, str] = field(default_factory=dict, repr=False)  # path@mtime -> digest
    _loaded: set[str] = field(default_factory=set, repr=False)

    @classmethod
    def shared(cls, model_path: str | Path, **options: Any) -> ChatEngine:
        """The process's engine for this base model, created on first use.

        Raises:
            ConfigurationError: The engine exists with other options (two settings cannot share one model).

        Example:
            >>> ChatEngine.shared("/models/doc") is ChatEngine.shared("/models/doc")
            True
        """
        key = str(model_path)
        with _SHARED_LOCK:
            engine = _SHARED.get(key)
            if engine is None:
                engine = _SHARED[key] = cls(key, **options)
            elif any(getattr(engine, name) != value for name, value in options.items()):
                raise ConfigurationError(
                    f"the shared engine of {key!r} already runs with other options than {options!r}; "
                    "create a ChatEngine of your own for different settings"
                )
        return engine

    @classmethod
    def for_model(
        cls,
        model: Any,
        tokenizer: Any,
        serving_format: ServingFormat,
        *,
        model_path: str | Path,
        name: str | None = None,
        max_new_tokens: int = 256,
    ) -> ChatEngine:
        """An engine over a model already loaded, with a serving format of its own (module docstring).

        The engine wraps ``model`` in place when it loads the first adapter (peft adds the LoRA layers to
        its modules): hand it a model that nothing else runs. ``model_path`` is the base model adapters
        are checked against (an adapter's ``base_model_name_or_path``).

        Example:
            >>> fmt = MyFormat(tokenizer)  # doctest: +SKIP
            >>> engine = ChatEngine.for_model(model, tokenizer, fmt, model_path="/models/mine")  # doctest: +SKIP
            >>> engine.complete([fmt.render(messages, tools)], adapter="/adapters/v2")[0].text  # doctest: +SKIP
        """
        engine = cls(str(model_path), max_new_tokens=max_new_tokens, name=name)
        model.eval()
        engine._model, engine._tokenizer, engine._format = model, tokenizer, serving_format
        return engine

    # --- loading -----------------------------------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        """The tokenizer (loaded on first use), checked for a chat template and a pad token."""
        self._load()
        return self._tokenizer

    @property
    def model(self) -> Any:
        """The model: the base model, or a peft model holding every adapter loaded so far."""
        self._load()
        return self._model

    @property
    def serving_format(self) -> ServingFormat:
        """How this model's prompts and completions look (:class:`~.formats.TemplateFormat` unless given)."""
        self._load()
        assert self._format is not None  # set with the model
        return self._format

    @property
    def model_name(self) -> str:
        """The model's name in responses and traces."""
        return self.name or self.model_path

    def _is_loaded(self) -> bool:
        return self._model is not None

    def _load(self) -> None:
        if self._is_loaded():
            return
        with self._lock:
            if self._is_loaded():  # another thread loaded it meanwhile
                return
            torch, transformers = _import_torch()
            # One loader for training and serving: same template override, pad-token check, GGUF files.
            from agentgym_runtime.trainers.chat_data import gguf_kwargs, load_tokenizer

            options = {"chat_template": self.chat_template, "pad_token": self.pad_token}
            tokenizer = load_tokenizer(self.model_path, options)
            model = transformers.AutoModelForCausalLM.from_pretrained(
                self.model_path, local_files_only=True, dtype=torch.float32, **gguf_kwargs(self.model_path)
            )
            model.eval()
            self._format = TemplateFormat(tokenizer, check_format(self.fmt) if self.fmt else detect_format(tokenizer))
            self._tokenizer = tokenizer
            self._model = model

    def check_adapter(self, adapter: Path) -> str:
        """The digest of ``adapter`` after checking it was trained on this engine's base model.

        Raises:
            AdapterError: No adapter there, or its ``adapter_config.json`` names another base model.

        Example:
            >>> ChatEngine("/models/x").check_adapter(Path("/nonexistent"))
            Traceback (most recent call last):
            ...
            agentgym_runtime.models.engine.AdapterError: /nonexistent holds no LoRA adapter ...
        """
        from agentgym_runtime.policy.artifact import adapter_base_model, same_model

        files = [adapter / n for n in _ADAPTER_FILES if (adapter / n).is_file()]
        stamp = max((f.stat().st_mtime_ns for f in files), default=0)
        key = f"{adapter.resolve()}@{stamp}"
        digest = self._digests.get(key)
        if digest is None:
            digest = adapter_digest(adapter)
            trained_on = adapter_base_model(adapter)
            if trained_on is not None and not same_model(trained_on, self.model_path):
                raise AdapterError(
                    f"adapter {adapter} was trained on base model {trained_on!r}, not on {self.model_path!r} "
                    "that this engine serves; an adapter only works on its own base model"
                )
            self._digests[key] = digest
        return digest

    def _activate(self, adapter: Path | None) -> str | None:
        """Make ``adapter`` the active one (loading it once); its digest (``None``: the base model). Under the lock."""
        if adapter is None:
            return None
        digest = self.check_adapter(adapter)
        name = f"lora_{digest}"
        if name not in self._loaded:
            try:
                import peft
            except ImportError as exc:  # pragma: no cover - exercised only without the extra
                raise MissingExtraError("LoRA adapters", "train", "peft") from exc
            try:
                if isinstance(self._model, peft.PeftModel):
                    self._model.load_adapter(str(adapter), adapter_name=name)
                else:
                    self._model = peft.PeftModel.from_pretrained(self._model, str(adapter), adapter_name=name)
            except (RuntimeError, ValueError, KeyError) as exc:  # size mismatch, missing modules
                if isinstance(self._model, peft.PeftModel) and name in self._model.peft_config:
                    self._model.delete_adapter(name)
                raise AdapterError(
                    f"adapter {adapter} does not fit base model {self.model_path!r} (trained on another model?): "
                    f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                ) from exc
            self._model.eval()
            self._loaded.add(name)
        self._model.set_adapter(name)
        return digest

    def _adapter_scope(self, digest: str | None) -> Any:
        if digest is None and hasattr(self._model, "disable_adapter"):
            return self._model.disable_adapter()
        return contextlib.nullcontext()

    # --- generating --------------------------------------------------------------------------------------------------
    def format(self) -> ToolCallFormat:
        """The tool-call format of this chat model (the option, else read from its template).

        Raises:
            ConfigurationError: The engine serves a format of its own (:meth:`for_model`), not a template.
        """
        served = self.serving_format
        if not isinstance(served, TemplateFormat):
            raise ConfigurationError(f"{self.model_name!r} is served in a format of its own, not a chat template")
        return served.fmt

    def prompt(self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None = None) -> str:
        """The rendered prompt of ``messages`` (OpenAI style) and ``tools``."""
        return self.serving_format.render(messages, tools)

    def _encode(self, prompts: Sequence[str]) -> list[EncodedPrompt]:
        served = self.serving_format
        with self._lock:  # a fast tokenizer may reset its padding state per call: not from two threads at once
            return [served.encode(prompt) for prompt in prompts]

    def _options(self, max_new_tokens: int | None, temperature: float, stop: Sequence[str] | None) -> dict[str, Any]:
        tokenizer = self.tokenizer
        options: dict[str, Any] = {
            "max_new_tokens": max_new_tokens or self.max_new_tokens,
            "do_sample": temperature > 0,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        }
        stop_strings = self.serving_format.stop_strings(stop)
        if stop_strings:
            options.update(stop_strings=list(stop_strings), tokenizer=tokenizer)
        if temperature > 0:
            options["temperature"] = temperature
        else:  # greedy: no sampling settings of the model's generation config apply (and none warn)
            options.update(temperature=None, top_p=None, top_k=None)
        return options

    def _run(
        self,
        prompts: Sequence[EncodedPrompt],
        adapter: Path | None,
        options: dict[str, Any],
        streamer: Any = None,
    ) -> tuple[list[list[int]], str | None]:
        """The generated ids of each prompt (each cut after its eos) and the adapter's digest."""
        torch, _ = _import_torch()
        self._load()
        # Left padding: every row's completion starts at the same column.
        width = max(len(p.ids) for p in prompts)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(prompts), width), pad if pad is not None else 0, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt.ids) :] = torch.tensor(prompt.ids, dtype=torch.long)
            mask[row, width - len(prompt.ids) :] = 1
        with self._lock:
            digest = self._activate(adapter)
            with torch.no_grad(), self._adapter_scope(digest):
                extra = {"streamer": streamer} if streamer is not None else {}
                output = self._model.generate(input_ids=ids, attention_mask=mask, **options, **extra)
        eos = self.tokenizer.eos_token_id
        return [_through_eos(output[row, width:].tolist(), eos) for row in range(len(prompts))], digest

    def _result(
        self, new: list[int], prompt: EncodedPrompt, stop: Sequence[str] | None, digest: str | None
    ) -> Generation:
        served = self.serving_format
        text, completion_tokens = served.decode(new, prompt, stop)
        return Generation(text, served.parse(text), len(prompt.ids), completion_tokens, digest)

    def generate(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        *,
        adapter: Path | str | None = None,
        max_new_tokens: int | None = None,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
    ) -> Generation:
        """Complete the conversation with ``adapter`` (``None``: the base model), parsed into tool calls.

        Raises:
            ChatTemplateError: The model has no chat template, or it refused the conversation.
            PadTokenError: The tokenizer has no pad token (and no ``pad_token`` option).
            AdapterError: The adapter is missing or was trained on another base model.

        Example:
            >>> engine.generate([{"role": "user", "content": "hi"}]).text  # doctest: +SKIP
            'Hello!'
        """
        prompt = self.prompt(messages, tools)
        return self.complete(
            [prompt], adapter=adapter, max_new_tokens=max_new_tokens, temperature=temperature, stop=stop
        )[0]

    def complete(
        self,
        prompts: Sequence[str],
        *,
        adapter: Path | str | None = None,
        max_new_tokens: int | None = None,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        batch_size: int = 64,
    ) -> list[Generation]:
        """Completions of already rendered ``prompts``, ``batch_size`` at a time, with one adapter for all.

        What an offline evaluation runs: many episodes in lock step, each step's prompts in batches.

        Raises:
            AdapterError: The adapter is missing or was trained on another base model.

        Example:
            >>> [g.text for g in engine.complete([engine.prompt(m) for m in conversations])]  # doctest: +SKIP
        """
        where = Path(adapter) if adapter else None
        options = self._options(max_new_tokens, temperature, stop)
        out: list[Generation] = []
        for start in range(0, len(prompts), batch_size):
            encoded = self._encode(prompts[start : start + batch_size])
            rows, digest = self._run(encoded, where, options)
            out += [self._result(new, prompt, stop, digest) for new, prompt in zip(rows, encoded, strict=True)]
        return out

    def stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        *,
        adapter: Path | str | None = None,
        max_new_tokens: int | None = None,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
    ) -> ChatStream:
        """The completion as it is generated: iterate for pieces of its text content, then read ``result``.

        The pieces join to exactly ``result.parsed.content`` (what :meth:`generate` gives): text that
        could still turn out to be a tool call, or the start of an end-of-turn marker, is held back.

        Example:
            >>> stream = engine.stream([{"role": "user", "content": "hi"}])  # doctest: +SKIP
            >>> "".join(stream) == stream.result.parsed.content  # doctest: +SKIP
            True
        """
        _, transformers = _import_torch()
        encoded = self._encode([self.prompt(messages, tools)])[0]
        options = self._options(max_new_tokens, temperature, stop)
        streamer = transformers.TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=False)
        return ChatStream(self, encoded, Path(adapter) if adapter else None, options, streamer, stop)


def _through_eos(tokens: list[int], eos: int | None) -> list[int]:
    """``tokens`` up to and with the first eos: in a batch, a row that ended early is padded after it."""
    return tokens[: tokens.index(eos) + 1] if eos is not None and eos in tokens else tokens


def pinned_adapter(home: str | None = None) -> Path | None:
    """The LoRA adapter of the policy pinned for the running agent (``None``: none, or outside an episode).

    Relative adapter paths resolve as :func:`~agentgym_runtime.recording.policy.resolve_adapter_path`
    does (against the policy's artifact, else ``home``).

    Example:
        >>> pinned_adapter() is None
        True
    """
    from agentgym_runtime.recording.context import current_policy
    from agentgym_runtime.recording.policy import resolve_adapter_path

    policy = current_policy()
    return resolve_adapter_path(policy, home) if policy is not None else None


def serving_adapter(fixed: str | Path | None = None, home: str | None = None) -> Path | None:
    """The LoRA adapter one call of a framework chat model serves: ``fixed`` if set, else the pinned policy's.

    Read in the caller's context (the pinned policy is a context variable), before any hop to a worker thread.

    Example:
        >>> str(serving_adapter("/adapters/v3")), serving_adapter() is None
        ('/adapters/v3', True)
    """
    return Path(fixed) if fixed else pinned_adapter(home)


class ChatStream(Iterator[str]):
    """Content pieces of one completion generated on a worker thread (see :meth:`ChatEngine.stream`).

    Attributes:
        result: The whole :class:`Generation`, once the iteration is over.
    """

    def __init__(
        self,
        engine: ChatEngine,
        prompt: EncodedPrompt,
        adapter: Path | None,
        options: dict[str, Any],
        streamer: Any,
        stop: Sequence[str] | None,
    ) -> None:
        self.result: Generation | None = None
        self._pieces = self._generate(engine, prompt, adapter, options, streamer, stop)

    def __next__(self) -> str:
        return next(self._pieces)

    def _generate(
        self,
        engine: ChatEngine,
        prompt: EncodedPrompt,
        adapter: Path | None,
        options: dict[str, Any],
        streamer: Any,
        stop: Sequence[str] | None,
    ) -> Iterator[str]:
        outcome: list[Any] = []
        failure: list[BaseException] = []

        def run() -> None:
            try:
                outcome.append(engine._run([prompt], adapter, options, streamer))
            except BaseException as exc:  # re-raised in the caller's thread below
                failure.append(exc)
                streamer.end()

        thread = threading.Thread(target=run, name="agentgym-generate", daemon=True)
        thread.start()
        content = engine.serving_format.content_filter(stop)
        for piece in streamer:
            delta = content.feed(piece)
            if delta:
                yield delta
        thread.join()
        if failure:
            raise failure[0]
        rows, digest = outcome[0]
        self.result = engine._result(rows[0], prompt, stop, digest)
        rest = content.finish(self.result.parsed.content)
        if rest:
            yield rest


_SHARED: dict[str, ChatEngine] = {}
_SHARED_LOCK = threading.Lock()
