"""The Agent Lightning side of training jobs: a DuckDB store, the snapshot bridge, the replay agent.

Nothing here is imported by the serving process; each module imports
``agentlightning`` itself (through :func:`import_agentlightning`), so a
missing ``train`` extra surfaces as :class:`~agentgym_runtime.errors.MissingExtraError`.

Example:
    >>> from agentgym_runtime.trainers.lightning import import_agentlightning
    >>> callable(import_agentlightning)
    True
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from types import ModuleType

from agentgym_runtime.errors import MissingExtraError


def import_agentlightning() -> ModuleType:
    """Import ``agentlightning`` with the offline switches set, or raise :class:`MissingExtraError`.

    Example:
        >>> agl = import_agentlightning()  # doctest: +SKIP
    """
    # litellm (pulled in by agentlightning) fetches a price map at import unless told not to.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("AGENTOPS_API_KEY", "")
    try:
        return importlib.import_module("agentlightning")
    except ImportError as exc:
        if exc.name == "agentlightning" or importlib.util.find_spec("agentlightning") is None:
            raise MissingExtraError("training", "train", "agentlightning") from exc
        # Installed, but something it imports is broken: that ImportError is the real cause.
        raise
