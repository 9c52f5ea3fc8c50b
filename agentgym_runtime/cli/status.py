"""``agentgym status``: the recording process's counters and what the store holds, fast.

Status is what health checks and impatient users call, so it answers without Typer, Rich,
pydantic or DuckDB whenever it can (each costs 70-300 ms to import; the target is 50 ms):

* the home and store paths are resolved from the options and ``AGENTGYM_*`` environment
  variables the way :class:`agentgym_runtime.config.Settings` resolves them;
* the serving process's counters come from ``status.json``, and whether that process still
  runs from its pid;
* the store's row counts come from ``<home>/.status-counts.json``, a cache keyed on the size
  and modification time of the DuckDB file and its WAL. Only when the store changed since the
  last ``status`` is DuckDB opened (and the cache refreshed). While a serving process holds
  the store, the cached counts are shown with their age rather than copying the whole file.

The table is drawn with box characters here rather than by Rich, for the same reason.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from agentgym_runtime.cli.format import fmt_ago, fmt_number, fmt_time, json_default

COUNTS_CACHE = ".status-counts.json"
#: ``status.json`` counters shown, in order; the ones that mean data was lost are marked.
COUNTERS = (
    "spans_enqueued",
    "spans_written",
    "episodes_written",
    "feedback_written",
    "pending_rows",
    "spans_lost",
    "rows_dropped",
    "rows_quarantined",
    "write_failures",
    "internal_errors",
)
ALARMS = frozenset({"spans_lost", "rows_dropped", "rows_quarantined", "write_failures", "internal_errors"})
#: A process that has not republished its status for this long is shown as not responding.
STALE_AFTER_S = 120.0


class UsageError(Exception):
    """Arguments the fast path does not handle (Typer then parses them and explains)."""


def resolve_paths(home: str | None, store: str | None) -> tuple[Path, str]:
    """The home directory and the store path, as :class:`~agentgym_runtime.config.Settings` would.

    Example:
        >>> resolve_paths("/srv/gym", None)
        (PosixPath('/srv/gym'), '/srv/gym/traces.duckdb')
    """
    raw_home = home if home is not None else os.environ.get("AGENTGYM_HOME")
    home_path = Path(raw_home).expanduser() if raw_home else Path.cwd() / ".agentgym"
    raw_store = store if store is not None else os.environ.get("AGENTGYM_STORE")
    return home_path, raw_store or str(home_path / "traces.duckdb")


def pid_running(pid: int) -> bool:
    """Whether a process with ``pid`` exists on this machine.

    Example:
        >>> pid_running(os.getpid())
        True
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    except OSError:
        return False
    return True


def process_state(published: dict[str, Any], now: float) -> dict[str, Any]:
    """``running``, ``not responding`` or ``exited`` for the process that wrote ``status.json``.

    Example:
        >>> process_state({"pid": os.getpid(), "updated_at": 100.0}, 101.0)["state"]
        'running'
    """
    pid = int(published.get("pid") or 0)
    updated = float(published.get("updated_at") or 0.0)
    if not pid_running(pid):
        state = "exited"
    elif now - updated > STALE_AFTER_S:
        state = "not responding"
    else:
        state = "running"
    return {"pid": pid, "service_name": published.get("service_name"), "state": state, "updated_at": updated}


def _file_key(store_path: str) -> list[int]:
    key: list[int] = []
    for path in (store_path, store_path + ".wal"):
        try:
            info = os.stat(path)
            key += [info.st_size, info.st_mtime_ns]
        except OSError:
            key += [-1, -1]
    return key


def _read_cache(home: Path, store_path: str) -> dict[str, Any] | None:
    try:
        cached = json.loads((home / COUNTS_CACHE).read_text())
    except (OSError, ValueError):
        return None
    return cached if isinstance(cached, dict) and cached.get("store") == store_path else None


def store_counts(home: Path, store_path: str, *, process_alive: bool) -> dict[str, Any]:
    """Row counts of the store: from the cache when the file is unchanged, else from DuckDB.

    Returns:
        ``{"spans", "episodes", "feedback", "agents", "counted_at", "source"}`` where ``source``
        is ``cache``, ``store`` or ``snapshot``; or ``{"error": ...}`` when nothing can be read.
    """
    if store_path == ":memory:":
        return {"error": "an in-memory store cannot be read from another process"}
    if not os.path.exists(store_path):
        return {"error": f"no trace store at {store_path}"}
    key = _file_key(store_path)
    cached = _read_cache(home, store_path)
    if cached is not None and (cached.get("key") == key or process_alive):
        # A live writer changes the file all the time; its counters above are the live numbers,
        # and copying a large store on every status would cost seconds.
        return {**cached["counts"], "counted_at": cached["counted_at"], "source": "cache"}
    from agentgym_runtime.cli.access import open_for_reading
    from agentgym_runtime.errors import StoreUnavailableError

    try:
        with open_for_reading(store_path) as opened:
            row = opened.store.query(
                "SELECT (SELECT count(*) FROM spans), (SELECT count(*) FROM episodes), "
                "(SELECT count(*) FROM feedback), (SELECT count(DISTINCT agent) FROM episodes)"
            )[0]
            snapshot = opened.snapshot
    except StoreUnavailableError as exc:
        return {"error": str(exc)}
    counts = {"spans": int(row[0]), "episodes": int(row[1]), "feedback": int(row[2]), "agents": int(row[3])}
    now = time.time()
    if not snapshot:
        try:
            from agentgym_runtime.recording.files import atomic_write_json

            atomic_write_json(
                home / COUNTS_CACHE,
                {"store": store_path, "key": _file_key(store_path), "counts": counts, "counted_at": now},
                durable=False,
            )
        except OSError:
            pass  # a read-only home: status still answers, only slower next time
    return {**counts, "counted_at": now, "source": "snapshot" if snapshot else "store"}


def collect(home: str | None = None, store: str | None = None) -> dict[str, Any]:
    """The status document (what ``agentgym status --json`` prints).

    Example:
        >>> import tempfile
        >>> collect(tempfile.mkdtemp())["process"] is None
        True
    """
    home_path, store_path = resolve_paths(home, store)
    now = time.time()
    document: dict[str, Any] = {"home": str(home_path), "store": store_path, "process": None, "stats": {}}
    try:
        published = json.loads((home_path / "status.json").read_text())
    except (OSError, ValueError):
        published = None
    if isinstance(published, dict):
        document["process"] = process_state(published, now)
        document["stats"] = {key: published.get("stats", {}).get(key, 0) for key in COUNTERS}
        document["last_error"] = published.get("stats", {}).get("last_error")
    alive = document["process"] is not None and document["process"]["state"] != "exited"
    document["counts"] = store_counts(home_path, store_path, process_alive=alive)
    document["training"] = training_status(home_path)
    return document


def training_status(home: Path) -> dict[str, Any]:
    """The scheduler's last ``<home>/training/status.json``: per agent its failure streak and hold.

    Example:
        >>> import tempfile
        >>> training_status(Path(tempfile.mkdtemp()))
        {}
    """
    try:
        published = json.loads((home / "training" / "status.json").read_text())
    except (OSError, ValueError):
        return {}
    agents = published.get("agents") if isinstance(published, dict) else None
    return agents if isinstance(agents, dict) else {}


def rows(document: dict[str, Any], now: float) -> list[tuple[str, str, bool]]:
    """``(what, value, alarm)`` rows of the status table."""
    out: list[tuple[str, str, bool]] = [("home", document["home"], False), ("store", document["store"], False)]
    process = document["process"]
    if process is None:
        out.append(("process", "no status published yet", False))
    else:
        name = f" ({process['service_name']})" if process.get("service_name") else ""
        updated = f"updated {fmt_time(process['updated_at'])} ({fmt_ago(process['updated_at'], now)})"
        alarm = process["state"] != "running"
        out.append(("process", f"pid {process['pid']}{name} {process['state']}, {updated}", alarm))
        for key in COUNTERS:
            value = document["stats"].get(key, 0)
            out.append((key.replace("_", " "), fmt_number(value), key in ALARMS and bool(value)))
        if document.get("last_error"):
            out.append(("last error", str(document["last_error"]), True))
    counts = document["counts"]
    if "error" in counts:
        out.append(("store", f"not readable: {counts['error']}", True))
    else:
        for key in ("spans", "episodes", "feedback"):
            out.append((f"{key} stored", fmt_number(counts[key]), False))
        out.append(("agents", fmt_number(counts["agents"]), False))
        if counts["source"] == "cache":
            out.append(("counted", f"{fmt_time(counts['counted_at'])} ({fmt_ago(counts['counted_at'], now)})", False))
    for agent, state in sorted(document.get("training", {}).items()):
        if not isinstance(state, dict):
            continue
        if state.get("held"):  # paused after repeated failures, or backing off: say why
            out.append((f"training {agent}", str(state["held"]), True))
        elif state.get("active_run"):
            out.append((f"training {agent}", f"running ({state['active_run']})", False))
        else:
            streak = int(state.get("consecutive_failures") or 0)
            failures = f", {streak} failed run(s) in a row" if streak else ""
            out.append(
                (f"training {agent}", f"next run {state.get('next_run') or 'on request'}{failures}", bool(streak))
            )
    return out


def render(table_rows: list[tuple[str, str, bool]], width: int, colour: bool) -> str:
    """A two-column box table titled ``agentgym status`` that fits ``width`` columns.

    Values wrap at spaces when the table would be wider than ``width``; a single word (a path,
    a pid) is never cut, because users copy it: it overflows its line instead.

    Example:
        >>> print(render([("home", "/srv/gym", False)], 80, False))
          agentgym status
        ╭──────┬──────────╮
        │ home │ /srv/gym │
        ╰──────┴──────────╯
    """
    left = max(len(what) for what, _, _ in table_rows)
    natural = max(len(value) for _, value, _ in table_rows)
    # A word longer than the column (a deep path) overflows its own line rather than being cut
    # or widening every other row past the terminal.
    right = max(min(natural, width - left - 7), 8)
    lines = [f"╭{'─' * (left + 2)}┬{'─' * (right + 2)}╮"]
    for what, value, alarm in table_rows:
        for i, chunk in enumerate(_wrap(value, right)):
            cell = chunk.ljust(right)
            if alarm and colour:
                cell = f"\x1b[31m{cell}\x1b[0m"
            label = what if i == 0 else ""
            lines.append(f"│ {label.ljust(left)} │ {cell} │")
    lines.append(f"╰{'─' * (left + 2)}┴{'─' * (right + 2)}╯")
    title = "agentgym status"
    lines.insert(0, title.center(left + right + 7).rstrip())
    return "\n".join(lines)


def _wrap(text: str, width: int) -> list[str]:
    out: list[str] = []
    line = ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            out.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    out.append(line)
    return out


def parse_args(args: list[str]) -> tuple[str | None, str | None, bool]:
    """``--home``, ``--store`` and ``--json`` of ``agentgym status``.

    Raises:
        UsageError: Anything else (``--help``, a typo): Typer handles it.
    """
    home = store = None
    as_json = False
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        name, eq, inline = arg.partition("=")
        if name in ("--home", "--store"):
            if not eq:
                if not rest:
                    raise UsageError(arg)
                inline = rest.pop(0)
            if name == "--home":
                home = inline
            else:
                store = inline
        elif arg == "--json":
            as_json = True
        else:
            raise UsageError(arg)
    return home, store, as_json


def run(home: str | None, store: str | None, as_json: bool) -> None:
    """Print the status table (or ``--json``) on stdout."""
    document = collect(home, store)
    if as_json:
        sys.stdout.write(json.dumps(document, default=json_default) + "\n")
        return
    width = shutil.get_terminal_size((80, 24)).columns
    sys.stdout.write(render(rows(document, time.time()), width, sys.stdout.isatty()) + "\n")


def fast_main(args: list[str]) -> bool:
    """Answer ``agentgym status ARGS`` without loading Typer; ``False`` if Typer must parse them."""
    try:
        home, store, as_json = parse_args(args)
    except UsageError:
        return False
    run(home, store, as_json)
    return True
