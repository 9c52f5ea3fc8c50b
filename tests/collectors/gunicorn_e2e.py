"""The end-to-end scenarios of issue 13, shared by the process tests and ``benchmarks/bench_gunicorn.py``.

``collector_app.py`` (a FastAPI app with a wrapped agent) runs under gunicorn with 4 uvicorn
workers sharing one home, driven by a bounded loopback client; every scenario returns what was
acknowledged (by request number) and what the store holds, so the tests assert on it and the
benchmark prints it at 20,000 requests:

* :func:`run_shared_home`: the workers elect an owner that writes the store.
* :func:`run_owner_killed`: the same, with the elected owner killed with SIGKILL midway.
* :func:`run_collector_bounce`: the workers send to ``agentgym collect``, killed with SIGKILL
  midway and restarted while they keep serving.

Example:
    >>> RunResult("x", 2, {0, 1}, [0, 1], spans=4, distinct_spans=4).lost
    set()
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import httpx

HERE = Path(__file__).parent
BIN = Path(sys.executable).parent
#: Client threads: at most this many requests are in flight when a worker dies.
CONCURRENCY = 8
#: An episode of collector_app's agent: its invoke_agent root and one execute_tool span.
SPANS_PER_EPISODE = 2
#: The readiness probe's request number (``/ask/-1``), left out of every count.
_REAL = "input::VARCHAR NOT LIKE '%-1%'"


@dataclass
class RunResult:
    """What one scenario acknowledged and what the store holds afterwards.

    Attributes:
        scenario: Its name.
        requests: Requests sent.
        acknowledged: Request numbers answered ``200``.
        stored: Request numbers of the stored episodes, with repeats (an episode stored twice).
        spans: Spans stored (the readiness probe's included).
        distinct_spans: Distinct span ids among them.
        orphan_spans: Spans of an episode the store has no row for (a request that never ended).
        spans_per_episode: The distinct numbers of spans the stored episodes have.
        drive_s: Seconds the client took to send every request.
        total_s: Seconds from the first request until everything is in the store.
        load: 1-minute load average at the start and at the end.
        killed_pid: The process killed midway (owner or collector), if any.
        by_killed: Requests the killed owner acknowledged itself.
        owner_after: The home's owner after the run (its endpoint file).
        journal_left: Crash journals still on disk after the settling owner.
        spooled_left: Spool files not delivered at the end.
        log: The server's stderr.
    """

    scenario: str
    requests: int
    acknowledged: set[int]
    stored: list[int]
    spans: int = 0
    distinct_spans: int = 0
    orphan_spans: int = 0
    spans_per_episode: set[int] = field(default_factory=set)
    drive_s: float = 0.0
    total_s: float = 0.0
    load: tuple[float, float] = (0.0, 0.0)
    killed_pid: int | None = None
    by_killed: int = 0
    owner_after: int | None = None
    journal_left: int = 0
    spooled_left: int = 0
    log: str = ""

    @property
    def lost(self) -> set[int]:
        """Acknowledged requests whose episode is not in the store."""
        return self.acknowledged - set(self.stored)

    @property
    def duplicate_episodes(self) -> int:
        """Episodes stored more than once (each extra copy counts)."""
        return len(self.stored) - len(set(self.stored))

    @property
    def duplicate_spans(self) -> int:
        """Spans stored more than once (each extra copy counts)."""
        return self.spans - self.distinct_spans

    @property
    def unacknowledged_stored(self) -> set[int]:
        """Stored requests the client never saw answered (the server died while answering)."""
        return set(self.stored) - self.acknowledged


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(home: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "AGENTGYM_HOME": str(home), **extra}


def _gunicorn(home: Path, port: int, **extra: str) -> subprocess.Popen[bytes]:
    # stderr goes to a file: a pipe nobody reads during a long run would block the workers' logging.
    log = (home / "gunicorn.log").open("wb")
    process = subprocess.Popen(
        [
            str(BIN / "gunicorn"),
            "-w",
            "4",
            "-k",
            "uvicorn_worker.UvicornWorker",
            "-b",
            f"127.0.0.1:{port}",
            "--graceful-timeout",
            "30",
            "--chdir",
            str(HERE),
            "collector_app:app",
        ],
        env=_env(home, **extra),
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    log.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ask/-1", timeout=5).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError(f"gunicorn did not start: {_log(home)!r}")


def _log(home: Path) -> str:
    return (home / "gunicorn.log").read_text(errors="replace")


def drive(
    port: int, total: int, *, at_half: threading.Event | None = None, concurrency: int = CONCURRENCY
) -> dict[int, set[int]]:
    """Send ``total`` requests from ``concurrency`` threads; the acknowledged ones by serving pid."""
    lock = threading.Lock()
    state = {"next": 0}
    by_pid: dict[int, set[int]] = {}

    def worker() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            while True:
                with lock:
                    n = state["next"]
                    state["next"] += 1
                if n >= total:
                    return
                if at_half is not None and n == total // 2:
                    at_half.set()
                try:
                    response = client.get(f"/ask/{n}")
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False  # not acknowledged: the client cannot expect it recorded
                if ok:
                    with lock:
                        by_pid.setdefault(int(response.json()["pid"]), set()).add(n)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return by_pid


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(60)


def _settle(home: Path) -> None:
    """Own the home once more (its journals are replayed, the spool drains into this owner)."""
    script = (
        "import time, agentgym_runtime as a\n"
        "from agentgym_runtime.collectors.otlp.spool import Spool\n"
        "a.configure(); a.flush()\n"
        f"spool = Spool({str(home / 'spool')!r}); deadline = time.time() + 30\n"
        "while (spool.files() or any(p.name.startswith('.') for p in spool.directory.glob('*.otlp*'))) "
        "and time.time() < deadline: time.sleep(0.1)\n"
        "a.shutdown()\n"
    )
    subprocess.run([sys.executable, "-c", script], env=_env(home), check=True, timeout=300)


def _measure(result: RunResult, home: Path) -> RunResult:
    """Fill ``result`` with what the (closed) store of ``home`` holds."""
    con = duckdb.connect(str(home / "traces.duckdb"), read_only=True)
    try:
        rows = con.execute(
            f"SELECT CAST(regexp_extract(input::VARCHAR, '(-?[0-9]+)', 1) AS INTEGER) FROM episodes WHERE {_REAL}"
        ).fetchall()
        result.stored = [int(row[0]) for row in rows]
        spans, distinct = con.execute("SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM spans").fetchone()
        result.spans, result.distinct_spans = int(spans), int(distinct)
        orphans = con.execute("SELECT count(*) FROM spans WHERE episode_id NOT IN (SELECT episode_id FROM episodes)")
        result.orphan_spans = int(orphans.fetchone()[0])
        per_episode = con.execute(
            "SELECT count(s.span_id) FROM episodes e LEFT JOIN spans s USING (episode_id) GROUP BY e.episode_id"
        ).fetchall()
        result.spans_per_episode = {int(row[0]) for row in per_episode}
    finally:
        con.close()
    result.journal_left = len(list((home / "journal").glob("*.journal")))
    result.spooled_left = len(list((home / "spool").glob("*.otlp*")))
    return result


def run_shared_home(home: Path, requests: int) -> RunResult:
    """gunicorn with 4 uvicorn workers sharing ``home``; the elected owner writes the store."""
    port = free_port()
    server = _gunicorn(home, port)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    try:
        by_pid = drive(port, requests)
        drive_s = time.perf_counter() - start
    finally:
        _stop(server)
    _settle(home)
    result = RunResult("4 workers share a home", requests, set().union(*by_pid.values()), [], drive_s=drive_s)
    result.total_s = time.perf_counter() - start
    result.load = (load, os.getloadavg()[0])
    result.log = _log(home)
    return _measure(result, home)


@dataclass
class _Midway:
    """What :func:`_interrupt_midway` saw of a run interrupted halfway.

    Attributes:
        by_pid: The acknowledged request numbers by serving pid, as :func:`drive` returns them.
        drive_s: Seconds the client took to send every request.
        start: ``time.perf_counter()`` just before the first request.
        load: 1-minute load average just before the first request.
        killed_pid: The pid the interruption killed, if it killed one.
    """

    by_pid: dict[int, set[int]]
    drive_s: float
    start: float
    load: float
    killed_pid: int | None


def _interrupt_midway(
    port: int, requests: int, kill: Callable[[], int | None], restart: Callable[[], None] | None = None
) -> _Midway:
    """Drive ``requests`` to ``port``, calling ``kill`` (then ``restart``) once half of them are sent.

    The interruption runs on its own thread so that the client keeps sending while it happens:
    that overlap is what the scenarios test.

    Args:
        port: The server's loopback port.
        requests: Requests to send.
        kill: Kills something; returns the pid it killed, or ``None`` where it found nothing to kill.
        restart: Run right after ``kill`` (on the same thread), to bring back what it killed.

    Returns:
        What the client saw, and the pid killed.
    """
    half = threading.Event()
    killed: list[int] = []

    def interrupt() -> None:
        if not half.wait(600):
            return
        pid = kill()
        if pid is not None:
            killed.append(pid)  # before the restart: a failing restart still leaves the kill on record
        if restart is not None:
            restart()

    interrupter = threading.Thread(target=interrupt)
    interrupter.start()
    load = os.getloadavg()[0]
    start = time.perf_counter()
    try:
        by_pid = drive(port, requests, at_half=half)
        drive_s = time.perf_counter() - start
    finally:
        half.set()  # the interrupter never waits past the run
        interrupter.join()
    return _Midway(by_pid, drive_s, start, load, killed[0] if killed else None)


def run_owner_killed(home: Path, requests: int) -> RunResult:
    """As :func:`run_shared_home`, with the elected owner killed with SIGKILL after half the requests."""
    from agentgym_runtime.collectors.otlp.election import read_endpoint

    port = free_port()
    server = _gunicorn(home, port)

    def kill_owner() -> int | None:
        owner = read_endpoint(home)
        if owner is None:
            return None
        os.kill(int(owner["pid"]), signal.SIGKILL)
        return int(owner["pid"])

    try:
        run = _interrupt_midway(port, requests, kill_owner)
    finally:
        _stop(server)
    owner = read_endpoint(home)
    _settle(home)
    result = RunResult(
        "owner killed (SIGKILL) midway", requests, set().union(*run.by_pid.values()), [], drive_s=run.drive_s
    )
    result.total_s = time.perf_counter() - run.start
    result.load = (run.load, os.getloadavg()[0])
    result.killed_pid = run.killed_pid
    result.by_killed = len(run.by_pid.get(run.killed_pid or -1, ()))
    result.owner_after = int(owner["pid"]) if owner is not None else None
    result.log = _log(home)
    return _measure(result, home)


def run_collector_bounce(home: Path, requests: int) -> RunResult:
    """The workers send to ``agentgym collect``, killed with SIGKILL midway and restarted while they serve."""
    collector_port, port = free_port(), free_port()
    cmd = [str(BIN / "agentgym"), "collect", "--home", str(home), "--port", str(collector_port)]
    collector = subprocess.Popen(cmd, env=_env(home), stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{collector_port}"
    wait_up(endpoint)
    server = _gunicorn(home, port, AGENTGYM_COLLECTOR_ENDPOINT=endpoint)

    def kill_collector() -> int:
        collector.send_signal(signal.SIGKILL)
        return collector.pid

    def restart_collector() -> None:
        nonlocal collector
        collector.wait(10)
        time.sleep(1.0)  # workers keep serving meanwhile: their batches go to the spool
        collector = subprocess.Popen(cmd, env=_env(home), stderr=subprocess.DEVNULL)

    run = _interrupt_midway(port, requests, kill_collector, restart_collector)
    try:
        wait_up(endpoint)  # the restarted collector takes what the workers flush as they stop
    finally:
        _stop(server)
    # The workers delivered their spool before exiting, or left it for the next sender: wait for it.
    spool = home / "spool"
    deadline = time.monotonic() + 60
    while any(spool.glob("*.otlp*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    collector.send_signal(signal.SIGTERM)
    collector.wait(60)
    result = RunResult("collector killed (SIGKILL) and restarted", requests, set().union(*run.by_pid.values()), [])
    result.drive_s = run.drive_s
    result.total_s = time.perf_counter() - run.start
    result.load = (run.load, os.getloadavg()[0])
    result.killed_pid = run.killed_pid
    result.log = _log(home)
    return _measure(result, home)


def wait_up(endpoint: str) -> None:
    """Wait until a collector answers at ``endpoint``."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{endpoint}/v1/status", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"no collector at {endpoint}")
