"""The one per-call policy path of every adapter, and the one meaning of ``seed``.

**Per call.** Each adapter hooks its framework's LLM-call boundary (LangChain's
``BaseChatModel.invoke``/``stream``, AutoGen's model client, CrewAI's ``get_llm_response``) and
does the same four steps there, with the functions of this package:

1. :func:`effective_policy` picks the policy this call serves (rule below), or ``None``: the call
   is made exactly as the host made it;
2. the adapter's :meth:`~agentgym_runtime.adapters.base.Adapter.apply_policy` turns the host's
   request into the request under that policy (a new object; nothing shared is mutated);
3. :func:`agentgym_runtime.adapters.routing.routed_model` gives the model that serves the
   policy's ``llm`` (if any);
4. :mod:`agentgym_runtime.adapters.fallback` makes the call, retrying once under the incumbent
   when a routed endpoint cannot be reached.

**Which policy.** A policy *seeded* onto the agent object making the call wins; otherwise the
policy the runtime pinned for the agent acting now (:func:`agentgym_runtime.current_policy`:
registry, canary, fallback). The baseline changes nothing. The router uses the same rule when an
episode starts (:func:`agentgym_runtime.policy.router.seeded`), and the adapters use the router's
context variable, so there is one seeded policy per context and one precedence.

**Seed.** ``adapter.seed(agent, policy)`` (what ``TrainedPolicy.apply`` / ``to_langchain`` /
``to_autogen`` / ``to_crewai`` call) returns the agent to use from now on, whose every LLM call
serves ``policy``, inside or outside an episode. Where the framework lets an agent object carry
its policy (an AutoGen agent's model client, a CrewAI agent's backstory, tools and LLM) the agent
itself is changed and returned; otherwise (a LangChain graph, a plain callable) a transparent
:class:`SeededAgent` proxy binds the policy around each of its entry points.

Example:
    >>> from agentgym_runtime.recording.policy import Policy
    >>> agent = SeededAgent(lambda: effective_policy().ref, Policy(agent="bot", version=3, system_prompt="Be exact."))
    >>> agent(), effective_policy() is None
    ('bot@v3', True)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from agentgym_runtime.adapters.fallback import resume_fallback
from agentgym_runtime.adapters.streams import aiterate_within, iterate_within
from agentgym_runtime.api import current_policy
from agentgym_runtime.policy.router import seeded, seeded_policy_var
from agentgym_runtime.policy.trained import SeededAgent as _PolicySeededAgent
from agentgym_runtime.recording.policy import Policy


def effective_policy(fixed: Policy | None = None) -> Policy | None:
    """The non-baseline policy the current LLM call serves, or ``None`` (module docstring's rule).

    Args:
        fixed: A policy the calling agent object carries itself (an AutoGen seeded client); it
            counts as seeded.

    Example:
        >>> from agentgym_runtime.recording.policy import Policy
        >>> effective_policy(Policy(agent="a", version=2, system_prompt="p")).version
        2
        >>> effective_policy() is None  # outside episodes nothing is pinned
        True
    """
    chosen = fixed if fixed is not None else seeded_policy_var.get()
    if chosen is not None:
        return None if chosen.is_baseline else chosen
    pinned = current_policy()
    if pinned is None or pinned.is_baseline:
        return None
    if pinned.llm is not None:
        pinned = resume_fallback(pinned)  # a routed policy this episode already fell back from
    return None if pinned.is_baseline else pinned


async def _await_seeded(policy: Policy, awaitable: Any) -> Any:
    with seeded(policy):
        return await awaitable


def call_seeded(policy: Policy, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``fn(*args, **kwargs)`` with ``policy`` seeded, for the whole call whatever its shape.

    A coroutine, generator or async generator ``fn`` returns is bound while it runs (per step),
    not only while it is created.

    Example:
        >>> from agentgym_runtime.recording.policy import Policy
        >>> policy = Policy(agent="a", version=1, system_prompt="p")
        >>> list(call_seeded(policy, lambda: (effective_policy().version for _ in "ab"), (), {}))
        [1, 1]
    """
    with seeded(policy):
        result = fn(*args, **kwargs)
    if inspect.iscoroutine(result):
        return _await_seeded(policy, result)
    if inspect.isgenerator(result):
        return iterate_within(lambda: seeded(policy), result)
    if inspect.isasyncgen(result):
        return aiterate_within(lambda: seeded(policy), result)
    return result


class SeededAgent(_PolicySeededAgent):
    """An agent object with a fixed policy: each of its entry points runs with the policy seeded.

    Behaves like the agent (``isinstance``, attributes). Used by every adapter that cannot store
    the policy on the agent itself (LangChain graphs and chains, plain callables).

    Example:
        >>> from agentgym_runtime.recording.policy import Policy
        >>> proxy = SeededAgent(len, Policy(agent="bot", version=1))
        >>> proxy("abc"), proxy.agentgym_policy.version
        (3, 1)
    """

    _ENTRY_POINTS = frozenset(
        {"invoke", "ainvoke", "batch", "abatch", "stream", "astream", "run", "arun", "kickoff", "kickoff_async"}
    )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the agent with the policy seeded."""
        return call_seeded(self._self_policy, self.__wrapped__, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        """Attributes of the agent; entry points run with the policy seeded."""
        value = getattr(self.__wrapped__, name)
        if name in self._ENTRY_POINTS and callable(value):
            policy = self._self_policy

            def entry_point(*args: Any, **kwargs: Any) -> Any:
                return call_seeded(policy, value, args, kwargs)

            entry_point.__name__ = name
            entry_point.__doc__ = getattr(value, "__doc__", None)
            return entry_point
        return value

    def __repr__(self) -> str:
        return f"<agentgym seeded {self._self_policy.ref} {self.__wrapped__!r}>"


__all__ = ["SeededAgent", "call_seeded", "effective_policy"]
