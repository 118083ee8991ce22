from __future__ import annotations

from pathlib import Path

import pytest

from extraction_pipeline.core.model.costs import (
    InvalidPriceTable,
    ModelPrice,
    PriceTable,
    TokenUsage,
    cost_usd,
    load_price_table,
    parse_price_overrides,
)

MILLION = 1_000_000


def test_token_usage_adds_field_by_field() -> None:
    total = TokenUsage(10, 4, 3) + TokenUsage(5, 1, 2)
    assert total == TokenUsage(input_tokens=15, cached_input_tokens=5, output_tokens=5)
    assert total.total_tokens == 20


def test_cost_charges_cached_input_at_the_cached_rate() -> None:
    usage = TokenUsage(
        input_tokens=MILLION, cached_input_tokens=MILLION // 4, output_tokens=MILLION
    )
    cost = cost_usd(usage, "gpt-4.1-mini", PriceTable())
    # 0.75M uncached * 0.40 + 0.25M cached * 0.10 + 1M output * 1.60
    assert cost == pytest.approx(0.30 + 0.025 + 1.60)


def test_batch_cost_is_half() -> None:
    usage = TokenUsage(input_tokens=2000, cached_input_tokens=0, output_tokens=500)
    live = cost_usd(usage, "gpt-4.1", PriceTable())
    assert live is not None
    assert cost_usd(usage, "gpt-4.1", PriceTable(), batch=True) == pytest.approx(live / 2)


@pytest.mark.parametrize(
    ("model", "priced_as"),
    [
        ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
        ("GPT-4.1-MINI", "gpt-4.1-mini"),
        ("gpt-4.1-2025-04-14", "gpt-4.1"),
        ("gpt-5.6-luna", "gpt-5.6-luna"),
    ],
)
def test_snapshot_and_case_variants_are_priced_like_their_alias(model: str, priced_as: str) -> None:
    usage = TokenUsage(1000, 0, 1000)
    assert cost_usd(usage, model, PriceTable()) == cost_usd(usage, priced_as, PriceTable())


@pytest.mark.parametrize("model", ["llama-3.1-8b-instruct", "gpt-4.1-turbo", "", "gpt-5.6"])
def test_unpriced_models_cost_none(model: str) -> None:
    assert cost_usd(TokenUsage(1, 0, 1), model, PriceTable()) is None


def test_overrides_from_a_json_string_replace_and_add_prices() -> None:
    table = load_price_table(
        '{"gpt-4.1-mini": {"input": 1, "cached_input": 0.5, "output": 2}, "local": {"input": 0, '
        '"output": 0}}'
    )
    assert table.lookup("gpt-4.1-mini") == ModelPrice(input=1, cached_input=0.5, output=2)
    assert cost_usd(TokenUsage(MILLION, 0, MILLION), "local", table) == 0
    assert table.lookup("gpt-4.1") is not None  # defaults stay


def test_overrides_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text('{"my-model": {"input": 3, "output": 6}}')
    table = load_price_table(path)
    assert cost_usd(TokenUsage(MILLION, MILLION, 0), "my-model", table) == pytest.approx(3)


def test_cached_rate_defaults_to_the_input_rate() -> None:
    price = parse_price_overrides('{"m": {"input": 2, "output": 4}}')["m"]
    assert price.cached_input_rate == 2


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        '{"m": {"input": -1, "output": 1}}',
        '{"m": {"input": 1}}',
        '{"m": {"input": 1, "output": 1, "surprise": 1}}',
    ],
)
def test_invalid_overrides_raise_invalid_price_table(text: str) -> None:
    with pytest.raises(InvalidPriceTable):
        load_price_table(text)


def test_missing_override_file_raises_invalid_price_table(tmp_path: Path) -> None:
    with pytest.raises(InvalidPriceTable, match="cannot read"):
        load_price_table(tmp_path / "missing.json")


def test_no_override_gives_the_defaults() -> None:
    assert load_price_table(None).lookup("gpt-5-mini") == PriceTable().lookup("gpt-5-mini")
    assert load_price_table("  ").lookup("gpt-5-mini") is not None
