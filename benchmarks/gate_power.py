"""How often the gate promotes or rolls back a canary, by its confidence, with the router's repeated looks.

Simulates the canary the demo's second round gets: both arms gain ``--step`` tool calls between
looks (the router evaluates every 10 episodes, ~7 canary tool calls at half the traffic), each call
succeeding with the arm's true reliability, and the product's own :class:`Gate` decides at every
look (group-sequential, O'Brien-Fleming spending over ``max_tool_calls``), until it promotes, rolls
back, or the canary tool calls available before the demo's budget ends run out (``hold``).

    python benchmarks/gate_power.py                        # the table in benchmarks/RESULTS.md
    python benchmarks/gate_power.py --runs 1000 --available 150 250
    python benchmarks/gate_power.py --confidences 0.95 --rollback nominal sequential
    python benchmarks/gate_power.py --confidences 0.95 --promotion superiority non_inferiority
    python benchmarks/gate_power.py --confidences 0.95 --promotion non_inferiority --undecided rollback promote \
        --pairs high

Not part of ``make bench``: it measures decisions, not speed.
"""

from __future__ import annotations

import argparse
import itertools
import random
from collections import Counter

from agentgym_runtime.policy.gate import ArmStats, Gate, GateConfig, Look

#: (candidate, live) true tool reliabilities: a clearly better second round (customer_support seed 1
#: at 43531b3: 97.7% vs 93.3% held-out), a modestly better one, an equal one, a slightly worse one,
#: and one two points worse (what ``promotion="non_inferiority"`` at ``margin=0.02`` must keep out).
PAIRS = ((0.977, 0.933), (0.96, 0.925), (0.93, 0.93), (0.92, 0.935), (0.93, 0.95))

#: The same questions where a later round's canary is asked them: both versions near 97-99% (a
#: customer_support run's v2 at 97.0% held-out, 98.0% live, against v1's 98.8% live was rolled back
#: as "not shown within 2 points" at the final look), down to a candidate two and four points worse.
HIGH_PAIRS = ((0.98, 0.98), (0.985, 0.97), (0.97, 0.98), (0.96, 0.98), (0.94, 0.98))


def simulate(
    candidate: float, live: float, config: GateConfig, available: int, runs: int, step: int
) -> tuple[Counter[str], float | None]:
    """Outcome shares over ``runs`` canaries and the median canary tool calls at a decision."""
    gate = Gate(config)
    outcomes: Counter[str] = Counter()
    decided_at: list[int] = []
    for run in range(runs):
        rng = random.Random(run)
        calls = ok_candidate = ok_live = 0
        looks: list[Look] = []
        action = "hold"
        while calls < available:
            calls += step
            ok_candidate += sum(rng.random() < candidate for _ in range(step))
            ok_live += sum(rng.random() < live for _ in range(step))
            decision = gate.decide(ArmStats(2, calls, calls, ok_candidate), ArmStats(1, calls, calls, ok_live), looks)
            if decision.look is not None:
                looks.append(decision.look)
            if decision.action != "hold":
                action = decision.action
                decided_at.append(calls)
                break
        outcomes[action] += 1
    median = sorted(decided_at)[len(decided_at) // 2] if decided_at else None
    return outcomes, median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--step", type=int, default=7, help="tool calls per arm between looks")
    parser.add_argument("--min-tool-calls", type=int, default=60, help="the demo's gate_min_tool_calls")
    parser.add_argument("--confidences", type=float, nargs="+", default=[0.99, 0.95])
    parser.add_argument("--available", type=int, nargs="+", default=[150, 250], help="canary tool calls in time")
    parser.add_argument(
        "--rollback", nargs="+", choices=["sequential", "nominal"], default=["sequential"], help="GateConfig.rollback"
    )
    parser.add_argument(
        "--promotion",
        nargs="+",
        choices=["superiority", "non_inferiority"],
        default=["superiority"],
        help="GateConfig.promotion",
    )
    parser.add_argument("--margin", type=float, default=0.02, help="GateConfig.margin (non_inferiority)")
    parser.add_argument(
        "--undecided", nargs="+", choices=["rollback", "promote"], default=["rollback"], help="GateConfig.undecided"
    )
    parser.add_argument(
        "--pairs", choices=["default", "high"], default="default", help="PAIRS, or HIGH_PAIRS (later rounds)"
    )
    args = parser.parse_args()
    print(
        "| candidate vs live | gate confidence | rollback test | promotion | canary tool calls in time "
        "| at the final look | promoted | rolled back | undecided | median calls at a decision |"
    )
    print("|---|---:|---|---|---:|---|---:|---:|---:|---:|")
    pairs = HIGH_PAIRS if args.pairs == "high" else PAIRS
    for candidate, live in pairs:
        for confidence, rollback, promotion, undecided in itertools.product(
            args.confidences, args.rollback, args.promotion, args.undecided
        ):
            config = GateConfig(
                confidence=confidence,
                min_tool_calls=args.min_tool_calls,
                min_episodes=20,
                min_rewarded=20,
                rollback=rollback,
                promotion=promotion,
                margin=args.margin,
                undecided=undecided,
            )
            label = promotion if promotion == "superiority" else f"not worse by {100 * args.margin:g} points"
            for available in args.available:
                outcomes, median = simulate(candidate, live, config, available, args.runs, args.step)
                shares = [f"{outcomes[a] / args.runs:.1%}" for a in ("promote", "rollback", "hold")]
                print(
                    f"| {candidate:.1%} vs {live:.1%} | {confidence:.2f} | {rollback} | {label} | {available} | {undecided} | "
                    + " | ".join(shares)
                    + f" | {median if median is not None else '-'} |"
                )


if __name__ == "__main__":
    main()
