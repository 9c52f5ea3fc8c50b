"""Move a trained policy onto a fresh agent of any framework.

:func:`agentgym_runtime.load_policy` returns a :class:`TrainedPolicy`; its ``to_*`` methods
hand the policy to the framework adapter's ``seed`` (which applies it permanently to that agent
object), and :meth:`TrainedPolicy.apply` detects the framework first.

Plain Python agents read :func:`agentgym_runtime.current_policy` themselves, so seeding one
returns a transparent proxy whose calls pin this policy for the agent's episodes.

Example:
    >>> from agentgym_runtime.recording.policy import Policy
    >>> trained = TrainedPolicy(Policy(agent="bot", version=3, system_prompt="Be exact."))
    >>> trained.ref, trained.system_prompt
    ('bot@v3', 'Be exact.')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import wrapt

from agentgym_runtime.policy.router import seeded
from agentgym_runtime.recording.policy import Policy


class SeededAgent(wrapt.ObjectProxy):  # type: ignore[misc]
    """A plain agent whose calls (and entry-point methods) pin one policy.

    Example:
        >>> proxy = SeededAgent(len, Policy(agent="bot", version=1))
        >>> proxy("abc"), proxy.agentgym_policy.version
        (3, 1)
    """

    _ENTRY_POINTS = frozenset({"invoke", "ainvoke", "run", "arun", "stream", "astream"})

    def __init__(self, wrapped: Any, policy: Policy) -> None:
        super().__init__(wrapped)
        self._self_policy = policy

    @property
    def agentgym_policy(self) -> Policy:
        """The seeded policy."""
        return self._self_policy

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the agent with the policy pinned."""
        return _call_seeded(self._self_policy, self.__wrapped__, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        """Attributes of the agent; entry points run with the policy pinned."""
        value = getattr(self.__wrapped__, name)
        if name in self._ENTRY_POINTS and callable(value):
            policy = self._self_policy

            def entry_point(*args: Any, **kwargs: Any) -> Any:
                return _call_seeded(policy, value, args, kwargs)

            entry_point.__name__ = name
            return entry_point
        return value


def _call_seeded(policy: Policy, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    import inspect

    if inspect.iscoroutinefunction(inspect.unwrap(fn)):

        async def run() -> Any:
            with seeded(policy):
                return await fn(*args, **kwargs)

        return run()
    with seeded(policy):
        return fn(*args, **kwargs)


@dataclass(frozen=True)
class TrainedPolicy:
    """A registered policy version, ready to be applied to a fresh agent object.

    Attributes:
        policy: The policy.
        artifact_path: Its artifact directory (``None`` for the baseline); a LoRA adapter named by
            ``policy.llm.adapter`` lies relative to it.

    Example:
        >>> TrainedPolicy(Policy(agent="bot", version=0)).is_baseline
        True
    """

    policy: Policy
    artifact_path: Path | None = None

    @property
    def ref(self) -> str:
        """``agent@vN``."""
        return self.policy.ref

    @property
    def version(self) -> int:
        """The version number."""
        return self.policy.version

    @property
    def system_prompt(self) -> str | None:
        """The policy's system prompt."""
        return self.policy.system_prompt

    @property
    def is_baseline(self) -> bool:
        """Whether it overrides nothing."""
        return self.policy.is_baseline

    @property
    def adapter_path(self) -> Path | None:
        """Absolute path of the LoRA adapter, if the policy has one."""
        if self.policy.llm is None or self.policy.llm.adapter is None or self.artifact_path is None:
            return None
        return self.artifact_path / self.policy.llm.adapter

    def _seed(self, framework: str, agent: Any) -> Any:
        from agentgym_runtime.adapters import load_adapter

        return load_adapter(framework).seed(agent, self.policy)

    def to_langchain(self, agent: Any) -> Any:
        """Apply the policy to a LangChain agent (through the LangChain adapter's ``seed``).

        Raises:
            MissingExtraError: LangChain is not installed.
        """
        return self._seed("langchain", agent)

    def to_autogen(self, agent: Any) -> Any:
        """Apply the policy to an AutoGen agent (through the AutoGen adapter's ``seed``).

        Raises:
            MissingExtraError: AutoGen is not installed.
        """
        return self._seed("autogen", agent)

    def to_crewai(self, agent: Any) -> Any:
        """Apply the policy to a CrewAI agent or crew (through the CrewAI adapter's ``seed``).

        Raises:
            MissingExtraError: CrewAI is not installed.
        """
        return self._seed("crewai", agent)

    def to_ag2(self, agent: Any) -> Any:
        """Apply the policy to an AG2 ``ConversableAgent`` (through the AG2 adapter's ``seed``).

        Raises:
            MissingExtraError: AG2 is not installed.
        """
        return self._seed("ag2", agent)

    def apply(self, agent: Any) -> Any:
        """Apply the policy to ``agent``, whatever its framework (detected from its class).

        Plain callables get a :class:`SeededAgent` proxy that pins this policy for their calls.

        Example:
            >>> trained = TrainedPolicy(Policy(agent="bot", version=2))
            >>> trained.apply(len).agentgym_policy.version
            2
        """
        from agentgym_runtime.adapters import adapter_for

        adapter = adapter_for(agent)
        if adapter.framework == "callable":
            try:
                return adapter.seed(agent, self.policy)
            except NotImplementedError:
                return SeededAgent(agent, self.policy)
        return adapter.seed(agent, self.policy)
