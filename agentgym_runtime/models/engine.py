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
(on CPU one generation uses every core anyway). The base model serves with the adapters disabled.

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
from agentgym_runtime.models.chat_format import (
    ParsedCompletion,
    ToolCallFormat,
    check_format,
    detect_format,
    end_of_turn_markers,
    parse_completion,
    render_chat,
    strip_end_of_turn,
)

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

    Example:
        >>> ChatEngine("/models/x").model_path
        '/models/x'
    """

    model_path: str
    fmt: ToolCallFormat | None = None
    max_new_tokens: int = 256
    chat_template: str | None = None
    pad_token: str | None = None
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _tokenizer: Any = field(default=None, repr=False)
    _model: Any = field(default=None, repr=False)
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
        """The tool-call format of this model (the option, else read from its template)."""
        return check_format(self.fmt) if self.fmt else detect_format(self.tokenizer)

    def prompt(self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None = None) -> str:
        """The rendered prompt of ``messages`` (OpenAI style) and ``tools``."""
        return render_chat(self.tokenizer, messages, tools, fmt=self.format())

    def _encode(self, prompt: str) -> Any:
        tokenizer = self.tokenizer
        with self._lock:  # a fast tokenizer may reset its padding state per call: not from two threads at once
            return tokenizer(prompt, return_tensors="pt", add_special_tokens=False)

    def _markers(self, stop: Sequence[str] | None) -> tuple[str, ...]:
        return (*end_of_turn_markers(self.tokenizer), *(stop or ()))

    def _options(self, max_new_tokens: int | None, temperature: float, stop: Sequence[str] | None) -> dict[str, Any]:
        tokenizer = self.tokenizer
        options: dict[str, Any] = {
            "max_new_tokens": max_new_tokens or self.max_new_tokens,
            "do_sample": temperature > 0,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "stop_strings": list(self._markers(stop)),
            "tokenizer": tokenizer,
        }
        if temperature > 0:
            options["temperature"] = temperature
        else:  # greedy: no sampling settings of the model's generation config apply (and none warn)
            options.update(temperature=None, top_p=None, top_k=None)
        return options

    def _run(
        self,
        inputs: Any,
        adapter: Path | None,
        options: dict[str, Any],
        streamer: Any = None,
    ) -> tuple[Any, str | None]:
        torch, _ = _import_torch()
        self._load()
        with self._lock:
            digest = self._activate(adapter)
            with torch.no_grad(), self._adapter_scope(digest):
                extra = {"streamer": streamer} if streamer is not None else {}
                output = self._model.generate(**inputs, **options, **extra)
        return output[0, inputs["input_ids"].shape[1] :], digest

    def _result(self, new: Any, prompt_tokens: int, stop: Sequence[str] | None, digest: str | None) -> Generation:
        text = strip_end_of_turn(self.tokenizer.decode(new, skip_special_tokens=False), self._markers(stop))
        return Generation(text, parse_completion(text, self.format()), prompt_tokens, len(new), digest)

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
        inputs = self._encode(self.prompt(messages, tools))
        new, digest = self._run(
            inputs, Path(adapter) if adapter else None, self._options(max_new_tokens, temperature, stop)
        )
        return self._result(new, int(inputs["input_ids"].shape[1]), stop, digest)

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
        inputs = self._encode(self.prompt(messages, tools))
        options = self._options(max_new_tokens, temperature, stop)
        streamer = transformers.TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=False)
        return ChatStream(self, inputs, Path(adapter) if adapter else None, options, streamer, stop)


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
        inputs: Any,
        adapter: Path | None,
        options: dict[str, Any],
        streamer: Any,
        stop: Sequence[str] | None,
    ) -> None:
        self.result: Generation | None = None
        self._pieces = self._generate(engine, inputs, adapter, options, streamer, stop)

    def __next__(self) -> str:
        return next(self._pieces)

    def _generate(
        self,
        engine: ChatEngine,
        inputs: Any,
        adapter: Path | None,
        options: dict[str, Any],
        streamer: Any,
        stop: Sequence[str] | None,
    ) -> Iterator[str]:
        outcome: list[Any] = []
        failure: list[BaseException] = []

        def run() -> None:
            try:
                outcome.append(engine._run(inputs, adapter, options, streamer))
            except BaseException as exc:  # re-raised in the caller's thread below
                failure.append(exc)
                streamer.end()

        thread = threading.Thread(target=run, name="agentgym-generate", daemon=True)
        thread.start()
        content = ContentFilter(engine.format(), engine._markers(stop))
        for piece in streamer:
            delta = content.feed(piece)
            if delta:
                yield delta
        thread.join()
        if failure:
            raise failure[0]
        new, digest = outcome[0]
        self.result = engine._result(new, int(inputs["input_ids"].shape[1]), stop, digest)
        rest = content.finish(self.result.parsed.content)
        if rest:
            yield rest


_CALL_MARKERS: dict[ToolCallFormat, tuple[str, ...]] = {"hermes": ("<tool_call>",), "mistral": ("[TOOL_CALLS]",)}
#: How a completion that is a tool call starts in the bare-JSON formats (after whitespace).
_JSON_STARTS = ("{", "[", "<|python_tag|>", "```")


class ContentFilter:
    """Turns pieces of a completion's text into pieces of its content (what is not a tool call).

    Content is let through as soon as it cannot be part of a tool call or an end-of-turn marker; the
    rest waits for :meth:`finish`, which completes it to the parsed completion's content.

    Example:
        >>> f = ContentFilter("hermes", ("<|im_end|>",))
        >>> [f.feed(p) for p in ["  Sure", ", calling <tool", "_call>{...}"]]
        ['Sure', ', calling', '']
        >>> f.finish("Sure, calling")
        ''
    """

    def __init__(self, fmt: ToolCallFormat, end_markers: Sequence[str]) -> None:
        self._fmt = fmt
        self._held = (*_CALL_MARKERS.get(fmt, ()), *(m for m in end_markers if m))
        self._text = ""
        self._sent = ""
        self._closed = False

    def _safe(self) -> str:
        text = self._text.lstrip()
        if self._fmt not in _CALL_MARKERS and any(s.startswith(text) or text.startswith(s) for s in _JSON_STARTS):
            return ""  # may be (or become) a bare JSON tool call: wait for the whole completion
        cut = len(text)
        for marker in self._held:
            found = text.find(marker)
            if found >= 0:
                cut = min(cut, found)
                self._closed = True
            else:  # hold back a tail that could be the start of the marker
                for size in range(min(len(marker) - 1, len(text)), 0, -1):
                    if text.endswith(marker[:size]):
                        cut = min(cut, len(text) - size)
                        break
        return text[:cut].rstrip()

    def feed(self, piece: str) -> str:
        """The content ``piece`` lets through (possibly none)."""
        if self._closed:
            return ""
        self._text += piece
        safe = self._safe()
        if not safe.startswith(self._sent) or len(safe) <= len(self._sent):
            return ""
        delta, self._sent = safe[len(self._sent) :], safe
        return delta

    def finish(self, content: str) -> str:
        """The rest of ``content`` (the parsed completion's) after what was let through."""
        # What was let through is always a prefix of the parsed content (text before any tool call,
        # with surrounding whitespace held back); if a tokenizer's incremental decoding ever differed,
        # the remainder still completes the parsed content.
        return content[len(self._sent) :] if content.startswith(self._sent) else ""


_SHARED: dict[str, ChatEngine] = {}
_SHARED_LOCK = threading.Lock()
