"""Turn arbitrary Python values into bounded, readable, secret-free JSON text.

Whatever an agent passes around (cyclic structures, bytes, pydantic models,
megabyte strings, objects with a hostile ``__repr__``) must be recordable
without ever failing the agent's call. :func:`to_json` walks the value once,
redacts secrets by key, replaces what JSON cannot hold with a short readable
marker, and caps the result at ``max_bytes``.

Example:
    >>> from agentgym_runtime.recording.serialization import Serializer
    >>> s = Serializer(max_bytes=200)
    >>> s.to_json({"query": "refund", "api_key": "sk-live-123"})
    '{"query":"refund","api_key":"[REDACTED]"}'
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import json
import math
import re
from collections.abc import Mapping
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import PurePath
from typing import Any
from uuid import UUID

from agentgym_runtime.config import DEFAULT_SECRET_KEY_PATTERN, Redactor

REDACTED = "[REDACTED]"
#: Values that look like credentials whatever key they sit under.
_SECRET_VALUE = re.compile(
    r"(?i)\b(?:bearer|basic)\s+[a-z0-9._~+/=-]{8,}|\bsk-[a-z0-9_-]{16,}|\bxox[abpr]-[a-z0-9-]{10,}"
    r"|(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"  # user:password@ in URLs
)
#: ``api_key=...``, ``password: ...``, ``"token": "..."`` in free text, raw JSON and URL queries:
#: the key (group 1) and an opening quote (group 2) stay, the value goes.
_SECRET_ASSIGNMENT = re.compile(
    r"(?i)(\b(?:api[-_]?key|apikey|x-api-key|authorization|auth[-_]?token|access[-_]?token|refresh[-_]?token"
    r"|token|password|passwd|pwd|secret|client[-_]?secret|credentials?|cookie)[\"']?(?:\s*[:=]\s*|\s+is\s+))"
    r"([\"']?)(?!\[REDACTED\])(?:bearer\s+|basic\s+)?[^\s\"',;&}]+"
)
#: Cheap substrings that must occur for either pattern to match (checked before the regexes).
_SECRET_HINTS = ("earer", "EARER", "asic", "ASIC", "sk-", "xox", "://", "=", ":", " is ")
_SURROGATE = re.compile("[\ud800-\udfff]")
_SCALARS = frozenset({int, float, bool, type(None)})
_MAX_DEPTH = 32
_MAX_ITEMS = 1000
_MAX_STRING_CHARS = 65_536
# One encoder for the hot path: ``json.dumps`` with keyword arguments builds a new
# JSONEncoder on every call, which cost more than encoding a small payload.
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_ENCODE_STRICT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def _not_flat(value: Any) -> Any:
    raise TypeError(f"not a flat JSON value: {type(value).__name__}")


# The C encoder behind ``JSONEncoder.encode``, made once: ``encode`` builds it on every call
# (~0.8 µs). Without circular-reference markers it keeps no state between calls, so one
# instance serves every thread; it only ever sees the flat values ``_fast_json`` admits.
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_flat_chunks: Any = None
if _c_make_encoder is not None:
    _flat_chunks = _c_make_encoder(None, _not_flat, json.encoder.encode_basestring, None, ":", ",", False, False, True)


def _encode_flat(value: Any) -> str:
    if _flat_chunks is None:  # pragma: no cover - CPython always has the C encoder
        return _ENCODE(value)
    return "".join(_flat_chunks(value, 0))


class Serializer:
    r"""Serialize values for span attributes under the runtime's limits.

    Args:
        max_bytes: Upper bound of the UTF-8 encoded result; longer text is cut and marked.
        secret_key_pattern: Mapping keys whose values are replaced by ``[REDACTED]``.
        redactor: Optional user hook ``(key, value) -> value`` applied to every mapping entry.

    Example:
        >>> Serializer(max_bytes=64).to_json(b"\x00\x01")
        '"<bytes len=2 base64=AAE=>"'
    """

    __slots__ = ("_max_bytes", "_redactor", "_secret_cache", "_secret_key")

    def __init__(
        self,
        max_bytes: int = 16_384,
        secret_key_pattern: re.Pattern[str] | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self._max_bytes = max_bytes
        self._secret_key = secret_key_pattern or re.compile(DEFAULT_SECRET_KEY_PATTERN, re.IGNORECASE)
        self._redactor = redactor
        # Keys repeat endlessly (tool argument names): remember the regex verdict per key.
        self._secret_cache: dict[str, bool] = {}

    def is_secret_key(self, key: str) -> bool:
        """Whether values under ``key`` are never stored."""
        verdict = self._secret_cache.get(key)
        if verdict is None:
            verdict = self._secret_key.search(key) is not None
            if len(self._secret_cache) < 4096:
                self._secret_cache[key] = verdict
        return verdict

    @property
    def max_bytes(self) -> int:
        """The byte cap of one serialized value."""
        return self._max_bytes

    def to_json(self, value: Any) -> str:
        """Return ``value`` as compact JSON text, redacted and bounded.

        Never raises: a value that cannot be walked at all is recorded as a marker.
        """
        try:
            fast = self._fast_json(value)  # inside the try: an int too long to print must not raise
            if fast is not None:
                return fast
            text = _ENCODE_STRICT(self.to_plain(value))
        except Exception as exc:  # a hostile __repr__/__iter__ must not break the host's call
            text = json.dumps(f"<unserializable {type(value).__name__}: {type(exc).__name__}>")
        return self.truncate(text)

    def _fast_json(self, value: Any) -> str | None:
        """JSON of a scalar or a flat dict of scalars with no secret keys, else ``None``.

        The common case on the hot path (tool arguments and results); skips the generic walk.
        """
        kind = type(value)
        if kind is int:
            return self.truncate(int.__repr__(value))  # what json writes for an int, minus the encoder call
        if kind is str:
            if len(value) > 1024 or self.redact_text(value) is not value:
                return None
        elif kind is dict:
            if self._redactor is not None or len(value) > 32:
                return None
            for key, item in value.items():
                item_kind = type(item)
                if type(key) is not str or self.is_secret_key(key):
                    return None
                if item_kind is str:
                    if len(item) > 1024 or self.redact_text(item) is not item:
                        return None
                elif item_kind not in _SCALARS or (item_kind is float and not math.isfinite(item)):
                    return None
        elif value is None:
            return "null"
        elif kind not in _SCALARS or (kind is float and not math.isfinite(value)):
            return None
        return self.truncate(_encode_flat(value))

    def truncate(self, text: str) -> str:
        """Cut ``text`` to ``max_bytes`` of UTF-8, marking how much was left out.

        Lone UTF-16 surrogates (which no UTF-8 store can hold) are replaced by U+FFFD, the
        Unicode replacement character, which marks the spot; one such string must never make
        its batch unwritable.
        """
        if not text.isascii():
            text = scrub_surrogates(text)
        # Fast path: a str of n chars is at most 4n bytes.
        if len(text) * 4 <= self._max_bytes:
            return text
        encoded = text.encode("utf-8")
        if len(encoded) <= self._max_bytes:
            return text
        marker = f"…[truncated {len(encoded) - self._max_bytes} bytes]"
        keep = max(0, self._max_bytes - len(marker.encode("utf-8")))
        return encoded[:keep].decode("utf-8", errors="ignore") + marker

    def redact_text(self, text: str) -> str:
        """Mask credential-looking substrings in free text.

        Bearer/Basic credentials, ``sk-`` and Slack keys, ``user:password@`` in URLs, and the
        value of ``api_key=...``, ``password: ...`` or ``"token": "..."`` (raw JSON included).
        Returns ``text`` itself when nothing matched.
        """
        return redact_text(text)

    def text(self, value: object) -> str:
        """Free text (an error message, a label, raw arguments) as stored: redacted, scrubbed, capped.

        Never raises: an object whose ``__str__`` raises is recorded by its type.

        Example:
            >>> Serializer().text("failed: Authorization: Bearer abcdefgh12345")
            'failed: Authorization: [REDACTED]'
        """
        return self.truncate(redact_text(safe_str(value)))

    def to_plain(self, value: Any) -> Any:
        """Convert ``value`` into JSON-compatible Python data (dict/list/str/int/float/bool/None)."""
        return self._walk(value, 0, set(), None)

    def _walk(self, value: Any, depth: int, seen: set[int], key: str | None) -> Any:
        if value is None or isinstance(value, bool | int):
            return value
        if isinstance(value, str):
            if len(value) > _MAX_STRING_CHARS:
                value = value[:_MAX_STRING_CHARS] + f"…[truncated {len(value) - _MAX_STRING_CHARS} chars]"
            return scrub_surrogates(redact_text(value))
        if isinstance(value, float):
            return value if math.isfinite(value) else str(value)
        if depth >= _MAX_DEPTH:
            return f"<max depth {_MAX_DEPTH} reached: {type(value).__name__}>"
        if isinstance(value, bytes | bytearray | memoryview):
            raw = bytes(value)
            preview = base64.b64encode(raw[:48]).decode("ascii")
            return f"<bytes len={len(raw)} base64={preview}{'…' if len(raw) > 48 else ''}>"
        if isinstance(value, enum.Enum):
            return self._walk(value.value, depth + 1, seen, key)
        if isinstance(value, datetime | date | time):
            return value.isoformat()
        if isinstance(value, UUID | Decimal | PurePath):
            return str(value)
        marker = id(value)
        if marker in seen:
            return f"<cycle: {type(value).__name__}>"
        seen.add(marker)
        try:
            if isinstance(value, Mapping):
                return self._walk_mapping(value, depth, seen)
            if isinstance(value, list | tuple | set | frozenset):
                items = list(value)[:_MAX_ITEMS]
                out = [self._walk(item, depth + 1, seen, key) for item in items]
                if len(value) > _MAX_ITEMS:
                    out.append(f"<{len(value) - _MAX_ITEMS} more items>")
                return out
            dumped = _model_dump(value)
            if dumped is not None:
                return self._walk(dumped, depth + 1, seen, key)
            return _bounded_repr(value)
        finally:
            seen.discard(marker)

    def _walk_mapping(self, value: Mapping[Any, Any], depth: int, seen: set[int]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for index, (raw_key, item) in enumerate(value.items()):
            if index >= _MAX_ITEMS:
                out["<more>"] = f"{len(value) - _MAX_ITEMS} more keys"
                break
            name = scrub_surrogates(raw_key if isinstance(raw_key, str) else safe_str(raw_key))
            if self.is_secret_key(name):
                out[name] = REDACTED
                continue
            if self._redactor is not None:
                item = self._redactor(name, item)
            out[name] = self._walk(item, depth + 1, seen, name)
        return out


def scrub_surrogates(text: str) -> str:
    r"""``text`` with each lone UTF-16 surrogate replaced by U+FFFD (``text`` itself if none).

    Example:
        >>> scrub_surrogates("a\ud800b") == "a\ufffdb"
        True
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


def redact_text(text: str) -> str:
    """Mask credential-looking substrings of free text (see :meth:`Serializer.redact_text`).

    Example:
        >>> redact_text("retry with api_key=abc123 and password: hunter2")
        'retry with api_key=[REDACTED] and password: [REDACTED]'
    """
    if not any(hint in text for hint in _SECRET_HINTS):
        return text
    masked = _SECRET_VALUE.sub(REDACTED, text)
    masked = _SECRET_ASSIGNMENT.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", masked)
    return text if masked == text else masked


def safe_str(value: object) -> str:
    """``str(value)``, or a marker naming its type when its ``__str__`` raises or returns a non-str.

    Example:
        >>> class Hostile(Exception):
        ...     def __str__(self):
        ...         raise RuntimeError("no")
        >>> safe_str(Hostile())
        '<Hostile: __str__ failed>'
    """
    if type(value) is str:
        return value
    try:
        text = str(value)
    except Exception:
        return f"<{type(value).__name__}: __str__ failed>"
    return text if isinstance(text, str) else f"<{type(value).__name__}>"


_DEFAULT_SERIALIZER: Serializer | None = None


def redact(value: Any) -> Any:
    """``value`` as plain JSON data with every secret masked: the one redaction for artifacts.

    Values under secret-looking keys become ``[REDACTED]`` and free text is masked as in
    :func:`redact_text` (URLs with ``?api_key=`` or ``user:pass@`` included). Policy
    metadata and endpoint URLs go through this before they are written.

    Example:
        >>> redact({"endpoint": "https://u:pw@host/v1?api_key=k1", "token": "t"})
        {'endpoint': 'https://[REDACTED]@host/v1?api_key=[REDACTED]', 'token': '[REDACTED]'}
    """
    global _DEFAULT_SERIALIZER
    if _DEFAULT_SERIALIZER is None:
        _DEFAULT_SERIALIZER = Serializer(max_bytes=16 * 1024 * 1024)
    return _DEFAULT_SERIALIZER.to_plain(value)


def _model_dump(value: Any) -> Any | None:
    """Structured form of pydantic models, dataclasses and message-like objects, if any."""
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        try:
            return dump(mode="json")
        except Exception:
            try:
                return dump()
            except Exception:
                return None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name, None) for f in dataclasses.fields(value)}
    return None


def _bounded_repr(value: Any, limit: int = 512) -> str:
    try:
        text = repr(value)
    except Exception as exc:
        return f"<{type(value).__name__} (repr failed: {type(exc).__name__})>"
    return text if len(text) <= limit else text[:limit] + "…"
