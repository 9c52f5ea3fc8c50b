"""Replay a kept demo run's first training job with other trainer options, and measure both on task draws.

``demo_matrix.py --keep-failed DIR`` keeps the home of every run that missed: its snapshots, the
training jobs' specs and the versions it registered. This script reruns the first job of one such
home on the very snapshot it trained on (the same spec, the same seed: a job is deterministic on a
CPU with one thread), once per set of overrides, and measures the kept v1 and each replay with the
demo's offline evaluator on task draws of the held-out split. Pick draws that are neither the
demo's held-out table (world ``seed + 7``) nor its validation set (``seed + 13``), so that what
the replays decide is not tuned on what the demo reports.

Example (what ``benchmarks/RESULTS.md`` reports for the learning-rate schedule)::

    python benchmarks/replay_first_job.py /tmp/failed/customer_support-seed0 \\
        --set lr_schedule='"constant"' --set lr_schedule='"linear"' --draws 4242 5353

Each ``--set`` is one replay (``key=json`` pairs joined by commas: ``steps=160,lr_schedule="linear"``).
Takes ~3-4 minutes per replay on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent.parent))


def first_job(home: Path) -> Path:
    """The directory of the first training job that produced a result (the v1 job)."""
    runs = sorted(p for p in (home / "training").glob("*/*") if (p / "result.json").is_file())
    for run in runs:
        metrics = json.loads((run / "result.json").read_text())["metrics"]
        if metrics.get("continued_from") is None:
            return run
    raise SystemExit(f"{home} holds no finished first training job")


def replay(home: Path, run: Path, overrides: dict[str, Any], out: Path) -> Path:
    """Rerun ``run``'s spec with ``overrides`` into ``out``; returns the adapter directory."""
    spec = json.loads((run / "spec.json").read_text())
    old_home = spec["snapshot_dir"].split("/snapshots/")[0]
    spec["snapshot_dir"] = spec["snapshot_dir"].replace(old_home, str(home))
    spec["options"]["model_path"] = spec["options"]["model_path"].replace(old_home, str(home))
    spec["options"].update(overrides)
    spec["output_dir"] = str(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.json").write_text(json.dumps(spec, indent=1))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with (out / "job.out").open("w") as log:
        code = subprocess.call(
            [sys.executable, "-m", "agentgym_runtime.trainers.job", "--spec", str(out / "spec.json")],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    if code != 0:
        raise SystemExit(f"the replay with {overrides} failed (exit {code}); see {out / 'job.out'}")
    return out / "adapter"


def measure(home: Path, spec: dict[str, Any], adapter: Path | None, draws: list[int], tasks: int) -> list[float]:
    """Tool reliability (%) of ``adapter`` (``None``: the base model) on each draw, with ``spec``'s model."""
    import torch

    from agentgym_runtime.demo.model import evaluate_model, load_or_build_demo_model
    from agentgym_runtime.scenarios import get_scenario

    torch.set_num_threads(1)
    scenario = get_scenario(spec["scenario"])
    model = load_or_build_demo_model(scenario, home, build_seed(home, spec["scenario"]))
    return [
        round(
            100
            * evaluate_model(
                model, scenario, adapter=adapter, tasks=scenario.tasks("heldout", tasks, seed=draw)
            ).tool_reliability,
            1,
        )
        for draw in draws
    ]


def build_seed(home: Path, scenario: str) -> int:
    """The seed the home's demo model was built with (the demo's ``--seed``).

    Not the job spec's ``seed``, which is the trainer's: a model loaded with another seed than its
    build's is rebuilt in place, and the kept adapters and the replays would then run on a base
    model they were not trained on.
    """
    from agentgym_runtime.demo.model.tiny import BUILD_FILE, model_dir

    build = model_dir(scenario, home) / BUILD_FILE
    if not build.is_file():
        raise SystemExit(f"{home} holds no built demo model for {scenario} ({build} is missing)")
    return int(json.loads(build.read_text())["seed"])


def parse_overrides(text: str) -> dict[str, Any]:
    """``key=json,key=json`` → a dict (a bare word that is not JSON stays a string)."""
    overrides: dict[str, Any] = {}
    for pair in filter(None, text.split(",")):
        key, _, value = pair.partition("=")
        try:
            overrides[key.strip()] = json.loads(value)
        except ValueError:
            overrides[key.strip()] = value
    return overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("home", type=Path, help="a home kept by demo_matrix.py --keep-failed")
    parser.add_argument("--set", action="append", default=[], help="one replay's overrides: key=json,...")
    parser.add_argument("--draws", type=int, nargs="+", default=[4242, 5353], help="world seeds of the task draws")
    parser.add_argument("--tasks", type=int, default=300, help="tasks per draw")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/.replays"), help="where the replays go")
    args = parser.parse_args()
    home = args.home.resolve()
    run = first_job(home)
    spec = json.loads((run / "spec.json").read_text())
    kept = run / json.loads((run / "result.json").read_text())["adapter"]
    rows = [("kept v1", measure(home, spec, kept, args.draws, args.tasks))]
    for index, text in enumerate(args.set):
        adapter = replay(home, run, parse_overrides(text), args.out / f"{home.name}-{index}")
        rows.append((text, measure(home, spec, adapter, args.draws, args.tasks)))
    print(f"{home.name}: first job {run.name}, draws {args.draws} ({args.tasks} tasks each)")
    for label, values in rows:
        print(f"  {label:40s} {values}  mean {sum(values) / len(values):.1f}")


if __name__ == "__main__":
    main()
