"""API keys and passphrases: read from the environment, else the system keyring, never stored.

Example:
    >>> import os
    >>> os.environ["DOC_TOKEN"] = "t0k"
    >>> secret("DOC_TOKEN")
    't0k'
    >>> del os.environ["DOC_TOKEN"]
"""

from __future__ import annotations

import importlib
import os

from agentgym_runtime.errors import ConfigurationError

KEYRING_SERVICE = "agentgym"


def secret(name: str) -> str | None:
    """``$name``, else ``keyring.get_password("agentgym", name)`` when keyring is installed."""
    value = os.environ.get(name)
    if value:
        return value
    try:
        keyring = importlib.import_module("keyring")  # optional: only when the user installed it
    except ImportError:
        return None
    try:
        stored = keyring.get_password(KEYRING_SERVICE, name)
    except Exception:  # a keyring without a usable backend is the same as none
        return None
    return stored or None


def require_secret(name: str, what: str) -> str:
    """Like :func:`secret`, but a missing value is a clear error.

    Raises:
        ConfigurationError: Neither the environment nor the keyring has it.
    """
    value = secret(name)
    if not value:
        raise ConfigurationError(
            f"{what} needs {name}: set it in the environment (or `keyring set {KEYRING_SERVICE} {name}`)"
        )
    return value
