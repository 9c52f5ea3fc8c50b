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

import json
import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from agentgym_runtime.collectors.pricing import DEFAULT_PRICES, check_prices

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
        canary_evaluate_every: The gate judges a canary every this many canary episodes, each
            judgement one look of its group-sequential test; it promotes or rolls back by itself
            (``None``: only ``agentgym policies evaluate`` judges).
        canary_min_tool_calls: Tool calls each arm (canary and live) needs before the gate tests
            reliability; until then every judgement holds and says how many are missing. The
            sequence of looks ends (promote or roll back for good) at 4x this many canary calls.
        canary_max_wait_s: How long a canary may stay undecided; a judgement after that rolls
            it back, giving the reason it was held (``None``: wait forever).
        canary_promotion: What the gate needs to promote a canary: ``"superiority"`` (live
            traffic shows it better) or ``"non_inferiority"`` (not worse by ``canary_margin``;
            for candidates the offline gate measured better, see :mod:`agentgym_runtime.policy.gate`).
        canary_margin: With ``canary_promotion="non_inferiority"``, how much lower tool
            reliability (absolute: 0.02 is two points) still counts as not worse.
        canary_undecided: What the gate's final look (at 4x ``canary_min_tool_calls`` canary
            calls) does with a canary that showed neither what ``canary_promotion`` asks nor a
            regression: ``"rollback"``, or ``"promote"`` (a canary that served its planned traffic
            without a regression goes on; see :mod:`agentgym_runtime.policy.gate`).
            ``canary_max_wait_s`` still rolls back a canary that never reached that look.
        handle_sigterm: When the host has no SIGTERM handler of its own, turn SIGTERM into a
            normal exit (``SystemExit(143)``), so what was recorded is flushed like at any exit
            (see ``SECURITY.md``); a handler the host installed is never replaced.
        backend, backend_order, ssh_*, ray_*, runpod_*, lambda_*, budget_*: where training jobs run
            (see :mod:`agentgym_runtime.trainers.backends.select`; API keys and passphrases come
            from the environment or a keyring, never from these settings).
        collector_endpoint: An ``agentgym collect`` (or any OTLP/HTTP collector owning the store) to
            send spans to, e.g. ``http://collector:4318``; unacknowledged batches wait in
            ``<home>/spool``. Unset: the processes sharing the home elect the store's owner.
        collector_token: Bearer token sent to (and required by) the collector.
        share_home: Let the processes that share a file store elect one owner that serves OTLP
            to the others (needs the ``collector`` extra); off: this process writes the file itself.
        token_prices: USD per million (input, output) tokens by model name or ``fnmatch`` pattern,
            ``"*"`` for the rest: what reports and the demo bill an episode at (see
            :mod:`agentgym_runtime.collectors.pricing`).
        inference_server_url: Base URL of the user's vLLM or SGLang server (e.g. ``http://vllm:8000``).
            Set: a version with a LoRA adapter is loaded into it (its LoRA-loading endpoints) before any
            call is routed to it, and the policy's ``llm.model`` becomes the adapter's model name there
            (see :mod:`agentgym_runtime.policy.inference_server`; needs the ``inference`` extra).
        inference_server_kind: ``vllm`` (``/v1/load_lora_adapter``; start it with ``--enable-lora`` and
            ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``) or ``sglang`` (``/load_lora_adapter``).
        inference_server_model: The base model the server serves (its served model name); adapters
            trained on another base model are refused at registration.
        inference_server_adapter_root: Where the server sees ``<home>/policies`` (a shared filesystem
            mounted elsewhere on the server); unset: the same path as here.
        inference_server_api_key_env: The environment variable holding the server's API key (sent as
            a bearer token; the key itself is never a setting).
        inference_server_timeout_s: Timeout of one request to the server (loading an adapter included).
        inference_server_retries: Retries of a request that got no answer or a 5xx (never of a 4xx).
        journal: The owner of a shared home appends each span's row to ``<home>/journal/`` as the
            span ends, so a SIGKILL cannot lose what it recorded; the next owner replays it.
        journal_max_mb: Bound of one process's journal; spans past it are not journaled (counted).
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
    canary_evaluate_every: int | None = Field(default=20, ge=1)
    canary_min_tool_calls: int = Field(default=200, ge=1)
    canary_max_wait_s: float | None = Field(default=86_400.0, gt=0)
    canary_promotion: Literal["superiority", "non_inferiority"] = "superiority"
    canary_margin: float = Field(default=0.02, ge=0.0, lt=0.5)
    canary_undecided: Literal["rollback", "promote"] = "rollback"
    handle_sigterm: bool = True
    # --- training backends (where jobs run; secrets are never settings) ---
    backend: str | None = None
    backend_order: Annotated[list[str], NoDecode] = Field(default_factory=list)
    ssh_host: str | None = None
    ssh_port: int = Field(default=22, ge=1, le=65535)
    ssh_user: str | None = None
    ssh_key_path: str | None = None
    ssh_known_hosts: str = "~/.ssh/known_hosts"
    ssh_python: str | None = None
    ssh_python_from_lock: str | None = None
    ssh_workdir: str = "~/.agentgym/jobs"
    ray_address: str | None = None
    ray_num_gpus: float = Field(default=1.0, ge=0.0)
    ray_python: str = "python"
    ray_pip: Annotated[list[str], NoDecode] = Field(default_factory=list)
    runpod_api_url: str = "https://api.runpod.io"
    runpod_gpu_type: str = "NVIDIA A40"
    runpod_image: str = "runpod/pytorch:2.8.0-py3.11-cuda12.8.1"
    runpod_disk_gb: int = Field(default=40, ge=1)
    runpod_max_hourly_usd: float = Field(default=1.0, gt=0.0)
    lambda_api_url: str = "https://cloud.lambdalabs.com"
    lambda_instance_type: str = "gpu_1x_a10"
    lambda_region: str = "us-east-1"
    lambda_ssh_key_name: str | None = None
    lambda_max_hourly_usd: float = Field(default=1.5, gt=0.0)
    cloud_python: str = "python3"
    budget_per_run_usd: float | None = Field(default=None, ge=0.0)
    budget_per_day_usd: float | None = Field(default=None, ge=0.0)

    @field_validator("backend_order", "ray_pip", mode="before")
    @classmethod
    def _parse_name_list(cls, value: Any) -> Any:
        if isinstance(value, str):  # environment form: a,b,c (or a JSON list)
            text = value.strip()
            return json.loads(text) if text.startswith("[") else [p.strip() for p in text.split(",") if p.strip()]
        return value

    collector_endpoint: str | None = None
    collector_token: str | None = None
    journal: bool = True
    journal_max_mb: int = Field(default=64, ge=1)
    share_home: bool = True
    token_prices: Annotated[dict[str, tuple[float, float]], NoDecode] = Field(
        default_factory=lambda: dict(DEFAULT_PRICES)
    )

    @field_validator("token_prices", mode="before")
    @classmethod
    def _check_prices(cls, value: Any) -> Any:
        if isinstance(value, str):  # environment form: JSON {"model or pattern": [input, output]}
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise ValueError(f'token_prices must be JSON like {{"*": [0.15, 0.6]}}: {exc}') from None
        if not isinstance(value, Mapping):
            raise ValueError(f"token_prices must map model names to [input, output], got {type(value).__name__}")
        return check_prices(value)

    # --- the user's inference server, serving trained LoRA adapters (secrets are never settings) ---
    inference_server_url: str | None = None
    inference_server_kind: Literal["vllm", "sglang"] = "vllm"
    inference_server_model: str | None = None
    inference_server_adapter_root: str | None = None
    inference_server_api_key_env: str | None = "VLLM_API_KEY"
    inference_server_timeout_s: float = Field(default=30.0, gt=0)
    inference_server_retries: int = Field(default=2, ge=0, le=10)

    @field_validator("inference_server_url")
    @classmethod
    def _check_server_url(cls, value: str | None) -> str | None:
        if value is not None and not value.strip().lower().startswith(("http://", "https://")):
            raise ValueError(f"inference server URL {value!r} must start with http:// or https://")
        return value

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
            # Environment form: comma-separated patterns (checked below like a list).
            value = [part.strip() for part in value.split(",") if part.strip()]
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


_config_logger = logging.getLogger("agentgym_runtime")
_reported_environment_errors: set[str] = set()


def describe_settings_error(exc: Exception) -> str:
    """One line naming each invalid setting of a pydantic ``ValidationError`` (or the error itself).

    Example:
        >>> from pydantic import ValidationError
        >>> try:
        ...     Settings(max_queue_size="abc")
        ... except ValidationError as exc:
        ...     print(describe_settings_error(exc))
        max_queue_size (AGENTGYM_MAX_QUEUE_SIZE): Input should be a valid integer, unable to parse string as an integer
    """
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return f"{type(exc).__name__}: {exc}"
    parts = []
    for error in errors(include_url=False):
        loc = ".".join(str(p) for p in error.get("loc", ()) if not isinstance(p, int))
        name = loc.split(".")[0] if loc else ""
        label = f"{loc} (AGENTGYM_{name.upper()})" if name else "settings"
        parts.append(f"{label}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


def settings_from_environment() -> Settings:
    """Settings from ``AGENTGYM_*``; when they are invalid, recording is switched off instead.

    A bad environment (``AGENTGYM_MAX_QUEUE_SIZE=abc``, an empty ``AGENTGYM_HOME``, a
    redaction pattern that does not compile) must never make the host's agent calls raise:
    the runtime then records nothing, and says why once in the log. :func:`configure`, by
    contrast, raises :class:`~agentgym_runtime.errors.ConfigurationError` naming the setting.

    Example:
        >>> import os
        >>> os.environ["AGENTGYM_ENABLED"] = "maybe"
        >>> settings_from_environment().enabled
        False
        >>> del os.environ["AGENTGYM_ENABLED"]
    """
    from pydantic import ValidationError

    try:
        return Settings()
    except (ValidationError, ValueError, TypeError) as exc:
        reason = describe_settings_error(exc)
        if reason not in _reported_environment_errors:
            _reported_environment_errors.add(reason)
            _config_logger.error(
                "agentgym: invalid AGENTGYM_* environment, recording is off (the agent is not affected): %s",
                reason,
            )
        # ``model_construct`` skips validation and the environment: the defaults, switched off,
        # in memory (an invalid home must not be created or written).
        return Settings.model_construct(enabled=False, store=":memory:")
