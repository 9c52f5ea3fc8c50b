"""Several processes, one store: gunicorn with 4 uvicorn workers sharing a home, and a collector
killed with SIGKILL while workers serve. Exact counts of acknowledged requests against the store."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import httpx
import pytest

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
BIN = Path(sys.executable).parent
#: Requests per run: sized so each test stays well under a minute on 2 shared cores (the
#: 20,000-request run is in benchmarks/bench_collector.py).
REQUESTS = 3000
#: Client threads: at most this many requests are in flight when a worker dies.
CONCURRENCY = 8
#: An episode of collector_app's agent: its invoke_agent root and one execute_tool span.
SPANS_PER_EPISODE = 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(home: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "AGENTGYM_HOME": str(home), **extra}


def _gunicorn(home: Path, port: int, **extra: str) -> subprocess.Popen[bytes]:
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
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ask/-1", timeout=5).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError(f"gunicorn did not start: {process.stderr.read() if process.stderr else ''!r}")


def _drive(
    port: int,
    total: int,
    *,
    at_half: threading.Event | None = None,
    concurrency: int = CONCURRENCY,
    by_pid: dict[int, set[int]] | None = None,
) -> int:
    """Send ``total`` requests from ``concurrency`` threads; return how many were acknowledged.

    ``by_pid`` (if given) collects the acknowledged request numbers by the worker that served them.
    """
    lock = threading.Lock()
    state = {"next": 0, "acked": 0}

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
                        state["acked"] += 1
                        if by_pid is not None:
                            by_pid.setdefault(int(response.json()["pid"]), set()).add(n)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return state["acked"]


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(60)


def _settle_and_count(home: Path) -> tuple[int, int]:
    """Own the home once more (the spool drains into this owner), then count episodes."""
    script = (
        "import time, agentgym_runtime as a\n"
        "from agentgym_runtime.collectors.otlp.spool import Spool\n"
        "a.configure(); a.flush()\n"
        f"spool = Spool({str(home / 'spool')!r}); deadline = time.time() + 30\n"
        "while (spool.files() or any(p.name.startswith('.') for p in spool.directory.glob('*.otlp*'))) "
        "and time.time() < deadline: time.sleep(0.1)\n"
        "a.shutdown()\n"
    )
    subprocess.run([sys.executable, "-c", script], env=_env(home), check=True, timeout=120)
    con = duckdb.connect(str(home / "traces.duckdb"), read_only=True)
    try:
        episodes, distinct = con.execute(
            "SELECT count(*), count(DISTINCT episode_id) FROM episodes WHERE input::VARCHAR NOT LIKE '%-1%'"
        ).fetchone()
    finally:
        con.close()
    return int(episodes), int(distinct)


def _stored_requests(home: Path) -> list[int]:
    """The request numbers of the stored episodes (with repeats, if any was stored twice)."""
    con = duckdb.connect(str(home / "traces.duckdb"), read_only=True)
    try:
        rows = con.execute(
            "SELECT CAST(regexp_extract(input::VARCHAR, '(-?[0-9]+)', 1) AS INTEGER) FROM episodes "
            "WHERE input::VARCHAR NOT LIKE '%-1%'"
        ).fetchall()
    finally:
        con.close()
    return [int(row[0]) for row in rows]


def _spans_per_episode(home: Path) -> set[int]:
    """The distinct numbers of spans the stored episodes have (one number: all complete)."""
    con = duckdb.connect(str(home / "traces.duckdb"), read_only=True)
    try:
        rows = con.execute(
            "SELECT count(s.span_id) FROM episodes e LEFT JOIN spans s USING (episode_id) GROUP BY e.episode_id"
        ).fetchall()
    finally:
        con.close()
    return {int(row[0]) for row in rows}


def _warmups(home: Path) -> int:
    con = duckdb.connect(str(home / "traces.duckdb"), read_only=True)
    try:
        return int(con.execute("SELECT count(*) FROM episodes WHERE input::VARCHAR LIKE '%-1%'").fetchone()[0])
    finally:
        con.close()


def test_gunicorn_four_workers_share_a_home_and_every_acknowledged_episode_is_stored(tmp_path: Path) -> None:
    port = _free_port()
    server = _gunicorn(tmp_path, port)
    try:
        acked = _drive(port, REQUESTS)
    finally:
        _stop(server)
    assert acked == REQUESTS
    assert _settle_and_count(tmp_path) == (acked, acked)


def test_owner_killed_midway_then_another_worker_takes_over(tmp_path: Path) -> None:
    port = _free_port()
    server = _gunicorn(tmp_path, port)
    half = threading.Event()
    killed: list[int] = []

    def kill_owner() -> None:
        half.wait(120)
        from agentgym_runtime.collectors.otlp.election import read_endpoint

        owner = read_endpoint(tmp_path)
        assert owner is not None
        os.kill(int(owner["pid"]), signal.SIGKILL)
        killed.append(int(owner["pid"]))

    killer = threading.Thread(target=kill_owner)
    killer.start()
    by_pid: dict[int, set[int]] = {}
    try:
        acked = _drive(port, REQUESTS, at_half=half, by_pid=by_pid)
    finally:
        killer.join()
        _stop(server)
    log = server.stderr.read().decode(errors="replace") if server.stderr else ""
    assert killed
    from agentgym_runtime.collectors.otlp.election import read_endpoint

    assert read_endpoint(tmp_path)["pid"] != killed[0]  # another process took the home over
    stored, distinct = _settle_and_count(tmp_path)
    assert stored == distinct  # nothing written twice
    requests = _stored_requests(tmp_path)
    assert len(requests) == len(set(requests)) == stored
    acknowledged = set().union(*by_pid.values())
    assert len(acknowledged) == acked
    # Nothing acknowledged is lost, whoever served it, the killed owner included: the followers'
    # batches that the dead owner never acknowledged waited in the spool, and the owner's own
    # episodes still in its in-memory queue were in its journal, replayed by the next owner.
    missing = acknowledged - set(requests)
    assert not missing, f"{len(missing)} acknowledged episodes lost ({len(by_pid.get(killed[0], ()))} by the owner)"
    # Besides those, only requests the owner recorded but could not answer before it died (at
    # most one per client thread in flight) may be stored; every stored episode is complete.
    unanswered = set(range(REQUESTS)) - acknowledged
    assert set(requests) - acknowledged <= unanswered
    assert len(set(requests) - acknowledged) <= CONCURRENCY
    assert stored == len(requests)
    assert _spans_per_episode(tmp_path) == {SPANS_PER_EPISODE}
    assert not any((tmp_path / "journal").glob("*.journal"))  # replayed, then deleted
    replayed = [line for line in log.splitlines() if "journaled by dead processes" in line]
    print(f"acknowledged {acked} ({len(by_pid.get(killed[0], ()))} by the killed owner); {replayed}")


def test_collector_killed_and_restarted_while_workers_serve(tmp_path: Path) -> None:
    collector_port, port = _free_port(), _free_port()
    cmd = [str(BIN / "agentgym"), "collect", "--home", str(tmp_path), "--port", str(collector_port)]
    collector = subprocess.Popen(cmd, env=_env(tmp_path), stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{collector_port}"
    _wait_up(endpoint)
    server = _gunicorn(tmp_path, port, AGENTGYM_COLLECTOR_ENDPOINT=endpoint)
    half = threading.Event()

    def bounce() -> None:
        nonlocal collector
        half.wait(120)
        collector.send_signal(signal.SIGKILL)
        collector.wait(10)
        time.sleep(1.0)  # workers keep serving meanwhile: their batches go to the spool
        collector = subprocess.Popen(cmd, env=_env(tmp_path), stderr=subprocess.DEVNULL)

    bouncer = threading.Thread(target=bounce)
    bouncer.start()
    try:
        acked = _drive(port, REQUESTS, at_half=half)
        bouncer.join()
        _wait_up(endpoint)
    finally:
        _stop(server)
    spool = tmp_path / "spool"
    deadline = time.monotonic() + 30
    while any(spool.glob("*.otlp*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    rows = httpx.post(
        f"{endpoint}/v1/sql",
        json={"sql": "SELECT count(*), count(DISTINCT episode_id) FROM episodes WHERE input::VARCHAR NOT LIKE '%-1%'"},
    ).json()["rows"]
    collector.send_signal(signal.SIGTERM)
    collector.wait(30)
    assert acked == REQUESTS
    assert rows == [[acked, acked]]


def _wait_up(endpoint: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{endpoint}/v1/status", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"no collector at {endpoint}")
