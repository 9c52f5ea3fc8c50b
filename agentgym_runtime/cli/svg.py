"""Inline SVG charts for the HTML report: line charts and grouped bar charts.

Why not plotly: a plotly report embeds its 4.6 MB JavaScript bundle in every file; these
charts are a few kilobytes of SVG, render without JavaScript (so a mail client or a
``--dump-dom`` sees them) and need nothing installed beyond the core package.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563")
W, H, PAD_L, PAD_R, PAD_T, PAD_B = 640, 260, 48, 150, 16, 36


def _scale(value: float, low: float, high: float, out_low: float, out_high: float) -> float:
    span = high - low or 1.0
    return out_low + (value - low) / span * (out_high - out_low)


def _frame(title: str, body: list[str], y_low: float, y_high: float, y_fmt: str) -> str:
    ticks = []
    for i in range(5):
        value = y_low + (y_high - y_low) * i / 4
        y = _scale(value, y_low, y_high, H - PAD_B, PAD_T)
        ticks.append(
            f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>'
            f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{y_fmt.format(value)}</text>'
        )
    return (
        f"<figure><figcaption>{escape(title)}</figcaption>"
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
        f'aria-label="{escape(title)}" font-family="sans-serif">{"".join(ticks)}{"".join(body)}</svg></figure>'
    )


def _legend(names: Sequence[str]) -> list[str]:
    return [
        f'<rect x="{W - PAD_R + 12}" y="{PAD_T + 18 * i}" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>'
        f'<text x="{W - PAD_R + 26}" y="{PAD_T + 18 * i + 9}" font-size="11">{escape(name)}</text>'
        for i, name in enumerate(names)
    ]


def line_chart(
    title: str,
    series: dict[str, list[tuple[float, float]]],
    *,
    x_labels: dict[float, str] | None = None,
    y_range: tuple[float, float] | None = None,
    y_fmt: str = "{:.2f}",
) -> str:
    """A line chart of named ``(x, y)`` series (points marked, so one-point series show).

    Example:
        >>> "<polyline" in line_chart("t", {"v1": [(0, 0.5), (1, 0.9)]})
        True
    """
    points = [p for values in series.values() for p in values]
    if not points:
        return f"<figure><figcaption>{escape(title)}</figcaption><p class='empty'>no data yet</p></figure>"
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x_low, x_high = min(xs), max(xs)
    y_low, y_high = y_range or (min(0.0, *ys), max(ys) or 1.0)
    body: list[str] = []
    for i, (name, values) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        coords = [
            (_scale(x, x_low, x_high, PAD_L, W - PAD_R), _scale(y, y_low, y_high, H - PAD_B, PAD_T))
            for x, y in sorted(values)
        ]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        body.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}">'
            f"<title>{escape(name)}</title></polyline>"
        )
        body += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>' for x, y in coords]
    for x, label in (x_labels or {}).items():
        px = _scale(x, x_low, x_high, PAD_L, W - PAD_R)
        body.append(
            f'<text x="{px:.1f}" y="{H - PAD_B + 16}" text-anchor="middle" font-size="11">{escape(label)}</text>'
        )
    return _frame(title, body + _legend(list(series)), y_low, y_high, y_fmt)


def bar_chart(
    title: str, categories: Sequence[str], groups: Mapping[str, Sequence[float]], *, y_fmt: str = "{:.0f}"
) -> str:
    """Grouped bars: one group per category, one bar per named series.

    Example:
        >>> bar_chart("t", ["a", "b"], {"n": [1, 2]}).count("<rect")
        3
    """
    if not categories or not groups:
        return f"<figure><figcaption>{escape(title)}</figcaption><p class='empty'>no data yet</p></figure>"
    top = max((v for values in groups.values() for v in values), default=1.0) or 1.0
    slot = (W - PAD_L - PAD_R) / len(categories)
    width = slot * 0.8 / len(groups)
    body: list[str] = []
    for c, category in enumerate(categories):
        for g, (name, values) in enumerate(groups.items()):
            value = values[c]
            x = PAD_L + c * slot + slot * 0.1 + g * width
            y = _scale(value, 0.0, top, H - PAD_B, PAD_T)
            body.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{H - PAD_B - y:.1f}" '
                f'fill="{PALETTE[g % len(PALETTE)]}"><title>{escape(f"{category} · {name}: {value:g}")}</title></rect>'
            )
        body.append(
            f'<text x="{PAD_L + c * slot + slot / 2:.1f}" y="{H - PAD_B + 16}" text-anchor="middle" '
            f'font-size="11">{escape(category)}</text>'
        )
    return _frame(title, body + _legend(list(groups)), 0.0, top, y_fmt)
