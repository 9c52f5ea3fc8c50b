"""One reversible patch table for every framework adapter (wrapt's resolve/apply style).

An adapter describes its hooks as rows ``(owner, attribute, make_wrapper)``: ``owner`` is a class,
a module or an object, ``make_wrapper(original)`` returns the replacement. :meth:`PatchTable.install`
finds each original the way ``wrapt.wrap_function_wrapper`` does (:func:`wrapt.resolve_path`:
a class's ``__dict__`` along its MRO, so descriptors such as ``classmethod`` stay unbound) and
applies the replacements; :meth:`PatchTable.remove` puts each original back **only if the
attribute still holds our replacement**. When someone else wrapped over ours meanwhile (another
instrumentation library, a test's monkeypatch), their wrapper stays in place and keeps calling
ours, which then passes straight through: every hook checks :attr:`PatchTable.active` first.

Other reversible registrations (a framework's own hook registry, a configure hook) are added
with :meth:`PatchTable.on_remove`, so one call undoes everything an adapter installed.

Example:
    >>> import types
    >>> owner = types.SimpleNamespace(greet=lambda: "hi")
    >>> table = PatchTable("doc")
    >>> table.install([(owner, "greet", lambda original: lambda: original().upper())])
    >>> owner.greet()
    'HI'
    >>> table.remove()
    >>> owner.greet(), table.active
    ('hi', False)
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import wrapt

logger = logging.getLogger("agentgym_runtime.adapters")

#: One row of a patch table: where, which attribute, and how to build the replacement.
PatchSpec = tuple[Any, str, Callable[[Any], Any]]


@dataclass(frozen=True, slots=True)
class _Applied:
    parent: Any
    attribute: str
    original: Any
    replacement: Any
    owned: bool  # the attribute lived in ``parent``'s own namespace before we patched it


def _own_namespace(parent: Any) -> dict[str, Any]:
    try:
        return vars(parent)  # type: ignore[no-any-return]
    except TypeError:  # __slots__ objects have no namespace: treat as owned
        return {}


def _mark(replacement: Any, original: Any) -> None:
    """Give a function replacement the original's name and docs, and ``__wrapped__`` (as wrapt does)."""
    if inspect.isfunction(replacement):
        try:
            functools.update_wrapper(replacement, original)
        except (AttributeError, TypeError):
            replacement.__wrapped__ = original  # type: ignore[attr-defined]


def _set(parent: Any, attribute: str, value: Any) -> None:
    # pydantic's model metaclass intercepts setattr on classes (CrewAI's Agent, Task).
    if isinstance(parent, type):
        type.__setattr__(parent, attribute, value)
    else:
        wrapt.apply_patch(parent, attribute, value)


def _delete(parent: Any, attribute: str) -> None:
    if isinstance(parent, type):
        type.__delattr__(parent, attribute)
        return
    try:
        delattr(parent, attribute)
    except (AttributeError, TypeError):
        _own_namespace(parent).pop(attribute, None)


class PatchTable:
    """The reversible patches of one adapter, installed and removed together.

    Args:
        name: Who owns the table (used in log messages).

    Example:
        >>> PatchTable("langchain").active
        False
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._applied: list[_Applied] = []
        self._undo: list[Callable[[], None]] = []
        self._active = False

    @property
    def active(self) -> bool:
        """Whether the patches are installed (hooks pass straight through when not)."""
        return self._active

    def installed(self, parent: Any, attribute: str) -> Any | None:
        """Our replacement at ``parent.attribute`` while installed, else ``None``."""
        for row in self._applied:
            if row.parent is parent and row.attribute == attribute:
                return row.replacement
        return None

    def install(self, specs: Iterable[PatchSpec]) -> None:
        """Apply every row (all or nothing: a row that fails undoes the ones applied before it)."""
        with self._lock:
            if self._active:
                return
            self._active = True
            try:
                for owner, attribute, make in specs:
                    parent, name, original = wrapt.resolve_path(owner, attribute)
                    namespace = _own_namespace(parent)
                    owned = name in namespace or not hasattr(parent, "__dict__")
                    replacement = make(original)
                    _mark(replacement, original)
                    _set(parent, name, replacement)
                    self._applied.append(_Applied(parent, name, original, replacement, owned))
            except BaseException:
                self._restore()
                raise

    def on_remove(self, undo: Callable[[], None]) -> None:
        """Run ``undo`` at :meth:`remove` (for registrations that are not attribute patches)."""
        with self._lock:
            self._undo.append(undo)

    def remove(self) -> None:
        """Restore every original that is still ours; run the registered undos (last first)."""
        with self._lock:
            self._restore()

    def _restore(self) -> None:
        self._active = False  # a wrapper someone wrapped over becomes a pass-through
        for row in reversed(self._applied):
            current = _own_namespace(row.parent).get(row.attribute, getattr(row.parent, row.attribute, None))
            if current is not row.replacement:
                logger.warning(
                    "agentgym %s: %s.%s was wrapped again by someone else; leaving their wrapper in place",
                    self.name,
                    getattr(row.parent, "__name__", type(row.parent).__name__),
                    row.attribute,
                )
                continue
            if row.owned:
                _set(row.parent, row.attribute, row.original)
            else:
                _delete(row.parent, row.attribute)
        self._applied.clear()
        undo, self._undo = self._undo, []
        for action in reversed(undo):
            try:
                action()
            except Exception:
                logger.exception("agentgym %s: undoing a registration failed", self.name)


__all__ = ["PatchSpec", "PatchTable"]
