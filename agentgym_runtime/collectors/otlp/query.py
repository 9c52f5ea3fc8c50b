"""Read-only SQL on the store: in the owning process, or routed to it over HTTP.

DuckDB lets one process write a file and refuses readers from other processes meanwhile,
so a process that does not own the store asks the owner (``POST /v1/sql`` of the collector
that :mod:`.election` or ``AGENTGYM_COLLECTOR_ENDPOINT`` names). Only one ``SELECT`` (or
``EXPLAIN``/``DESCRIBE``/``SHOW``) statement is accepted: the reads never change the store.

Example:
    >>> from agentgym_runtime.collectors.store import TraceStore
    >>> run_sql(TraceStore(":memory:"), "SELECT count(*) AS n FROM episodes")
    (['n'], [(0,)])
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from agentgym_runtime.collectors.store import TraceStore
from agentgym_runtime.errors import ConfigurationError, StoreUnavailableError

_READ_STATEMENTS = frozenset({"SELECT", "EXPLAIN"})


def check_read_only(query: str) -> None:
    """Accept one read statement.

    Raises:
        ConfigurationError: Not exactly one statement, or a statement that is not a read.

    Example:
        >>> check_read_only("DROP TABLE spans")
        Traceback (most recent call last):
        ...
        agentgym_runtime.errors.ConfigurationError: only SELECT queries are allowed (got DROP)
    """
    import duckdb

    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise ConfigurationError(f"invalid SQL: {exc}") from None
    if len(statements) != 1:
        raise ConfigurationError(f"send exactly one SQL statement (got {len(statements)})")
    kind = statements[0].type.name
    if kind not in _READ_STATEMENTS:
        raise ConfigurationError(f"only SELECT queries are allowed (got {kind})")


def run_sql(
    store: TraceStore, query: str, params: Sequence[Any] | None = None
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and rows of a read query on ``store``.

    Raises:
        ConfigurationError: Not a single read statement, or DuckDB rejected it (the message says why).
    """
    import duckdb

    check_read_only(query)
    cursor = store.connect().cursor()
    try:
        result = cursor.execute(query, list(params or []))
        names = [d[0] for d in result.description or []]
        return names, result.fetchall()
    except duckdb.Error as exc:
        raise ConfigurationError(f"query failed: {exc}") from None
    finally:
        cursor.close()


def run_sql_arrow(store: TraceStore, query: str, params: Sequence[Any] | None = None) -> Any:
    """Like :func:`run_sql`, as a ``pyarrow.Table``."""
    import duckdb

    check_read_only(query)
    cursor = store.connect().cursor()
    try:
        return cursor.sql(query, params=list(params or [])).to_arrow_table()
    except duckdb.Error as exc:
        raise ConfigurationError(f"query failed: {exc}") from None
    finally:
        cursor.close()


def remote_sql(
    endpoint: str,
    query: str,
    params: Sequence[Any] | None = None,
    *,
    token: str | None = None,
    timeout_s: float = 30.0,
) -> tuple[list[str], list[list[Any]]]:
    """Run a read query on the collector at ``endpoint`` (``http://host:port``).

    Raises:
        ConfigurationError: The collector rejected the query (its reason is in the message).
        StoreUnavailableError: The collector cannot be reached.
    """
    body = json.dumps({"sql": query, "params": list(params or [])}, default=str).encode()
    request = urllib.request.Request(f"{endpoint.rstrip('/')}/v1/sql", data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            document = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        reason = exc.read().decode(errors="replace")
        if exc.code == 400:
            raise ConfigurationError(json.loads(reason).get("error", reason)) from None
        raise StoreUnavailableError(f"the collector at {endpoint} answered {exc.code}: {reason}") from None
    except OSError as exc:
        raise StoreUnavailableError(f"cannot reach the collector at {endpoint}: {exc}") from None
    return list(document["columns"]), [list(row) for row in document["rows"]]


def sql_via(
    store: TraceStore,
    endpoint: str | None,
    query: str,
    params: Sequence[Any] | None = None,
    *,
    token: str | None = None,
    arrow: bool = False,
) -> Any:
    """Rows (dicts) or an Arrow table for ``query``, from ``store`` or from its owner.

    The query runs on ``store`` when ``endpoint`` is ``None``, else on the collector there.

    Raises:
        ConfigurationError: Not a single read statement, or the query failed.
        StoreUnavailableError: Neither the store nor its owner can be reached.
    """
    if endpoint is None:
        if arrow:
            return run_sql_arrow(store, query, params)
        names, rows = run_sql(store, query, params)
        return [dict(zip(names, row, strict=True)) for row in rows]
    names, remote_rows = remote_sql(endpoint, query, params, token=token)
    if arrow:
        import pyarrow as pa  # type: ignore[import-untyped]

        return pa.Table.from_pylist([dict(zip(names, row, strict=True)) for row in remote_rows])
    return [dict(zip(names, row, strict=True)) for row in remote_rows]
