"""What an episode costs on the provider's bill: tokens times a price table the user sets.

Providers bill input and output tokens at different prices per model, so "cost" is the bill, not
a token count: a version that writes shorter answers saves more than one that trims its prompt.
The table maps model names (exact, or ``fnmatch`` patterns such as ``"gpt-4o*"``) to USD per
million ``(input, output)`` tokens; ``"*"`` prices every model the table does not name. It comes
from ``Settings.token_prices`` (``AGENTGYM_TOKEN_PRICES`` as JSON), and ``agentgym report``'s
``--price-in/--price-out`` set its ``"*"`` entry.

Example:
    >>> prices = TokenPrices({"*": (0.15, 0.60), "big-model": (2.5, 10.0)})
    >>> prices.bill("big-model", 1_000, 200), prices.bill("small", 1_000, 200)
    (0.0045, 0.00027)
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: The price of any model a table does not name, in USD per million (input, output) tokens: a small
#: hosted model's list price, so that the demo's figures read as a user's bill would.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {"*": (0.15, 0.60)}


def check_prices(table: Mapping[str, object]) -> dict[str, tuple[float, float]]:
    """``table`` as ``{model: (input, output)}`` with finite, non-negative prices, or a ``ValueError`` naming the entry.

    Example:
        >>> check_prices({"m": [1, 2]})
        {'m': (1.0, 2.0)}
    """
    checked: dict[str, tuple[float, float]] = {}
    for model, pair in table.items():
        if not isinstance(model, str) or not model:
            raise ValueError(f"token price keys must be model names or patterns, got {model!r}")
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise ValueError(f"token price of {model!r} must be [input, output] USD per million tokens, got {pair!r}")
        try:
            values = (float(pair[0]), float(pair[1]))
        except (TypeError, ValueError):
            raise ValueError(f"token price of {model!r} must be two numbers, got {pair!r}") from None
        if not all(math.isfinite(v) and v >= 0 for v in values):
            raise ValueError(f"token price of {model!r} must be finite and >= 0, got {pair!r}")
        checked[model] = values
    return checked


@dataclass(frozen=True)
class TokenPrices:
    """A price table: USD per million ``(input, output)`` tokens by model name or pattern.

    Example:
        >>> TokenPrices({"gpt-4o*": (2.5, 10.0)}).price("gpt-4o-mini")
        (2.5, 10.0)
    """

    table: Mapping[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_PRICES))

    def __post_init__(self) -> None:
        object.__setattr__(self, "table", check_prices(self.table))

    def price(self, model: str | None) -> tuple[float, float]:
        """The (input, output) price of ``model``: its own entry, else the first matching pattern, else ``"*"``.

        Raises:
            KeyError: Nothing in the table prices ``model`` (no pattern matches and no ``"*"``).
        """
        name = model or ""
        if name in self.table:
            return self.table[name]
        for pattern, pair in self.table.items():
            if pattern != "*" and fnmatch.fnmatchcase(name, pattern):
                return pair
        if "*" in self.table:
            return self.table["*"]
        raise KeyError(f"no token price for model {model!r}; add it (or '*') to token_prices")

    def bill(self, model: str | None, input_tokens: float, output_tokens: float) -> float:
        """What ``input_tokens`` and ``output_tokens`` of ``model`` cost, in USD."""
        price_in, price_out = self.price(model)
        return (input_tokens * price_in + output_tokens * price_out) / 1_000_000

    def describe(self) -> str:
        """The table in one line, for reports: ``"*: $0.15 in / $0.60 out per 1M tokens"``."""
        return "; ".join(f"{m}: ${i:g} in / ${o:g} out per 1M tokens" for m, (i, o) in self.table.items())


def bill_by_version(store: Any, prices: TokenPrices, agent: str | None = None) -> list[dict[str, Any]]:
    """Per agent and policy version: episodes, LLM calls and tokens per episode, and the bill per episode.

    Each LLM call is billed at its own model's price (``response_model``, else ``request_model``),
    so a version that moves calls to a cheaper model shows it. ``store`` is a
    :class:`~agentgym_runtime.collectors.store.TraceStore` (anything with ``query_dicts``).

    Example:
        >>> # bill_by_version(runtime.store, TokenPrices())[0]["cost_per_episode_usd"]
    """
    where, params = ("WHERE agent = ?", [agent]) if agent is not None else ("", [])
    episodes = {
        (r["agent"], r["version"]): int(r["episodes"])
        for r in store.query_dicts(
            f"SELECT agent, policy_version AS version, count(*) AS episodes FROM episodes {where} GROUP BY ALL",
            params,
        )
    }
    usage = store.query_dicts(
        "SELECT agent, policy_version AS version, coalesce(response_model, request_model) AS model, "
        "count(*) AS calls, sum(coalesce(input_tokens, 0)) AS input_tokens, "
        f"sum(coalesce(output_tokens, 0)) AS output_tokens FROM llm_calls {where} GROUP BY ALL",
        params,
    )
    totals: dict[tuple[str, int], list[float]] = {key: [0.0, 0.0, 0.0, 0.0] for key in episodes}
    for row in usage:
        key = (row["agent"], row["version"])
        acc = totals.setdefault(key, [0.0, 0.0, 0.0, 0.0])
        tokens_in, tokens_out = float(row["input_tokens"]), float(row["output_tokens"])
        acc[0] += float(row["calls"])
        acc[1] += tokens_in
        acc[2] += tokens_out
        acc[3] += prices.bill(row["model"], tokens_in, tokens_out)
    rows = []
    ordered = sorted(totals.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0))
    for (name, version), (calls, tokens_in, tokens_out, usd) in ordered:
        n = episodes.get((name, version), 0)
        per = 1 / n if n else 0.0
        rows.append(
            {
                "agent": name,
                "version": version,
                "episodes": n,
                "llm_calls_per_episode": calls * per,
                "input_tokens_per_episode": tokens_in * per,
                "output_tokens_per_episode": tokens_out * per,
                "cost_per_episode_usd": usd * per,
            }
        )
    return rows
