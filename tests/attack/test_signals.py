"""Signals at random points of a recording process: what the host was told is what is stored.

``acknowledged`` is what the child's host code saw returned (written by a host ``atexit`` hook,
which runs after agentgym's own because it was registered first). After SIGTERM or SIGINT every
acknowledged episode must be stored; the one call the signal interrupted may be stored too (its
episode ended, its return never reached the host), so ``stored - acknowledged`` is 0 or 1.
After SIGKILL only what ``flush()`` acknowledged is owed.
"""

from __future__ import annotations

import json
import random
import signal
import textwrap
import time
from pathlib import Path

import pytest

from tests.attack.helpers import count, spawn

CHILD = """
import atexit, json, signal, sys, time
# Ctrl-C's handler, as an interactive process has it: a child of a shell's background job (``make
# test &``, some CI runners) inherits SIGINT ignored, and then SIGINT would never reach the host.
signal.signal(signal.SIGINT, signal.default_int_handler)
done = {{"n": 0, "flushed": 0, "wrong": 0}}
def _report():
    with open({report!r}, "w") as fh:
        json.dump(done, fh)
atexit.register(_report)  # registered before agentgym's hook: runs after its flush
import agentgym_runtime as agentgym
agentgym.configure(home={home!r}, schedule_delay_ms=60000, max_export_batch_size=64, max_queue_size=1_000_000)

@agentgym.train_online(name="victim")
def agent(i):
    return i * 3 + 1

print("ready", flush=True)
i = 0
while True:
    if agent(i) != i * 3 + 1:
        done["wrong"] += 1
    done["n"] += 1
    i += 1
    if {flush_every} and i % {flush_every} == 0:
        if agentgym.flush():
            done["flushed"] = i
            print("flushed", i, flush=True)
    if i % 50 == 0:
        print("ack", i, flush=True)
"""


def _attack(tmp_path: Path, sig: signal.Signals, seed: int, flush_every: int = 0) -> tuple[dict[str, int], int, int]:
    rng = random.Random(seed)
    report = tmp_path / "report.json"
    child = spawn(CHILD.format(home=str(tmp_path / "home"), report=str(report), flush_every=flush_every))
    assert child.stdout is not None
    flushed = 0
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read() if child.stderr else ""
        target = rng.randint(1, 8) * 50 + rng.randint(0, 49)  # some hundreds of episodes, mid-batch
        while True:
            line = child.stdout.readline().split()
            if not line:
                break
            if line[0] == "flushed":
                flushed = int(line[1])
            if line[0] == "ack" and int(line[1]) >= target:
                break
        time.sleep(rng.random() * 0.05)  # a random point inside the loop
        child.send_signal(sig)
        rc = child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()
    stored = count(tmp_path / "home" / "traces.duckdb", "episodes")
    acknowledged = json.loads(report.read_text()) if report.exists() else {"n": -1, "flushed": flushed, "wrong": 0}
    acknowledged["flushed"] = max(acknowledged.get("flushed", 0), flushed)
    return acknowledged, stored, rc


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigterm_flushes_every_acknowledged_episode(tmp_path: Path, seed: int) -> None:
    acknowledged, stored, rc = _attack(tmp_path, signal.SIGTERM, seed)
    assert rc == 143  # SystemExit(128 + SIGTERM): what orchestrators expect to see
    assert acknowledged["wrong"] == 0
    assert acknowledged["n"] >= 50
    assert stored - acknowledged["n"] in (0, 1), (acknowledged, stored)


@pytest.mark.parametrize("seed", [4, 5])
def test_sigint_flushes_every_acknowledged_episode(tmp_path: Path, seed: int) -> None:
    acknowledged, stored, rc = _attack(tmp_path, signal.SIGINT, seed)
    assert rc != 0
    assert acknowledged["wrong"] == 0
    assert stored - acknowledged["n"] in (0, 1), (acknowledged, stored)


@pytest.mark.parametrize("seed", [6, 7])
def test_sigkill_keeps_every_flushed_episode(tmp_path: Path, seed: int) -> None:
    acknowledged, stored, rc = _attack(tmp_path, signal.SIGKILL, seed, flush_every=37)
    assert rc == -signal.SIGKILL
    assert acknowledged["flushed"] >= 37
    assert stored >= acknowledged["flushed"], (acknowledged, stored)


def test_host_sigterm_handler_is_kept_and_still_called(tmp_path: Path) -> None:
    """A host that handles SIGTERM itself keeps its handler; its sys.exit still flushes."""
    code = textwrap.dedent(
        f"""
        import os, signal, sys
        calls = []
        def host_handler(signum, frame):
            calls.append(signum)
            print("host handler", flush=True)
            sys.exit(7)
        signal.signal(signal.SIGTERM, host_handler)
        import agentgym_runtime as agentgym
        agentgym.configure(home={str(tmp_path)!r}, schedule_delay_ms=60000)
        @agentgym.train_online(name="victim")
        def agent(i):
            return i
        for i in range(120):
            agent(i)
        assert signal.getsignal(signal.SIGTERM) is host_handler
        os.kill(os.getpid(), signal.SIGTERM)
        """
    )
    child = spawn(code)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 7, err[-2000:]
    assert "host handler" in out
    assert count(tmp_path / "traces.duckdb", "episodes") == 120


def test_ignored_sigterm_stays_ignored(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import os, signal
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        import agentgym_runtime as agentgym
        agentgym.configure(home={str(tmp_path)!r})
        os.kill(os.getpid(), signal.SIGTERM)
        print(signal.getsignal(signal.SIGTERM) is signal.SIG_IGN)
        """
    )
    child = spawn(code)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err[-2000:]
    assert out.strip() == "True"
