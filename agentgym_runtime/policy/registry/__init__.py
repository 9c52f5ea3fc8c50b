"""The policy registry, split along its seams.

* :mod:`.state` — the state model (statuses, pointers, events), plain data;
* :mod:`.transitions` — pure functions from a state and a change to a new state and its events;
* :mod:`.files` — ``pointers.json`` with a lock and compare-and-set, ``events.jsonl``;
* :mod:`.mirror` — the DuckDB mirror of versions and events;
* :mod:`.core` — :class:`PolicyRegistry`, the facade that composes them.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> registry = PolicyRegistry(Path(tempfile.mkdtemp()))
    >>> registry.register("bot", system_prompt="Hi").ref
    'bot@v1'
"""

from __future__ import annotations

from agentgym_runtime.policy.registry.core import PolicyRegistry, default_actor
from agentgym_runtime.policy.registry.files import EVENTS, LOCK, POINTERS
from agentgym_runtime.policy.registry.state import (
    PolicyEvent,
    PolicyInfo,
    PolicyState,
    PolicyStatus,
    VersionRecord,
    parse_version,
)

__all__ = [
    "EVENTS",
    "LOCK",
    "POINTERS",
    "PolicyEvent",
    "PolicyInfo",
    "PolicyRegistry",
    "PolicyState",
    "PolicyStatus",
    "VersionRecord",
    "default_actor",
    "parse_version",
]
