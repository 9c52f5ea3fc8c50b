"""``agentgym report``: one self-contained HTML file with the home's charts.

Opens with no network (inline CSS and SVG, no scripts; see :mod:`agentgym_runtime.cli.svg`
for why SVG rather than plotly). Sections: reliability per version over time, failures by tool
and outcome, the gate's looks and decisions, training curves (reward per round, held-out
before/after), cost per episode per version (tokens times a price table), and the demo's
before/after when the home holds a demo summary.
"""

from __future__ import annotations

from collections import defaultdict
from html import escape
from pathlib import Path
from typing import Any

from agentgym_runtime.cli.format import fmt_clock, fmt_cost, fmt_percent, fmt_signed, fmt_time
from agentgym_runtime.cli.sources import Snapshot
from agentgym_runtime.cli.svg import bar_chart, line_chart
from agentgym_runtime.collectors.pricing import TokenPrices

_CSS = (
    "body{font-family:sans-serif;margin:2rem;max-width:960px;color:#111}"
    "section{margin-bottom:2rem}figure{margin:0 0 1rem}figcaption{font-weight:bold;margin-bottom:.3rem}"
    "table{border-collapse:collapse;font-size:.9rem}td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left}"
    ".empty{color:#888}"
)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "<p class='empty'>nothing yet</p>"
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _reliability(snap: Snapshot) -> str:
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    labels: dict[float, str] = {}
    for row in snap.reliability:
        series[f"{row['agent']} v{row['version']}"].append((float(row["bucket"]), row["successes"] / row["calls"]))
        labels[float(row["bucket"])] = fmt_clock(float(row["bucket"]))[:5]
    return line_chart(
        "Tool reliability per policy version (hourly)", dict(series), x_labels=labels, y_range=(0, 1), y_fmt="{:.0%}"
    )


def _failures(snap: Snapshot) -> str:
    tools = sorted({str(f["tool"]) for f in snap.failures})
    outcomes = sorted({str(f["outcome"]) for f in snap.failures})
    groups = {
        o: [float(sum(f["calls"] for f in snap.failures if f["tool"] == t and f["outcome"] == o)) for t in tools]
        for o in outcomes
    }
    rows = [
        [str(f["agent"]), str(f["tool"]), str(f["outcome"]), str(f["calls"]), str(f["example_arguments"] or "")[:120]]
        for f in snap.failures[:10]
    ]
    return bar_chart("Failed tool calls by tool and outcome", tools, groups, y_fmt="{:.1f}") + _table(
        ["agent", "tool", "outcome", "calls", "example arguments"], rows
    )


def _gate(snap: Snapshot) -> str:
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for look in snap.looks:
        key = f"{look['agent']} v{look['version']}"
        series[f"{key} z"].append((float(look["tool_calls"]), float(look["z"])))
        if look.get("boundary_z") is not None:
            series[f"{key} boundary"].append((float(look["tool_calls"]), float(look["boundary_z"])))
    rows = [
        [
            fmt_time(d["at"]),
            str(d["agent"]),
            f"v{d['version']}",
            f"{d['from_status']} → {d['to_status']}",
            str(d["actor"]),
            str(d["reason"] or ""),
        ]
        for d in snap.decisions[-15:]
    ]
    chart = line_chart("Gate looks: reliability z against the promotion boundary (by canary tool calls)", dict(series))
    return chart + _table(["when", "agent", "version", "change", "by", "why"], rows)


def _training(snap: Snapshot) -> str:
    curves = {
        f"{r['agent']} {r['run_id'][:8]}": [(float(i + 1), v) for i, v in enumerate(r["rewards"])]
        for r in snap.runs
        if r.get("rewards")
    }
    done = [r for r in snap.runs if isinstance(r.get("metrics"), dict) and "heldout_reward_before" in r["metrics"]]
    names = [f"{r['agent']} {r['run_id'][:8]}" for r in done]
    heldout = bar_chart(
        "Held-out reward before / after each training run",
        names,
        {
            "before": [float(r["metrics"]["heldout_reward_before"] or 0.0) for r in done],
            "after": [float(r["metrics"].get("heldout_reward_after") or 0.0) for r in done],
        },
        y_fmt="{:.2f}",
    )
    rows = [
        [
            str(r["run_id"]),
            str(r["agent"]),
            str(r["trainer"]),
            str(r["status"]),
            "" if r.get("candidate_version") is None else f"v{r['candidate_version']}",
        ]
        for r in snap.runs
    ]
    return (
        line_chart("Training reward per round", curves)
        + heldout
        + _table(["run", "agent", "trainer", "status", "candidate"], rows)
    )


def _costs(snap: Snapshot, prices: TokenPrices) -> str:
    names = [f"{c['agent']} v{c['version']}" for c in snap.costs]
    values = [float(c["cost_per_episode_usd"]) for c in snap.costs]
    rows = [
        [
            name,
            f"{c['episodes']}",
            f"{float(c['llm_calls_per_episode']):.2f}",
            f"{float(c['input_tokens_per_episode']):.0f}",
            f"{float(c['output_tokens_per_episode']):.0f}",
            fmt_cost(v),
        ]
        for name, c, v in zip(names, snap.costs, values, strict=True)
    ]
    note = (
        f"<p>The provider's bill per episode, each LLM call at its model's price: {escape(prices.describe())} "
        "(set <code>token_prices</code>, or --price-in / --price-out for every model).</p>"
    )
    return (
        bar_chart("Cost per episode per policy version", names, {"cost": values}, y_fmt="{:.2g}")
        + note
        + _table(
            ["version", "episodes", "LLM calls/episode", "input tokens/ep.", "output tokens/ep.", "cost/episode"],
            rows,
        )
    )


def _demo(demo: dict[str, Any] | None) -> str:
    if not demo:
        return "<p class='empty'>no demo summary in this home (agentgym demo --report writes one)</p>"
    versions = demo.get("versions", [])
    names = [f"v{v['version']}" for v in versions]
    chart = bar_chart(
        f"Demo before / after on held-out tasks ({demo.get('scenario')})",
        names,
        {
            "tool reliability": [float(v["heldout_tool_reliability"]) for v in versions],
            "task success": [float(v["heldout_task_success"]) for v in versions],
        },
        y_fmt="{:.0%}",
    )
    improvement = demo.get("improvement") or {}
    rows = [
        [f"v{v['version']}", fmt_percent(v["heldout_tool_reliability"]), fmt_percent(v["heldout_task_success"])]
        for v in versions
    ]
    test = (
        f"<p>{escape(str(improvement.get('test')))}: z = {fmt_signed(improvement.get('z'))}</p>" if improvement else ""
    )
    return chart + test + _table(["version", "held-out tool reliability", "task success"], rows)


def build_report(snap: Snapshot, prices: TokenPrices | None = None) -> str:
    """The report's HTML for ``snap``.

    Example:
        >>> "<h1>" in build_report(Snapshot(label="home", taken_at=0.0))
        True
    """
    prices = prices or TokenPrices()
    sections = [
        ("reliability", "Reliability", _reliability(snap)),
        ("failures", "Failures", _failures(snap)),
        ("gate", "Canary and gate", _gate(snap)),
        ("training", "Training", _training(snap)),
        ("costs", "Cost", _costs(snap, prices)),
        ("demo", "Demo before / after", _demo(snap.demo)),
    ]
    problems = "".join(f"<p class='empty'>{escape(p)}</p>" for p in snap.problems)
    body = "".join(f'<section id="{key}"><h2>{title}</h2>{html}</section>' for key, title, html in sections)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>agentgym report · {escape(snap.label)}</title><style>{_CSS}</style></head><body>"
        f"<h1>agentgym report</h1><p>{escape(snap.label)} · {fmt_time(snap.taken_at)}</p>{problems}{body}</body></html>"
    )


def write_report(home: Path, out: Path, prices: TokenPrices | None = None, store_path: str | None = None) -> Path:
    """Read ``home`` and write its report to ``out`` (atomically); return ``out``."""
    from agentgym_runtime.cli.sources import HomeSource
    from agentgym_runtime.recording.files import atomic_write_text

    html = build_report(HomeSource(home, store_path, prices).read(), prices)
    atomic_write_text(out, html, mode=0o644)
    return out
