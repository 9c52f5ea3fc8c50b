"""How times, durations, numbers and shares read in every command, the dashboard and the report.

One place so that ``12.5%``, ``3m 05s`` and ``2026-12-05 17:20:03`` look the same wherever
they appear. Only the standard library is imported here: ``agentgym status`` uses this module
on its fast path, before Rich or Typer are loaded.

Example:
    >>> fmt_percent(0.6667), fmt_duration(185), fmt_number(1234567)
    ('66.7%', '3m 05s', '1,234,567')
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

TYPE_CHECKING = False  # not typing's: `agentgym status` starts without importing typing
if TYPE_CHECKING:
    from typing import Any

#: What every formatter prints for a missing value.
MISSING = "—"


def _as_datetime(value: float | datetime) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(float(value), tz=UTC)


def fmt_time(value: float | datetime | None) -> str:
    """A point in time in the local zone, to the second (``2026-12-05 17:20:03``).

    Example:
        >>> fmt_time(None)
        '—'
    """
    if value is None:
        return MISSING
    return _as_datetime(value).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def fmt_clock(value: float | datetime | None) -> str:
    """A time of day in the local zone (``17:20:03``), for charts' axes and live views.

    Example:
        >>> len(fmt_clock(0.0))
        8
    """
    if value is None:
        return MISSING
    return _as_datetime(value).astimezone().strftime("%H:%M:%S")


def fmt_duration(seconds: float | None) -> str:
    """A duration: ``850 ms``, ``12.3 s``, ``3m 05s``, ``2h 04m``, ``3d 04h``.

    Example:
        >>> [fmt_duration(s) for s in (0.85, 12.34, 185, 7440, 273600)]
        ['850 ms', '12.3 s', '3m 05s', '2h 04m', '3d 04h']
    """
    if seconds is None or not math.isfinite(seconds):
        return MISSING
    if seconds < 0:
        return "-" + fmt_duration(-seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600:02d}h"


def fmt_ago(value: float | datetime | None, now: float) -> str:
    """How long before ``now`` (Unix seconds) ``value`` was: ``3m 05s ago``.

    Example:
        >>> fmt_ago(100.0, 160.0)
        '1m 00s ago'
    """
    if value is None:
        return MISSING
    return f"{fmt_duration(now - _as_datetime(value).timestamp())} ago"


def fmt_number(value: float | None, digits: int = 0) -> str:
    """A count with thousands separators, or a float with ``digits`` decimals.

    Example:
        >>> fmt_number(1234567), fmt_number(0.51234, 3), fmt_number(None)
        ('1,234,567', '0.512', '—')
    """
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    if digits == 0:
        return f"{round(value):,}"
    return f"{value:,.{digits}f}"


def fmt_percent(share: float | None, digits: int = 1) -> str:
    """A share (0..1) as a percentage.

    Example:
        >>> fmt_percent(0.5), fmt_percent(1.0, 0), fmt_percent(None)
        ('50.0%', '100%', '—')
    """
    if share is None or not math.isfinite(share):
        return MISSING
    return f"{share * 100:.{digits}f}%"


def fmt_signed(value: float | None, digits: int = 2) -> str:
    """A statistic with its sign (``+1.96``), for z values and differences.

    Example:
        >>> fmt_signed(1.959964), fmt_signed(-0.5)
        ('+1.96', '-0.50')
    """
    if value is None or not math.isfinite(value):
        return MISSING if value is None or math.isnan(value) else ("+∞" if value > 0 else "-∞")
    return f"{value:+.{digits}f}"


def fmt_probability(value: float | None) -> str:
    """A probability or an alpha, to two significant digits (``6.3e-20``, ``0.05``), as the gate writes it.

    Example:
        >>> fmt_probability(6.3e-20), fmt_probability(0.05), fmt_probability(None)
        ('6.3e-20', '0.05', '—')
    """
    if value is None or not math.isfinite(value):
        return MISSING
    return f"{value:.2g}"


def fmt_cost(value: float | None) -> str:
    """Money in the price table's currency, to four significant decimals for cents and below.

    Example:
        >>> fmt_cost(0.000123), fmt_cost(12.5)
        ('$0.000123', '$12.50')
    """
    if value is None or not math.isfinite(value):
        return MISSING
    return f"${value:.2f}" if abs(value) >= 1 else f"${value:.3g}" if value else "$0"


def fmt_eta(fraction: float | None, elapsed: float) -> str:
    """The remaining time of a job ``fraction`` done after ``elapsed`` seconds (linear estimate).

    Example:
        >>> fmt_eta(0.25, 60), fmt_eta(0.0, 60), fmt_eta(1.0, 60)
        ('3m 00s', '—', '0 ms')
    """
    if fraction is None or fraction <= 0 or elapsed < 0:
        return MISSING
    return fmt_duration(elapsed * (1.0 - min(fraction, 1.0)) / fraction)


def fmt_version(version: int | None) -> str:
    """A policy version as users type it (``v3``).

    Example:
        >>> fmt_version(3), fmt_version(None)
        ('v3', '—')
    """
    return MISSING if version is None else f"v{version}"


def json_default(value: Any) -> Any:
    """``json.dumps(default=...)`` for ``--json`` output: datetimes as ISO 8601, the rest as text.

    Example:
        >>> json_default(datetime(2026, 1, 1, tzinfo=UTC))
        '2026-01-01T00:00:00+00:00'
    """
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)
