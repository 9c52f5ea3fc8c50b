"""A DuckDB-backed Agent Lightning ``LightningStore`` (Agent Lightning ships no SQL store).

:class:`DuckDBLightningStore` is Agent Lightning's own
``CollectionBasedLightningStore`` (all of the rollout / attempt / span / resource
logic stays theirs) on top of :class:`DuckDBLightningCollections`, which keeps
each collection in a table of a DuckDB file of its own: ``rollouts``, ``attempts``,
``spans``, ``resources``, ``workers`` (primary-key columns + the item as JSON +
an insertion sequence), ``rollout_queue`` and ``span_sequence_ids``.

The file belongs to the training job (its working directory), never to the
service's ``traces.duckdb``. Filters on primary keys (``exact`` / ``within``) run
in SQL; every other filter and the sort use Agent Lightning's own in-memory
matching functions, so the results equal :class:`agentlightning.InMemoryLightningStore`'s
for the same calls. Items are stored as JSON: a rollout ``input`` must be JSON
serialisable (tasks from a snapshot are).

Example:
    >>> store = DuckDBLightningStore("/tmp/job/lightning.duckdb")  # doctest: +SKIP
    >>> rollout = await store.enqueue_rollout(input={"q": "hi"})  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar

import aiologic
import duckdb
from pydantic import BaseModel

from agentgym_runtime.trainers.lightning import import_agentlightning

agl = import_agentlightning()
from agentlightning.store.base import is_finished  # noqa: E402
from agentlightning.store.collection.base import (  # noqa: E402
    Collection,
    DuplicatedPrimaryKeyError,
    KeyValue,
    LightningCollections,
    Queue,
    ensure_numeric,
    normalize_filter_options,
    resolve_sort_options,
)
from agentlightning.store.collection.memory import _get_sort_value, _item_matches_filters  # noqa: E402
from agentlightning.store.collection_based import CollectionBasedLightningStore  # noqa: E402

ItemT = TypeVar("ItemT", bound=BaseModel)

_LOCK_LABELS = (
    "rollouts",
    "attempts",
    "spans",
    "resources",
    "workers",
    "rollout_queue",
    "span_sequence_ids",
    "generic",
)

#: How often :meth:`DuckDBLightningStore.wait_for_rollout` re-reads a rollout (Agent Lightning polls every 10 s).
WAIT_POLL_SECONDS = 0.02


class _Database:
    """One DuckDB connection shared by the collections; a lock serialises statements across threads."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.connection = duckdb.connect(self.path)
        self.lock = threading.RLock()

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.lock:
            cursor = self.connection.execute(sql, list(parameters))
            return cursor.fetchall() if cursor.description else []

    def close(self) -> None:
        with self.lock:
            self.connection.close()


class DuckDBCollection(Collection[ItemT], Generic[ItemT]):  # type: ignore[misc]
    """One Agent Lightning collection as a DuckDB table: primary-key columns, ``seq`` and ``data`` (JSON).

    Unsorted queries return items in insertion order. ``update``/``upsert`` with
    ``update_fields`` copy those fields onto the stored item, like the in-memory store.
    """

    def __init__(self, db: _Database, table: str, item_type: type[ItemT], primary_keys: Sequence[str]) -> None:
        super().__init__(tracker=None)
        self._db = db
        self._table = table
        self._item_type = item_type
        self._primary_keys = tuple(primary_keys)
        columns = ", ".join(f'"{key}" VARCHAR NOT NULL' for key in self._primary_keys)
        keys = ", ".join(f'"{key}"' for key in self._primary_keys)
        db.execute(f"CREATE SEQUENCE IF NOT EXISTS {table}_seq")
        db.execute(
            f"CREATE TABLE IF NOT EXISTS {table} ({columns}, seq BIGINT NOT NULL, data VARCHAR NOT NULL, "
            f"PRIMARY KEY ({keys}))"
        )

    @property
    def collection_name(self) -> str:
        """The ``collection_name`` name."""
        return self._table

    def primary_keys(self) -> Sequence[str]:
        """The primary-key field names."""
        return self._primary_keys

    def item_type(self) -> type[ItemT]:
        """The pydantic model stored here."""
        return self._item_type

    async def size(self) -> int:
        """Number of stored items."""
        return int(self._db.execute(f"SELECT count(*) FROM {self._table}")[0][0])

    # -- helpers -------------------------------------------------------------------------
    def _key(self, item: ItemT) -> tuple[str, ...]:
        if not isinstance(item, self._item_type):
            raise TypeError(f"Expected item of type {self._item_type.__name__}, got {type(item).__name__}")
        values = []
        for key in self._primary_keys:
            value = getattr(item, key, None)
            if value is None:
                raise ValueError(f"Primary key {key!r} is missing on {self._item_type.__name__}")
            values.append(str(value))
        return tuple(values)

    def _where_key(self) -> str:
        return " AND ".join(f'"{key}" = ?' for key in self._primary_keys)

    def _load(self, key: tuple[str, ...]) -> ItemT | None:
        rows = self._db.execute(f"SELECT data FROM {self._table} WHERE {self._where_key()}", key)
        return self._item_type.model_validate_json(rows[0][0]) if rows else None

    def _candidates(self, filters: Any, must_filters: Any, logic: str) -> list[ItemT]:
        """Rows that may match, narrowed in SQL by primary-key ``exact``/``within`` filters of an AND."""
        clauses: list[str] = []
        parameters: list[Any] = []
        sources = [f for f in (must_filters, filters if logic == "and" else None) if f]
        for source in sources:
            for key in self._primary_keys:
                ops = source.get(key)
                if not ops:
                    continue
                if ops.get("exact") is not None:
                    clauses.append(f'"{key}" = ?')
                    parameters.append(str(ops["exact"]))
                if ops.get("within") is not None:
                    values = [str(v) for v in ops["within"]]
                    if not values:
                        return []
                    clauses.append(f'"{key}" IN ({", ".join("?" for _ in values)})')
                    parameters.extend(values)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.execute(f"SELECT data FROM {self._table} {where} ORDER BY seq", parameters)
        return [self._item_type.model_validate_json(row[0]) for row in rows]

    def _matching(self, filter: Any) -> list[ItemT]:
        filters, must_filters, logic = normalize_filter_options(filter)
        return [
            item
            for item in self._candidates(filters, must_filters, logic)
            if _item_matches_filters(item, filters, logic, must_filters)
        ]

    def _write(self, key: tuple[str, ...], item: ItemT, *, insert: bool) -> None:
        data = item.model_dump_json()
        if insert:
            columns = ", ".join(f'"{k}"' for k in self._primary_keys)
            marks = ", ".join("?" for _ in self._primary_keys)
            self._db.execute(
                f"INSERT INTO {self._table} ({columns}, seq, data) VALUES ({marks}, nextval('{self._table}_seq'), ?)",
                [*key, data],
            )
        else:
            self._db.execute(f"UPDATE {self._table} SET data = ? WHERE {self._where_key()}", [data, *key])

    def _merged(self, existing: ItemT, item: ItemT, update_fields: Sequence[str] | None) -> ItemT:
        if update_fields is None:
            return item
        return existing.model_copy(update={field: getattr(item, field) for field in update_fields})

    # -- Collection API --------------------------------------------------------------------
    async def query(
        self, filter: Any = None, sort: Any = None, limit: int = -1, offset: int = 0
    ) -> Any:  # agentlightning.PaginatedResult[ItemT]
        """Items matching ``filter``, sorted and paginated like the in-memory collection."""
        sort_by, sort_order = resolve_sort_options(sort)
        matches = self._matching(filter)
        if sort_by:
            matches.sort(key=lambda item: _get_sort_value(item, sort_by), reverse=sort_order == "desc")
        window = matches[offset:] if limit == -1 else matches[offset : offset + limit]
        return agl.PaginatedResult(items=window, limit=limit, offset=offset, total=len(matches))

    async def get(self, filter: Any = None, sort: Any = None) -> ItemT | None:
        """The first (or best-sorted) matching item."""
        result = await self.query(filter=filter, sort=sort, limit=1)
        return result.items[0] if result.items else None

    async def insert(self, items: Sequence[ItemT]) -> None:
        """Insert new items; a duplicated primary key raises ``DuplicatedPrimaryKeyError``."""
        keys = [self._key(item) for item in items]
        if len(set(keys)) != len(keys):
            raise DuplicatedPrimaryKeyError(f"Insert payload contains duplicated primary key(s) in {self._table}")
        with self._db.lock:
            for key in keys:
                if self._load(key) is not None:
                    raise DuplicatedPrimaryKeyError(f"Item already exists with primary key(s): {', '.join(key)}")
            for key, item in zip(keys, items, strict=True):
                self._write(key, item, insert=True)

    async def update(self, items: Sequence[ItemT], update_fields: Sequence[str] | None = None) -> Sequence[ItemT]:
        """Update existing items (all fields, or only ``update_fields``); a missing one raises ``ValueError``."""
        updated: list[ItemT] = []
        with self._db.lock:
            for item in items:
                key = self._key(item)
                existing = self._load(key)
                if existing is None:
                    raise ValueError(f"Item does not exist with primary key(s): {', '.join(key)}")
                merged = self._merged(existing, item, update_fields)
                self._write(key, merged, insert=False)
                updated.append(merged)
        return updated

    async def upsert(self, items: Sequence[ItemT], update_fields: Sequence[str] | None = None) -> Sequence[ItemT]:
        """Insert missing items, update existing ones (see ``Collection.upsert``)."""
        result: list[ItemT] = []
        with self._db.lock:
            for item in items:
                key = self._key(item)
                existing = self._load(key)
                if existing is None:
                    self._write(key, item, insert=True)
                    result.append(item)
                else:
                    merged = self._merged(existing, item, update_fields)
                    self._write(key, merged, insert=False)
                    result.append(merged)
        return result

    async def delete(self, items: Sequence[ItemT]) -> None:
        """Delete items; a missing one raises ``ValueError``."""
        with self._db.lock:
            for item in items:
                key = self._key(item)
                if self._load(key) is None:
                    raise ValueError(f"Item does not exist with primary key(s): {', '.join(key)}")
                self._db.execute(f"DELETE FROM {self._table} WHERE {self._where_key()}", key)


class DuckDBQueue(Queue[str]):  # type: ignore[misc]
    """The rollout queue: a FIFO of rollout ids in a DuckDB table."""

    def __init__(self, db: _Database, table: str = "rollout_queue") -> None:
        super().__init__(tracker=None)
        self._db = db
        self._table = table
        db.execute(f"CREATE SEQUENCE IF NOT EXISTS {table}_seq")
        db.execute(f"CREATE TABLE IF NOT EXISTS {table} (seq BIGINT PRIMARY KEY, item VARCHAR NOT NULL)")

    @property
    def collection_name(self) -> str:
        """The ``collection_name`` name."""
        return self._table

    def item_type(self) -> type[str]:
        """Queue items are rollout ids."""
        return str

    async def has(self, item: str) -> bool:
        """Whether ``item`` is waiting in the queue."""
        return bool(self._db.execute(f"SELECT 1 FROM {self._table} WHERE item = ? LIMIT 1", [item]))

    async def enqueue(self, items: Sequence[str]) -> Sequence[str]:
        """Append ``items`` at the end."""
        with self._db.lock:
            for item in items:
                if not isinstance(item, str):
                    raise TypeError(f"Expected item of type str, got {type(item).__name__}")
                self._db.execute(f"INSERT INTO {self._table} VALUES (nextval('{self._table}_seq'), ?)", [item])
        return items

    async def dequeue(self, limit: int = 1) -> Sequence[str]:
        """Pop up to ``limit`` items from the front."""
        if limit <= 0:
            return []
        with self._db.lock:
            rows = self._db.execute(f"SELECT seq, item FROM {self._table} ORDER BY seq LIMIT ?", [limit])
            if rows:
                self._db.execute(f"DELETE FROM {self._table} WHERE seq <= ?", [rows[-1][0]])
        return [row[1] for row in rows]

    async def peek(self, limit: int = 1) -> Sequence[str]:
        """The first ``limit`` items, left in place."""
        if limit <= 0:
            return []
        return [row[0] for row in self._db.execute(f"SELECT item FROM {self._table} ORDER BY seq LIMIT ?", [limit])]

    async def size(self) -> int:
        """Number of queued items."""
        return int(self._db.execute(f"SELECT count(*) FROM {self._table}")[0][0])


class DuckDBKeyValue(KeyValue[str, int]):  # type: ignore[misc]
    """The per-rollout span sequence counters in a DuckDB table."""

    def __init__(self, db: _Database, table: str = "span_sequence_ids") -> None:
        super().__init__(tracker=None)
        self._db = db
        self._table = table
        db.execute(f"CREATE TABLE IF NOT EXISTS {table} (key VARCHAR PRIMARY KEY, value BIGINT NOT NULL)")

    @property
    def collection_name(self) -> str:
        """The ``collection_name`` name."""
        return self._table

    async def has(self, key: str) -> bool:
        """Whether ``key`` has a value."""
        return bool(self._db.execute(f"SELECT 1 FROM {self._table} WHERE key = ?", [key]))

    async def get(self, key: str, default: int | None = None) -> int | None:
        """The value of ``key`` or ``default``."""
        rows = self._db.execute(f"SELECT value FROM {self._table} WHERE key = ?", [key])
        return int(rows[0][0]) if rows else default

    async def set(self, key: str, value: int) -> None:
        """Set ``key`` to ``value``."""
        self._db.execute(
            f"INSERT INTO {self._table} VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [key, value],
        )

    async def inc(self, key: str, amount: int) -> int:
        """Add ``amount`` to ``key`` (missing counts as 0) and return the new value."""
        assert ensure_numeric(amount, description="amount")
        with self._db.lock:
            current = await self.get(key)
            value = amount if current is None else current + amount
            await self.set(key, value)
        return value

    async def chmax(self, key: str, value: int) -> int:
        """Raise ``key`` to ``value`` if it is lower (or missing); return the value kept."""
        assert ensure_numeric(value, description="value")
        with self._db.lock:
            current = await self.get(key)
            if current is not None and current >= value:
                return current
            await self.set(key, value)
        return value

    async def pop(self, key: str, default: int | None = None) -> int | None:
        """Remove ``key`` and return its value (or ``default``)."""
        with self._db.lock:
            value = await self.get(key, default)
            self._db.execute(f"DELETE FROM {self._table} WHERE key = ?", [key])
        return value

    async def size(self) -> int:
        """Number of keys."""
        return int(self._db.execute(f"SELECT count(*) FROM {self._table}")[0][0])


class DuckDBLightningCollections(LightningCollections):  # type: ignore[misc]
    """Agent Lightning's collections, each a table in one DuckDB file.

    ``atomic`` serialises writers with one re-entrant lock (DuckDB has a single
    writer per file anyway); plain reads (``mode="r"`` without snapshot) take no lock.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__(tracker=None)
        self._db = _Database(path)
        self._rollouts = DuckDBCollection(self._db, "rollouts", agl.Rollout, ["rollout_id"])
        self._attempts = DuckDBCollection(self._db, "attempts", agl.Attempt, ["rollout_id", "attempt_id"])
        self._spans = DuckDBCollection(self._db, "spans", agl.Span, ["rollout_id", "attempt_id", "span_id"])
        self._resources = DuckDBCollection(self._db, "resources", agl.ResourcesUpdate, ["resources_id"])
        self._workers = DuckDBCollection(self._db, "workers", agl.Worker, ["worker_id"])
        self._rollout_queue = DuckDBQueue(self._db)
        self._span_sequence_ids = DuckDBKeyValue(self._db)
        self._locks = {name: aiologic.Lock() for name in _LOCK_LABELS}

    @property
    def collection_name(self) -> str:
        """The ``collection_name`` name."""
        return "duckdb"

    @property
    def path(self) -> str:
        """The DuckDB file."""
        return self._db.path

    @property
    def rollouts(self) -> DuckDBCollection[Any]:
        """The ``rollouts`` table."""
        return self._rollouts

    @property
    def attempts(self) -> DuckDBCollection[Any]:
        """The ``attempts`` table."""
        return self._attempts

    @property
    def spans(self) -> DuckDBCollection[Any]:
        """The ``spans`` table."""
        return self._spans

    @property
    def resources(self) -> DuckDBCollection[Any]:
        """The ``resources`` table."""
        return self._resources

    @property
    def workers(self) -> DuckDBCollection[Any]:
        """The ``workers`` table."""
        return self._workers

    @property
    def rollout_queue(self) -> DuckDBQueue:
        """The ``rollout_queue`` table."""
        return self._rollout_queue

    @property
    def span_sequence_ids(self) -> DuckDBKeyValue:
        """The ``span_sequence_ids`` table."""
        return self._span_sequence_ids

    @asynccontextmanager
    async def atomic(
        self, *, mode: str = "rw", snapshot: bool = False, commit: bool = False, labels: Any = None, **kwargs: Any
    ) -> AsyncIterator[DuckDBLightningCollections]:
        """Take the labelled locks (all when none named) in a fixed order; plain reads run unlocked.

        The locks are thread-safe (``aiologic``), as the in-memory store's thread-safe mode:
        Agent Lightning runs the algorithm and the runners on different threads and event loops.
        """
        if mode == "r" and not snapshot:
            yield self
            return
        names = sorted(labels) if labels else sorted(self._locks)
        async with AsyncExitStack() as stack:
            for name in names:
                lock = self._locks[name]
                await lock.async_acquire()
                stack.callback(lock.async_release)
            yield self

    async def evict_spans_for_rollout(self, rollout_id: str) -> None:
        """Drop a rollout's spans (the in-memory store's eviction hook)."""
        self._db.execute("DELETE FROM spans WHERE rollout_id = ?", [rollout_id])

    def close(self) -> None:
        """Close the DuckDB connection."""
        self._db.close()


class DuckDBLightningStore(CollectionBasedLightningStore[DuckDBLightningCollections]):  # type: ignore[misc]
    """Agent Lightning's collection-based store persisted in a DuckDB file of the job's own.

    Args:
        path: The DuckDB file (created if missing; ``":memory:"`` for none).
        scan_debounce_seconds: How often the unhealthy-rollout scan may run (as in Agent Lightning).

    Example:
        >>> store = DuckDBLightningStore(":memory:")  # doctest: +SKIP
        >>> store.path  # doctest: +SKIP
        ':memory:'
    """

    def __init__(self, path: str | Path, *, scan_debounce_seconds: float = 10.0) -> None:
        super().__init__(
            collections=DuckDBLightningCollections(path), tracker=None, scan_debounce_seconds=scan_debounce_seconds
        )

    @property
    def path(self) -> str:
        """The DuckDB file."""
        return str(self.collections.path)

    @property
    def capabilities(self) -> Any:
        """Thread- and async-safe; no OTLP endpoint (spans arrive through ``add_span``)."""
        return agl.LightningStoreCapabilities(thread_safe=True, async_safe=True, zero_copy=False, otlp_traces=False)

    async def wait_for_rollout(self, rollout_id: str, timeout: float | None = None) -> Any:
        """Wait until the rollout finishes (polling every :data:`WAIT_POLL_SECONDS`); ``None`` on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            rollout = await self.collections.rollouts.get({"rollout_id": {"exact": rollout_id}})
            if rollout is None:
                return None
            if is_finished(rollout):
                return rollout
            if deadline is not None and time.monotonic() >= deadline:
                return None
            await asyncio.sleep(WAIT_POLL_SECONDS)

    async def close(self) -> None:
        """Close the DuckDB file."""
        self.collections.close()


def rows_as_json(store: DuckDBLightningStore, table: str) -> list[dict[str, Any]]:
    """The items of one table (``rollouts``, ``spans``, ...) as dicts, in insertion order.

    Example:
        >>> rows_as_json(store, "rollouts")[0]["status"]  # doctest: +SKIP
        'queuing'
    """
    if table not in {"rollouts", "attempts", "spans", "resources", "workers"}:
        raise ValueError(f"unknown table {table!r}")
    rows = store.collections._db.execute(f"SELECT data FROM {table} ORDER BY seq")
    return [json.loads(row[0]) for row in rows]
