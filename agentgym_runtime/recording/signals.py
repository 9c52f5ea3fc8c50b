"""Make SIGTERM an orderly exit, so what was recorded is flushed like at any other exit.

Orchestrators (Kubernetes, systemd, gunicorn's arbiter, ``docker stop``) stop a service
with SIGTERM. Python's default action for it kills the process on the spot: no
``finally`` block, no ``atexit`` hook, so every span still in the batch queue is lost.
SIGINT, by contrast, raises ``KeyboardInterrupt``, the stack unwinds and the ``atexit``
hook of the runtime flushes.

The rule, decided once at the runtime's start and in the main thread only:

* the host has **no** SIGTERM handler (``SIG_DFL``): install one that raises
  ``SystemExit(143)`` (128 + 15, the status a shell reports for SIGTERM). The stack
  unwinds, ``atexit`` runs, the runtime flushes and closes the store;
* the host installed its **own** handler, or ignores SIGTERM (``SIG_IGN``): leave it
  alone. Its handler decides; if it exits with ``sys.exit`` the ``atexit`` flush runs,
  if it calls ``os._exit`` it should call ``agentgym.shutdown()`` first;
* a handler the host installs *after* ours replaces it, as the host asked.

The handler never flushes inside the signal handler itself: the interrupted code may
hold a lock that flushing needs. Raising ``SystemExit`` unwinds first, releasing it.
Set ``AGENTGYM_HANDLE_SIGTERM=false`` to opt out.

Example:
    >>> import signal
    >>> install_sigterm_exit(enabled=False)
    False
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

logger = logging.getLogger("agentgym_runtime")

#: What a shell reports for a process ended by SIGTERM; kept so orchestrators read the same status.
SIGTERM_EXIT_STATUS = 128 + signal.SIGTERM


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Turn SIGTERM into ``SystemExit``: ``finally`` blocks and ``atexit`` (the flush) run."""
    raise SystemExit(SIGTERM_EXIT_STATUS)


def install_sigterm_exit(*, enabled: bool = True) -> bool:
    """Install :func:`_exit_on_sigterm` for SIGTERM if the host has no handler of its own.

    Args:
        enabled: ``False`` does nothing (``AGENTGYM_HANDLE_SIGTERM=false``).

    Returns:
        Whether our handler is installed now (``False``: the host's handler, ``SIG_IGN``,
        not the main thread, or disabled).
    """
    if not enabled:
        return False
    if threading.current_thread() is not threading.main_thread():
        return False  # signal.signal works only there; a later start in the main thread installs it
    try:
        current = signal.getsignal(signal.SIGTERM)
        if current is _exit_on_sigterm:
            return True
        if current is not signal.SIG_DFL:
            return False  # the host's own handler (or SIG_IGN) decides: never replace it
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    except (ValueError, OSError) as exc:  # embedded interpreters without signal support
        logger.debug("agentgym: cannot install the SIGTERM handler: %r", exc)
        return False
    return True
