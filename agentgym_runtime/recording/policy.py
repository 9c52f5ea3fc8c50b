"""The Policy: an immutable, versioned bundle of what can change about an agent.

A leaf data model owned by the recording core: every episode pins one (its version is
recorded on every span), the policy registry stores them, trainers produce them and the
adapters apply them. It imports nothing from the package, so every layer may use it.

Version 0 of every agent is the agent as written (nothing overridden). Later
versions come from training or from :func:`agentgym_runtime.register_policy`.
A policy is applied at the LLM-call boundary of one call at a time (see
``policy/apply.py`` and each adapter's ``apply_policy``), never by mutating
the shared agent.

Example:
    >>> p = Policy(agent="support", version=2, system_prompt="Always call get_order first.")
    >>> p.is_baseline, p.ref
    (False, 'support@v2')
    >>> Policy.baseline("support").is_baseline
    True
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ToolCallExample(BaseModel):
    """One tool call inside a demonstration."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    result: Any = None


class Demonstration(BaseModel):
    """A few-shot example: an input, the tool calls that served it well, and the answer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: Any
    tool_calls: tuple[ToolCallExample, ...] = ()
    output: Any = None


class LLMConfig(BaseModel):
    """Which model serves the agent under this policy.

    Attributes:
        endpoint: Base URL of an OpenAI-compatible endpoint (``None``: the agent's own model).
        model: Model name at that endpoint.
        sampling: Sampling parameters (temperature, top_p, max_tokens, ...).
        adapter: Path (relative to the policy artifact) of a LoRA adapter in safetensors.
        api_key_env: Environment variable holding the endpoint's key (keys are never stored).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoint: str | None = None
    model: str | None = None
    sampling: dict[str, Any] = Field(default_factory=dict)
    adapter: str | None = None
    api_key_env: str | None = None


class Policy(BaseModel):
    """One version of one agent's policy. Immutable; ``version`` 0 is the baseline.

    Attributes:
        agent: The agent's name.
        version: 0 for the agent as written, then 1, 2, ...
        system_prompt: Replaces the agent's system prompt (``None``: keep it).
        tool_descriptions: Per tool name, replaces the description the model sees.
        demonstrations: Few-shot examples inserted after the system prompt.
        llm: Route the agent's LLM calls elsewhere (``None``: keep its model).
        metadata: Free-form data.
        parent_version: The version this one was derived from.
        trainer: What produced it (``"demos"``, ``"apo"``, ``"grpo"``, ``"manual"``, ...).
        metrics: Numbers measured when it was produced (held-out reliability, ...).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent: str
    version: int = Field(ge=0)
    system_prompt: str | None = None
    tool_descriptions: dict[str, str] = Field(default_factory=dict)
    demonstrations: tuple[Demonstration, ...] = ()
    llm: LLMConfig | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    parent_version: int | None = None
    trainer: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)

    @field_validator("agent")
    @classmethod
    def _agent_name(cls, value: str) -> str:
        if not value or not value.strip() or "@" in value or "/" in value:
            raise ValueError(f"agent name {value!r} must be non-empty and contain no '@' or '/'")
        return value

    @classmethod
    def baseline(cls, agent: str) -> Policy:
        """Version 0: the agent exactly as written."""
        return cls(agent=agent, version=0)

    @property
    def ref(self) -> str:
        """``agent@vN``."""
        return f"{self.agent}@v{self.version}"

    @property
    def is_baseline(self) -> bool:
        """Whether this policy overrides nothing."""
        return (
            self.system_prompt is None and not self.tool_descriptions and not self.demonstrations and self.llm is None
        )


def resolve_adapter_path(policy: Policy, home: str | os.PathLike[str] | None = None) -> Path | None:
    """Where ``policy.llm.adapter`` lives, or ``None`` when the policy names no adapter.

    An absolute path is used as is; a relative one is resolved against
    ``policy.metadata["artifact_dir"]`` when present, else against
    ``<home>/policies/<agent>/v<version>``; without ``home``, the configured runtime's home
    (``agentgym.configure(home=...)``, whose registry stored the artifact), else the environment's.

    Example:
        >>> p = Policy(agent="a", version=1, llm=LLMConfig(adapter="lora"), metadata={"artifact_dir": "/x"})
        >>> str(resolve_adapter_path(p))
        '/x/lora'
    """
    if policy.llm is None or not policy.llm.adapter:
        return None
    path = Path(policy.llm.adapter).expanduser()
    if path.is_absolute():
        return path
    artifact_dir = policy.metadata.get("artifact_dir")
    if isinstance(artifact_dir, str) and artifact_dir:
        return Path(artifact_dir) / path
    if home is None:
        from agentgym_runtime.config import Settings
        from agentgym_runtime.recording.runtime import peek_runtime

        # A chat model built without a home (TransformersChatModel(model_path=...)) serves the
        # versions of the runtime that routes its calls: the environment's default home would be
        # another directory, and every call of a registered version failed with "no adapter".
        runtime = peek_runtime()
        home = runtime.settings.home if runtime is not None else Settings().home
    return Path(home) / "policies" / policy.agent / f"v{policy.version}" / path
