"""Episode state and the context variables that scope it.

An :class:`Episode` is one run of an agent. It is bound to a context variable
for the duration of the run, so every span, tool call and LLM call made
inside it, on any thread or task that inherits the context, is attributed to
it. Concurrent episodes never see each other's state. Counters are updated
under a per-episode lock because frameworks run tools on executor threads.

Example:
    >>> import agentgym_runtime as agentgym
    >>> agentgym.current_episode() is None
    True
"""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from agentgym_runtime.recording.policy import Policy
from agentgym_runtime.semconv import EpisodeStatus, ToolOutcome


@dataclass(slots=True)
class RequestedToolCall:
    """A tool call the model asked for, waiting to be matched with its execution.

    Attributes:
        name: Tool name as the model wrote it.
        call_id: The framework's call id, if it has one.
        arguments: Parsed arguments, or the raw text when it did not parse.
        parse_error: Why the raw arguments did not parse as a JSON object, if they did not.
        agent: The agent whose LLM call requested it.
    """

    name: str
    call_id: str | None
    arguments: Any
    parse_error: str | None = None
    agent: str | None = None

    @classmethod
    def from_raw(cls, name: str, call_id: str | None, arguments: Any, agent: str | None = None) -> RequestedToolCall:
        """Build from arguments that may still be JSON text (as most providers send them)."""
        if isinstance(arguments, str):
            try:
                parsed = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as exc:
                return cls(
                    name, call_id, arguments, f"arguments are not valid JSON: {exc.msg} at char {exc.pos}", agent
                )
            except (RecursionError, ValueError) as exc:  # nested too deep, an integer too long
                return cls(name, call_id, arguments, f"arguments cannot be parsed: {type(exc).__name__}", agent)
            if not isinstance(parsed, dict):
                return cls(
                    name, call_id, arguments, f"arguments must be a JSON object, got {type(parsed).__name__}", agent
                )
            return cls(name, call_id, parsed, None, agent)
        if arguments is None:
            return cls(name, call_id, {}, None, agent)
        if not isinstance(arguments, Mapping):
            return cls(name, call_id, arguments, f"arguments must be an object, got {type(arguments).__name__}", agent)
        return cls(name, call_id, dict(arguments), None, agent)


@dataclass(slots=True)
class _Counts:
    outcomes: Counter[ToolOutcome] = field(default_factory=Counter)
    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


class Episode:
    """One run of an agent: its identity, counters, outcome and reward.

    Obtain it from :func:`agentgym_runtime.episode`, :func:`agentgym_runtime.current_episode`
    or :func:`agentgym_runtime.last_episode`; it is created by the runtime.

    Example:
        >>> import agentgym_runtime as agentgym
        >>> with agentgym.episode(agent="demo") as ep:
        ...     ep.tool_calls
        0
    """

    def __init__(
        self,
        agent: str,
        *,
        session_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        policy: Policy | None = None,
        scenario: str | None = None,
        framework: str | None = None,
        entrypoint: str | None = None,
        episode_id: str | None = None,
    ) -> None:
        self.id = episode_id or uuid.uuid4().hex
        self.agent = agent
        self.session_id = session_id
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.policy: Policy = policy or Policy.baseline(agent)
        self.scenario = scenario
        self.framework = framework
        self.entrypoint = entrypoint
        self.started_at = time.time()
        self.ended_at: float | None = None
        self.status: EpisodeStatus | None = None
        self.error_type: str | None = None
        self.reward: float | None = None
        self.input: Any = None
        self.output: Any = None
        self.known_tools: dict[str, Mapping[str, Any] | None] = {}
        self._counts = _Counts()
        self._lock = threading.Lock()
        self._requested: list[RequestedToolCall] = []
        #: The episode's root ``invoke_agent`` span (set by the runtime; used to rename an
        #: unnamed episode once its first agent is known).
        self.root_span: Any = None
        #: The options of the first agent run inside an unnamed ``agentgym.episode()`` block.
        self.adopted_options: Any = None
        #: ``id()`` of the runtime that recorded it (``last_episode`` ignores older configurations).
        self.runtime_id: int | None = None

    @property
    def policy_version(self) -> int:
        """Version of the policy pinned when the episode started."""
        return self.policy.version

    # --- counters ---------------------------------------------------------------------
    def record_outcome(self, outcome: ToolOutcome) -> None:
        """Count one tool call's outcome."""
        with self._lock:
            self._counts.outcomes[outcome] += 1

    def record_llm_call(self, input_tokens: int | None = None, output_tokens: int | None = None) -> None:
        """Count one LLM call and its token usage."""
        with self._lock:
            self._counts.llm_calls += 1
            self._counts.input_tokens += input_tokens or 0
            self._counts.output_tokens += output_tokens or 0

    @property
    def outcomes(self) -> dict[str, int]:
        """Tool calls per outcome, e.g. ``{"ok": 3, "unknown_tool": 1}``."""
        with self._lock:
            return {str(k): v for k, v in self._counts.outcomes.items()}

    @property
    def tool_calls(self) -> int:
        """Tool calls the model requested in this episode (every attempt counts)."""
        with self._lock:
            return sum(self._counts.outcomes.values())

    @property
    def tool_failures(self) -> int:
        """Tool calls whose outcome was anything but ``ok``."""
        with self._lock:
            return sum(v for k, v in self._counts.outcomes.items() if k.is_failure)

    @property
    def tool_reliability(self) -> float | None:
        """Successful tool calls / tool calls requested; ``None`` when no tool was called."""
        with self._lock:
            total = sum(self._counts.outcomes.values())
            if not total:
                return None
            return self._counts.outcomes[ToolOutcome.OK] / total

    @property
    def llm_calls(self) -> int:
        """LLM calls made in this episode."""
        return self._counts.llm_calls

    @property
    def input_tokens(self) -> int:
        """Prompt tokens over all LLM calls."""
        return self._counts.input_tokens

    @property
    def output_tokens(self) -> int:
        """Completion tokens over all LLM calls."""
        return self._counts.output_tokens

    @property
    def duration_s(self) -> float | None:
        """Wall-clock length of the episode once it ended."""
        return None if self.ended_at is None else self.ended_at - self.started_at

    def set_reward(self, value: float) -> None:
        """Set this episode's reward (overrides the automatic one).

        Raises:
            ValueError: ``value`` is not a finite number.
        """
        reward = float(value)
        if not math.isfinite(reward):
            raise ValueError(f"reward must be a finite number, got {value!r}")
        self.reward = reward

    # --- reconciliation ---------------------------------------------------------------
    def expect_tool_calls(self, calls: list[RequestedToolCall]) -> None:
        """Register the tool calls an LLM response requested, to be matched with executions."""
        if calls:
            with self._lock:
                self._requested.extend(calls)

    def claim_tool_call(self, name: str, call_id: str | None) -> RequestedToolCall | None:
        """Match an execution with its request (by call id, else the oldest with that name)."""
        with self._lock:
            for index, request in enumerate(self._requested):
                if call_id is not None and request.call_id == call_id:
                    return self._requested.pop(index)
            if call_id is None or not any(r.call_id == call_id for r in self._requested):
                for index, request in enumerate(self._requested):
                    if request.name == name and (call_id is None or request.call_id is None):
                        return self._requested.pop(index)
        return None

    def take_unexecuted(self) -> list[RequestedToolCall]:
        """Remove and return every requested call that no execution claimed."""
        with self._lock:
            pending, self._requested = self._requested, []
        return pending

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary (what ``agentgym traces`` prints)."""
        return {
            "episode_id": self.id,
            "agent": self.agent,
            "session_id": self.session_id,
            "policy_version": self.policy_version,
            "status": str(self.status) if self.status else None,
            "tool_calls": self.tool_calls,
            "tool_failures": self.tool_failures,
            "tool_reliability": self.tool_reliability,
            "outcomes": self.outcomes,
            "llm_calls": self.llm_calls,
            "reward": self.reward,
            "duration_s": self.duration_s,
        }

    def __repr__(self) -> str:
        return (
            f"Episode(id={self.id!r}, agent={self.agent!r}, status={self.status}, tool_calls={self.tool_calls}, "
            f"tool_reliability={self.tool_reliability})"
        )


@dataclass(frozen=True, slots=True)
class AgentScope:
    """The agent acting right now inside an episode, and the policy pinned for its turn.

    Teams and crews have several agents in one episode.
    """

    name: str
    policy: Policy

    @property
    def policy_version(self) -> int:
        """The pinned policy's version."""
        return self.policy.version


current_episode_var: ContextVar[Episode | None] = ContextVar("agentgym_episode", default=None)
current_agent_var: ContextVar[AgentScope | None] = ContextVar("agentgym_agent", default=None)
last_episode_var: ContextVar[Episode | None] = ContextVar("agentgym_last_episode", default=None)


def current_policy() -> Policy | None:
    """The policy pinned for the agent running now (``None`` outside an episode).

    Inside a team or crew that is the policy of the agent whose turn it is; otherwise the
    episode's. Plain-Python agents read it to apply prompt, demonstrations and model routing
    themselves; framework adapters apply it for you.

    Example:
        >>> import agentgym_runtime as agentgym
        >>> with agentgym.episode(agent="doc"):
        ...     agentgym.current_policy().version
        0
    """
    scope = current_agent_var.get()
    if scope is not None:
        return scope.policy
    current = current_episode_var.get()
    return current.policy if current is not None else None
