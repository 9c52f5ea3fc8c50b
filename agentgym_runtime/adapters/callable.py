"""Adapter for plain Python agents: any object with ``__call__``, ``invoke`` or ``run``.

Plain agents report their LLM calls with :func:`agentgym_runtime.recording.capture.start_llm_call`
(or not at all) and their tools through :func:`agentgym_runtime.tool`; this adapter
only makes each call of the entry points one episode.

Example:
    >>> import agentgym_runtime as agentgym
    >>> class Echo:
    ...     def run(self, text):
    ...         return text
    >>> agent = agentgym.train_online(Echo(), name="echo")
    >>> agent.run("hi"), isinstance(agent, Echo)
    ('hi', True)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from agentgym_runtime.adapters.base import Adapter
from agentgym_runtime.recording.policy import Policy
from agentgym_runtime.recording.wrapping import CallKind


class CallableAdapter(Adapter):
    """Episodes for ``__call__``, ``invoke``/``ainvoke``, ``run``/``arun`` and ``stream``/``astream``."""

    framework: ClassVar[str] = "callable"
    entry_points: ClassVar[Mapping[str, CallKind | None]] = {
        "__call__": None,
        "invoke": None,
        "ainvoke": None,
        "run": None,
        "arun": None,
        "stream": None,
        "astream": None,
    }

    def seed(self, agent: Any, policy: Policy) -> Any:
        """``agent`` with ``policy`` fixed: a :class:`~agentgym_runtime.adapters.seeding.SeededAgent` proxy.

        Example:
            >>> seeded = CallableAdapter().seed(len, Policy(agent="bot", version=2))
            >>> seeded("ab"), seeded.agentgym_policy.version
            (2, 2)
        """
        from agentgym_runtime.adapters.seeding import SeededAgent

        return SeededAgent(agent, policy)

    @classmethod
    def detects(cls, obj: Any) -> bool:
        """Anything callable or with one of the entry points qualifies."""
        return callable(obj) or any(callable(getattr(obj, name, None)) for name in cls.entry_points)
