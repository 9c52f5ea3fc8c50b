"""Secrets never reach a policy artifact: metadata, metrics and endpoint URLs are redacted when stored.

Artifacts are files anyone with read access to the home can copy, and their metadata is mirrored
into DuckDB, so what a caller passes to :meth:`PolicyRegistry.register` is cleaned first with the
recording side's one redaction (:class:`~agentgym_runtime.recording.serialization.Serializer`:
values under secret-looking keys, bearer tokens and ``sk-`` keys in text). Endpoint URLs lose
their ``user:password@`` part and the values of secret-looking query parameters; an endpoint's
key belongs in ``LLMConfig.api_key_env`` (the name of an environment variable), never in a file.

Example:
    >>> redact_url("https://bob:hunter2@llm.example/v1?api_key=sk-123&region=eu")
    'https://[REDACTED]@llm.example/v1?api_key=[REDACTED]&region=eu'
    >>> redact_mapping({"owner": "ml-team", "api_key": "sk-live-1"})
    {'owner': 'ml-team', 'api_key': '[REDACTED]'}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from agentgym_runtime.recording.policy import LLMConfig
from agentgym_runtime.recording.serialization import REDACTED, Serializer

_SERIALIZER = Serializer(max_bytes=1 << 20)


def redact_mapping(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` as plain JSON data with secrets replaced by ``[REDACTED]``."""
    plain = _SERIALIZER.to_plain(dict(values))
    return plain if isinstance(plain, dict) else {}


def redact_url(url: str) -> str:
    """``url`` without credentials: no ``user:password@``, no values of secret query parameters."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _SERIALIZER.redact_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SERIALIZER.is_secret_key(key) for key, _ in pairs):
            query = urlencode([(k, REDACTED if _SERIALIZER.is_secret_key(k) else v) for k, v in pairs])
    return _SERIALIZER.redact_text(urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment)))


def redact_llm(llm: LLMConfig | Mapping[str, Any] | None) -> LLMConfig | dict[str, Any] | None:
    """``llm`` with its endpoint URL and sampling parameters redacted (same shape as given).

    Example:
        >>> redact_llm({"endpoint": "http://k:s@h/v1", "model": "m"})["endpoint"]
        'http://[REDACTED]@h/v1'
    """
    if llm is None:
        return None
    if isinstance(llm, LLMConfig):
        update: dict[str, Any] = {"sampling": redact_mapping(llm.sampling)}
        if llm.endpoint:
            update["endpoint"] = redact_url(llm.endpoint)
        return llm.model_copy(update=update)
    cleaned = dict(llm)
    if isinstance(cleaned.get("endpoint"), str):
        cleaned["endpoint"] = redact_url(cleaned["endpoint"])
    if isinstance(cleaned.get("sampling"), Mapping):
        cleaned["sampling"] = redact_mapping(cleaned["sampling"])
    return cleaned
