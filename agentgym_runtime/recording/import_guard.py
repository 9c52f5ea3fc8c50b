"""Refuse to serve from the agent's code while a training job imports it to replay the agent.

A training job that replays the agent (``demos``, ``apo``, ``verl``) imports the user's script or
module again in its own process. Code at module level runs during that import, so a script whose
serving loop is not under ``if __name__ == "__main__":`` would serve inside the job: configure
agentgym with the job's own command line, start a second scheduler whose jobs fail, and never
return, leaving the real job to hang until its timeout. Like :mod:`multiprocessing`, which refuses
to start a process from a main module being imported by its child, the job marks the import
(:func:`importing_agent_code`) and the actions that only serving does — :func:`agentgym.configure
<agentgym_runtime.api.configure>`, an episode of a decorated agent, starting the scheduler — call
:func:`refuse_while_importing` first, which raises :class:`AgentCodeImportError` naming the file and
the fix. The job then fails at once with that reason.

:class:`AgentCodeImportError` derives from :class:`BaseException`, as :class:`KeyboardInterrupt`
and :class:`asyncio.CancelledError` do, because a serving loop usually catches :class:`Exception`
around each request to keep serving: an ordinary exception would be swallowed there and the loop
would go on inside the job.

Only a training job's process is guarded (:func:`training_job`, entered by the job's entry point):
a trainer run in a service's own process, beside threads that serve, must never refuse them.

Example:
    >>> with training_job(), importing_agent_code("/srv/app.py"):
    ...     try:
    ...         refuse_while_importing("called agentgym.configure()")
    ...     except AgentCodeImportError as exc:
    ...         print(str(exc).split(": ")[0])
    the training job imports /srv/app.py again to replay the agent, and importing it called agentgym.configure()
    >>> with importing_agent_code("/srv/app.py"):  # not in a job: nothing is refused
    ...     refuse_while_importing("called agentgym.configure()")
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
# A process-wide mark, not a context variable: a serving loop may call the agent from threads it
# starts during the import, and those must be refused too.
_importing: list[str] = []
_in_job = 0


class AgentCodeImportError(BaseException):
    """The agent's code served (configured agentgym, ran the agent) while a training job imported it.

    Example:
        >>> issubclass(AgentCodeImportError, Exception)
        False
    """


@contextmanager
def training_job() -> Iterator[None]:
    """Within the block, this process is a training job: imports of the agent's code are guarded.

    Example:
        >>> with training_job(), importing_agent_code("app"):
        ...     importing_now()
        'app'
    """
    global _in_job
    with _lock:
        _in_job += 1
    try:
        yield
    finally:
        with _lock:
            _in_job -= 1


@contextmanager
def importing_agent_code(what: str) -> Iterator[None]:
    """Mark ``what`` (a script's path or a module's name) as being imported by a training job.

    Outside :func:`training_job` nothing is marked.

    Example:
        >>> with importing_agent_code("app"):
        ...     importing_now() is None
        True
    """
    with _lock:
        marked = _in_job > 0
        if marked:
            _importing.append(what)
    try:
        yield
    finally:
        if marked:
            with _lock:
                _importing.remove(what)


def importing_now() -> str | None:
    """What a training job is importing right now (the innermost), or ``None``.

    Example:
        >>> importing_now() is None
        True
    """
    with _lock:
        return _importing[-1] if _importing else None


def refuse_while_importing(action: str) -> None:
    """Raise :class:`AgentCodeImportError` if a training job is importing the agent's code now.

    Args:
        action: What the code did, for the message (``"called agentgym.configure()"``).

    Raises:
        AgentCodeImportError: A job is importing the agent's code; the message names it and the fix.
    """
    what = importing_now()
    if what is None:
        return
    raise AgentCodeImportError(
        f"the training job imports {what} again to replay the agent, and importing it {action}: code "
        'that configures agentgym or serves the agent must run under `if __name__ == "__main__":` '
        "(or in a function your service calls), not when the module is imported"
    )


__all__ = ["AgentCodeImportError", "importing_agent_code", "importing_now", "refuse_while_importing", "training_job"]
