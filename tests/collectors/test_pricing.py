"""The provider's bill: price tables (settings, patterns, bad input) and the bill per version read from a real store."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import agentgym_runtime as agentgym
from agentgym_runtime.collectors.pricing import TokenPrices, bill_by_version, check_prices
from agentgym_runtime.errors import ConfigurationError
from agentgym_runtime.recording.capture import start_llm_call
from agentgym_runtime.services import Services


def test_exact_names_win_over_patterns_and_the_star_prices_the_rest() -> None:
    prices = TokenPrices({"*": (0.1, 0.4), "gpt-4o*": (2.5, 10.0), "gpt-4o-mini": (0.15, 0.6)})
    assert prices.price("gpt-4o-mini") == (0.15, 0.6)
    assert prices.price("gpt-4o-2024-08-06") == (2.5, 10.0)
    assert prices.price("llama") == (0.1, 0.4) and prices.price(None) == (0.1, 0.4)
    assert prices.bill("gpt-4o", 2_000_000, 100_000) == pytest.approx(5.0 + 1.0)
    with pytest.raises(KeyError, match="no token price for model 'llama'; add it"):
        TokenPrices({"gpt*": (1.0, 1.0)}).price("llama")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"m": (1.0,)}, "token price of 'm' must be \\[input, output\\]"),
        ({"m": ("a", 1)}, "token price of 'm' must be two numbers"),
        ({"m": (1.0, -0.5)}, "token price of 'm' must be finite and >= 0"),
        ({"m": (float("nan"), 1.0)}, "token price of 'm' must be finite and >= 0"),
        ({"": (1.0, 1.0)}, "token price keys must be model names or patterns"),
    ],
)
def test_bad_price_tables_name_the_entry(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_prices(table)
    with pytest.raises(ConfigurationError, match=message):
        agentgym.configure(store=":memory:", token_prices=table)


def test_the_price_table_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from agentgym_runtime.config import Settings

    monkeypatch.setenv("AGENTGYM_TOKEN_PRICES", json.dumps({"*": [1, 2], "big": [3, 4]}))
    assert Settings().token_prices == {"*": (1.0, 2.0), "big": (3.0, 4.0)}
    monkeypatch.setenv("AGENTGYM_TOKEN_PRICES", "{not json")
    with pytest.raises(ValueError, match=re.escape('token_prices must be JSON like {"*": [0.15, 0.6]}')):
        Settings()


@given(
    st.floats(0, 1e3, allow_nan=False),
    st.floats(0, 1e3, allow_nan=False),
    st.integers(0, 10**7),
    st.integers(0, 10**7),
)
def test_the_bill_is_linear_in_each_kind_of_token(p_in: float, p_out: float, n_in: int, n_out: int) -> None:
    prices = TokenPrices({"*": (p_in, p_out)})
    whole = prices.bill("m", n_in, n_out)
    assert whole == pytest.approx(prices.bill("m", n_in, 0) + prices.bill("m", 0, n_out), rel=1e-9, abs=1e-12)
    assert whole >= 0.0


def test_bill_by_version_prices_each_call_at_its_own_model(agentgym_runtime: Services) -> None:
    def episode(calls: list[tuple[str, int, int]]) -> None:
        with agentgym.episode(agent="support"):
            for model, n_in, n_out in calls:
                call = start_llm_call(model=model, input_messages=[{"role": "user", "content": "hi"}])
                call.finish(
                    output_messages=[{"role": "assistant", "content": "ok"}], input_tokens=n_in, output_tokens=n_out
                )

    # Two episodes of v0: one on the big model (two calls), one on the small model.
    episode([("big", 1000, 200), ("big", 500, 100)])
    episode([("small", 1000, 200)])
    assert agentgym.flush()
    prices = TokenPrices({"*": (0.0, 0.0), "big": (2.0, 8.0), "small": (0.1, 0.4)})
    rows = bill_by_version(agentgym_runtime.store, prices)
    assert len(rows) == 1
    row = rows[0]
    assert (row["agent"], row["version"], row["episodes"]) == ("support", 0, 2)
    assert row["llm_calls_per_episode"] == 1.5
    assert row["input_tokens_per_episode"] == 1250 and row["output_tokens_per_episode"] == 250
    big = (1500 * 2.0 + 300 * 8.0) / 1e6
    small = (1000 * 0.1 + 200 * 0.4) / 1e6
    assert row["cost_per_episode_usd"] == pytest.approx((big + small) / 2)
    assert bill_by_version(agentgym_runtime.store, prices, agent="nobody") == []
