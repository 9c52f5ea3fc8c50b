"""Fresh demo runs per scenario, as a new user runs them, and how often each meets its criteria.

``make demo-matrix`` runs this (not ``make test``: a run takes 5-10 minutes on 2 cores). Each run is
``agentgym demo --json`` in its own process, on a fresh home (the demo model is built inside the
run, so its wall time includes the build), with its own seed. Runs execute one at a time by
default: the criterion is "within 10 minutes on 2 CPU cores", and concurrent runs would share them.

Every finished run is appended to ``--out`` as one JSON line as soon as it ends, so an interrupted
matrix keeps what it measured and ``--summarize`` re-reads it; the markdown table goes to stdout
for ``benchmarks/RESULTS.md``.

    python benchmarks/demo_matrix.py --runs 10                       # all scenarios
    python benchmarks/demo_matrix.py --scenarios code_review --runs 3 --out /tmp/m.jsonl
    python benchmarks/demo_matrix.py --scenarios qa_testing --seeds 7 8 9 --out /tmp/m.jsonl  # the rest
    python benchmarks/demo_matrix.py --summarize benchmarks/demo_matrix.jsonl
    python benchmarks/demo_matrix.py --scenarios customer_support --keep-failed /tmp/failed  # homes of misses
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from _util import machine  # benchmarks/ is sys.path[0] when this script runs

SCENARIOS = ("customer_support", "code_review", "qa_testing")
TARGET = 0.95
WALL_LIMIT_S = 600.0


def run_once(scenario: str, seed: int, minutes: float | None, keep_failed: Path | None = None) -> dict[str, Any]:
    """One fresh demo: its summary's figures, wall time and exit status (never raises on a failed run).

    With ``keep_failed``, the home of a run that did not reach the target is copied there (as
    ``<scenario>-seed<seed>``) before it is deleted: its snapshots, adapters and traces show
    which mistakes each version still made.
    """
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1", "COLUMNS": "120"}
    with tempfile.TemporaryDirectory(prefix=f"demo-{scenario}-") as home:
        command = [sys.executable, "-m", "agentgym_runtime.cli", "demo", "--scenario", scenario]
        command += ["--home", home, "--seed", str(seed), "--json"]
        if minutes is not None:
            command += ["--minutes", str(minutes)]
        start = time.monotonic()
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=(minutes or 10) * 60 + 900)
            code, out, err = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired as exc:
            code, out, err = -9, str(exc.stdout or ""), "timed out"
        wall = time.monotonic() - start
        summary = _last_json(out)
        reached = ((summary or {}).get("success_criteria") or {}).get("tool_reliability") or 0.0
        if keep_failed is not None and reached < TARGET:
            shutil.copytree(home, keep_failed / f"{scenario}-seed{seed}", dirs_exist_ok=True)
    record: dict[str, Any] = {"scenario": scenario, "seed": seed, "exit": code, "wall_s": round(wall, 1)}
    if summary is None:
        record["error"] = (err or out)[-500:]
        return record
    criteria = summary.get("success_criteria") or {}
    promoted = summary.get("promoted_version")
    rows = {row["version"]: row for row in summary.get("versions", [])}
    record.update(
        promoted=promoted,
        v0_reliability=rows.get(0, {}).get("heldout_tool_reliability"),
        reliability=criteria.get("tool_reliability"),
        cost_reduction=criteria.get("cost_reduction"),
        llm_call_reduction=criteria.get("llm_call_reduction"),
        passed=bool(summary.get("passed")),
        stopped=summary.get("stopped"),
        # What the spread comes from: each version's held-out, live and validation figures, when each went
        # live, and what each (not skipped) training run trained on and took.
        versions={
            str(v): {
                "heldout": row.get("heldout_tool_reliability"),
                "live": row.get("live_tool_reliability"),
                "validation": row.get("validation_tool_reliability"),
            }
            for v, row in rows.items()
        },
        promoted_at_s=summary.get("promoted_at_s"),
        runs=[
            {k: r.get(k) for k in ("status", "candidate_version", "episodes", "took_s", "reason")}
            for r in summary.get("training_runs", [])
            if r.get("status") != "skipped"
        ],
        decisions=summary.get("decisions", []),
    )
    return record


def _last_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            return value if isinstance(value, dict) else None
    return None


def summarize(records: list[dict[str, Any]]) -> str:
    """The markdown table of a matrix: per scenario, runs reaching the target in time, and the spread.

    Example:
        >>> rows = [{"scenario": "s", "reliability": 0.96, "wall_s": 300.0, "cost_reduction": 0.2, "exit": 1},
        ...         {"scenario": "s", "reliability": 0.93, "wall_s": 500.0, "cost_reduction": 0.1, "exit": 1}]
        >>> print(summarize(rows).splitlines()[2])
        | s | 2 | 1 of 2 | 93.0% / 94.5% / 96.0% | 300 / 400 / 500 | 10.0% / 15.0% / 20.0% | 0 of 2 |
    """
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by[record["scenario"]].append(record)
    lines = [
        f"| scenario | runs | >= {TARGET:.0%} held-out within {WALL_LIMIT_S / 60:.0f} min | held-out reliability "
        "min / median / max | wall s min / median / max | bill reduction min / median / max | every criterion |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario, runs in by.items():
        hits = sum(1 for r in runs if (r.get("reliability") or 0.0) >= TARGET and r["wall_s"] <= WALL_LIMIT_S)
        lines.append(
            f"| {scenario} | {len(runs)} | {hits} of {len(runs)} | "
            f"{_spread([r.get('reliability') for r in runs], '{:.1%}')} | "
            f"{_spread([r['wall_s'] for r in runs], '{:.0f}')} | "
            f"{_spread([r.get('cost_reduction') for r in runs], '{:.1%}')} | "
            f"{sum(1 for r in runs if r.get('exit') == 0)} of {len(runs)} |"
        )
    return "\n".join(lines)


def runs_table(records: list[dict[str, Any]]) -> str:
    """One markdown row per run: what the live version reached, when, after which training, in what time.

    Example:
        >>> row = {"scenario": "s", "seed": 3, "v0_reliability": 0.64, "reliability": 0.99, "promoted": 2,
        ...        "promoted_at_s": {"1": 290.0, "2": 470.5}, "wall_s": 512.0, "cost_reduction": 0.25,
        ...        "stopped": "time budget spent", "load_average": 1.2,
        ...        "runs": [{"status": "succeeded", "candidate_version": 1, "episodes": 300, "took_s": 150.0},
        ...                 {"status": "succeeded", "candidate_version": 2, "episodes": 600, "took_s": 80.0}]}
        >>> print(runs_table([row]).splitlines()[2])
        | s | 3 | 64.0% | **99.0%** (v2) | v1 290 s, v2 470 s | 300 eps 150 s; 600 eps 80 s | time budget spent | 512 | 25.0% | 1.2 |
    """
    lines = [
        "| scenario | seed | v0 held-out | live version held-out | went live at | training runs (snapshot, time) "
        "| stopped | wall s | bill reduction | load |",
        "|---|---:|---:|---:|---|---|---|---:|---:|---:|",
    ]
    for r in records:
        reliability = r.get("reliability")
        shown = "n/a" if reliability is None else f"{reliability:.1%}"
        if reliability is not None and reliability >= TARGET and r["wall_s"] <= WALL_LIMIT_S:
            shown = f"**{shown}**"
        live_at = ", ".join(f"v{v} {float(t):.0f} s" for v, t in (r.get("promoted_at_s") or {}).items()) or "-"
        trained = "; ".join(
            f"{run.get('episodes')} eps {float(run['took_s']):.0f} s"
            + ("" if run.get("status") == "succeeded" else f" ({run.get('status')})")
            for run in r.get("runs", [])
            if run.get("took_s") is not None
        )
        cost = r.get("cost_reduction")
        lines.append(
            f"| {r['scenario']} | {r['seed']} | "
            f"{'n/a' if r.get('v0_reliability') is None else format(r['v0_reliability'], '.1%')} | "
            f"{shown} (v{r.get('promoted') or 0}) | {live_at} | {trained or '-'} | {r.get('stopped') or r.get('error', '')} | "
            f"{r['wall_s']:.0f} | {'n/a' if cost is None else format(cost, '.1%')} | {r.get('load_average', '')} |"
        )
    return "\n".join(lines)


def _spread(values: list[Any], fmt: str) -> str:
    known = sorted(float(v) for v in values if v is not None)
    if not known:
        return "n/a"
    return " / ".join(fmt.format(v) for v in (known[0], statistics.median(known), known[-1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    parser.add_argument("--runs", type=int, default=10, help="fresh runs per scenario (seeds 0..runs-1)")
    parser.add_argument(
        "--seeds", type=int, nargs="+", help="these seeds instead of 0..runs-1 (finish an interrupted matrix)"
    )
    parser.add_argument("--minutes", type=float, default=None, help="the demo's whole-run budget (default: its own)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "demo_matrix.jsonl")
    parser.add_argument("--summarize", type=Path, help="only print the table of an existing JSON-lines file")
    parser.add_argument("--keep-failed", type=Path, help="copy the home of each run that missed the target here")
    args = parser.parse_args(argv)
    if args.summarize:
        records = [json.loads(line) for line in args.summarize.read_text().splitlines() if line.strip()]
        print(summarize(records))
        print()
        print(runs_table(records))
        return 0
    print(f"machine: {machine()}; load average at start {os.getloadavg()[0]:.1f}", flush=True)
    records = []
    for scenario in args.scenarios:
        for seed in args.seeds if args.seeds is not None else range(args.runs):
            record = run_once(scenario, seed, args.minutes, args.keep_failed)
            record["load_average"] = round(os.getloadavg()[0], 1)
            records.append(record)
            with args.out.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
            print(json.dumps(record), flush=True)
    print(summarize(records))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
