"""The remote side of every remote backend: runs the job, enforces a deadline, writes the manifest.

``python -m agentgym_runtime.trainers.backends.runner --spec out/spec.json --deadline <epoch>``
starts the training job (:mod:`agentgym_runtime.trainers.job`) in a process group of its
own, records both process ids in ``runner.json`` (the backend kills both groups on cancel),
and waits. When the job ends it writes the sha256 manifest of ``output_dir``
(:mod:`.manifest`) and then, last, ``exit_code``: the file the serving side waits for.

The deadline is the machine's own safety net for when the serving process is gone (killed,
crashed, disconnected): past it the runner kills the job's group, writes ``error.json``,
exits :data:`~.base.EXIT_DEADLINE` and runs ``--on-deadline`` (for a rented machine: the
command that stops it), so nothing runs, or bills, forever.

``--pack`` (Ray) also writes ``outputs.tar.gz`` and prints it base64-encoded between markers on
stdout, because the Ray Jobs API brings logs back but no files.

Example:
    >>> parse_args(["--spec", "out/spec.json", "--deadline", "0"]).deadline
    0.0
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from agentgym_runtime.recording.files import atomic_write_json, atomic_write_text
from agentgym_runtime.trainers.backends.base import EXIT_DEADLINE, JOB_MODULE
from agentgym_runtime.trainers.backends.manifest import write_manifest

PACK_BEGIN = "----- agentgym outputs begin -----"
PACK_END = "----- agentgym outputs end -----"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The runner's command line."""
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}")
    parser.add_argument("--spec", required=True)
    parser.add_argument("--deadline", type=float, required=True, help="epoch seconds; the job is killed after")
    parser.add_argument("--on-deadline", default=None, help="shell command run after a deadline kill")
    parser.add_argument("--pack", action="store_true", help="print the outputs as base64 tar.gz on stdout")
    return parser.parse_args(argv)


def _killpg(pgid: int, signum: signal.Signals) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def pack_outputs(output_dir: Path) -> str:
    """The output directory as base64 tar.gz text (what ``--pack`` prints)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in sorted(output_dir.rglob("*")):
            if path.is_file() and not path.is_symlink() and path.name not in {"outputs.tar.gz"}:
                archive.add(path, arcname=path.relative_to(output_dir).as_posix(), recursive=False)
    return base64.b64encode(buffer.getvalue()).decode()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job under the deadline; returns (and writes to ``exit_code``) its exit code."""
    args = parse_args(argv)
    spec_path = Path(args.spec).resolve()
    output_dir = spec_path.parent
    job = subprocess.Popen(
        [sys.executable, "-m", JOB_MODULE, "--spec", str(spec_path)],
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own group: the deadline kills it without killing us
    )
    atomic_write_json(
        output_dir / "runner.json",
        {"runner_pid": os.getpid(), "runner_pgid": os.getpgid(0), "job_pgid": job.pid, "deadline": args.deadline},
    )

    def stop(signum: int, frame: FrameType | None) -> None:
        _killpg(job.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    code: int | None = None
    deadline_hit = False
    while code is None:
        try:
            code = job.wait(timeout=max(0.05, min(1.0, args.deadline - time.time())))
        except subprocess.TimeoutExpired:
            if time.time() >= args.deadline:
                deadline_hit = True
                _killpg(job.pid, signal.SIGTERM)
                try:
                    job.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
                _killpg(job.pid, signal.SIGKILL)
                code = job.wait()
    _killpg(job.pid, signal.SIGKILL)  # the trainer's own children go too
    if deadline_hit:
        code = EXIT_DEADLINE
        atomic_write_json(
            output_dir / "error.json",
            {"kind": "deadline", "type": "DeadlineExceeded", "message": "the job passed its deadline and was killed"},
        )
        print(f"[runner] deadline {args.deadline:.0f} passed: job killed", flush=True)
    write_manifest(output_dir)
    if args.pack:
        print(PACK_BEGIN, pack_outputs(output_dir), PACK_END, f"[runner] exit code {code}", sep="\n", flush=True)
    atomic_write_text(output_dir / "exit_code", str(code))
    if deadline_hit and args.on_deadline:
        print(f"[runner] running the deadline command: {args.on_deadline}", flush=True)
        subprocess.run(args.on_deadline, shell=True, check=False, stdin=subprocess.DEVNULL)
    return code


if __name__ == "__main__":  # pragma: no cover - exercised through remote processes
    sys.exit(main())
