"""Settings: one pydantic-settings model, readable from ``AGENTGYM_*`` variables.

Every knob of the runtime lives here, with its default and its environment
variable (the field name upper-cased behind ``AGENTGYM_``). ``configure()``
builds a :class:`Settings` from its keyword arguments on top of the
environment, so code, environment and defaults compose in that order.

Example:
    >>> import os
    >>> os.environ["AGENTGYM_SERVICE_NAME"] = "support-api"
    >>> Settings().service_name
    'support-api'
    >>> del os.environ["AGENTGYM_SERVICE_NAME"]
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Keys whose values are never stored (matched case-insensitively, anywhere in the key).
DEFAULT_SECRET_KEY_PATTERN = (
    r"api[-_]?key|authorization|auth[-_]?token|access[-_]?token|refresh[-_]?token|"
    r"\btoken\b|_token$|^token|password|passwd|secret|credential|cookie|x-api-key"
)

Redactor = Callable[[str, Any], Any]
"""A user hook ``(key, value) -> value`` applied to every mapping entry before it is stored."""


class Settings(BaseSettings):
    """Runtime settings.

    Attributes:
        home: Directory holding ``traces.duckdb``, ``policies/`` and status files.
        store: Trace store location: a path to a DuckDB file, or ``:memory:``.
            Defaults to ``<home>/traces.duckdb``.
        service_name: ``service.name`` of the OpenTelemetry resource we install.
        capture_content: Record messages, tool arguments and results (else only metadata).
        redact: Extra key patterns (regular expressions) whose values are never stored,
            on top of the built-in secret patterns; or a callable ``(key, value) -> value``.
        max_attribute_bytes: Upper bound of one recorded value once serialized.
        enabled: Master switch; when off, decorated agents run untouched and nothing is recorded.
        max_queue_size: Spans buffered between the agent's threads and the store writer.
        max_export_batch_size: Spans written per DuckDB transaction.
        schedule_delay_ms: Longest time a span waits before the writer picks it up.
        max_pending_rows: Rows kept in memory while the store is unwritable; older rows beyond
            this are dropped and counted.
        install_global_provider: Install our TracerProvider globally when the host has none
            (needed to see spans other libraries emit through the global provider).
        auto_instrument: When an episode starts, instrument the adapters of the agent frameworks
            already imported, so decorated functions that run framework agents are captured.
        strict: Raise internal errors instead of logging them (for tests, never production).
        collector_endpoint: An ``agentgym collect`` (or any OTLP/HTTP collector owning the store) to
            send spans to, e.g. ``http://collector:4318``; unacknowledged batches wait in
            ``<home>/spool``. Unset: the processes sharing the home elect the store's owner.
        collector_token: Bearer token sent to (and required by) the collector.
        share_home: Let the processes that share a file store elect one owner that serves OTLP
            to the others (needs the ``collector`` extra); off: this process writes the file itself.
    """

    model_config = SettingsConfigDict(
        env_prefix="AGENTGYM_",
        extra="forbid",
        validate_assignment=True,
        arbitrary_types_allowed=True,
    )

    home: Path = Field(default_factory=lambda: Path.cwd() / ".agentgym")
    store: str | None = None
    service_name: str = "agentgym-agent"
    capture_content: bool = True
    redact: list[str] | Redactor | None = None
    max_attribute_bytes: int = Field(default=16_384, ge=64, le=16 * 1024 * 1024)
    enabled: bool = True
    max_queue_size: int = Field(default=131_072, ge=1)
    max_export_batch_size: int = Field(default=4096, ge=1)
    schedule_delay_ms: int = Field(default=500, ge=1)
    export_timeout_ms: int = Field(default=30_000, ge=1)
    max_pending_rows: int = Field(default=262_144, ge=0)
    reopen_backoff_s: float = Field(default=1.0, ge=0.0)
    install_global_provider: bool = True
    auto_instrument: bool = True
    strict: bool = False
    collector_endpoint: str | None = None
    collector_token: str | None = None
    share_home: bool = True

    @field_validator("home", mode="before")
    @classmethod
    def _expand_home(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not value.strip():
                raise ValueError("home must not be empty")
            return Path(value).expanduser()
        return value

    @field_validator("redact", mode="before")
    @classmethod
    def _parse_redact(cls, value: Any) -> Any:
        if isinstance(value, str):
            # Environment form: comma-separated patterns.
            return [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            for pattern in value:
                try:
                    re.compile(pattern)
                except (re.error, TypeError) as exc:
                    raise ValueError(f"redact pattern {pattern!r} is not a valid regular expression: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _check_batch(self) -> Settings:
        if self.max_export_batch_size > self.max_queue_size:
            raise ValueError(
                f"max_export_batch_size ({self.max_export_batch_size}) must not exceed "
                f"max_queue_size ({self.max_queue_size})"
            )
        return self

    @property
    def store_path(self) -> str:
        """The DuckDB database to write: ``store`` if set, else ``<home>/traces.duckdb``."""
        if self.store:
            return self.store
        return str(self.home / "traces.duckdb")

    @property
    def policies_dir(self) -> Path:
        """Where policy artifacts live (``<home>/policies``)."""
        return self.home / "policies"

    @property
    def status_path(self) -> Path:
        """Where the running process publishes its counters for ``agentgym status``."""
        return self.home / "status.json"

    def secret_pattern(self) -> re.Pattern[str]:
        """The compiled key pattern whose values are replaced by ``[REDACTED]``."""
        extra = self.redact if isinstance(self.redact, list) else []
        return re.compile("|".join([DEFAULT_SECRET_KEY_PATTERN, *extra]), re.IGNORECASE)

    def redactor(self) -> Redactor | None:
        """The user's redaction callable, if ``redact`` is one."""
        return self.redact if callable(self.redact) else None
