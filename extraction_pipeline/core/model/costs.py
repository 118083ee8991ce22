"""Token usage and what it costs: a configurable price table in USD per million tokens.

Prices move several times a year, so the defaults are a starting point and every deployment can
override them (JSON string or file) without a release. A model with no price yields a cost of
`None` ("unknown"), never an exception: a missing price must not fail an extraction.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

PER_TOKENS = 1_000_000
BATCH_DISCOUNT = 0.5
# Dated snapshots ("gpt-4.1-mini-2025-04-14", "gpt-4-0613") are priced like their alias.
_SNAPSHOT_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4})$")


@dataclass(frozen=True)
class TokenUsage:
    """Tokens billed for one or more calls. `cached_input_tokens` is a part of `input_tokens`."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            input_tokens=self.input_tokens + other.input_tokens,
            cached_input_tokens=self.cached_input_tokens + other.cached_input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
        )

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class ModelPrice(BaseModel):
    """USD per 1M tokens. `cached_input` defaults to `input` when a provider has no discount."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0)
    output: float = Field(ge=0)

    @property
    def cached_input_rate(self) -> float:
        return self.input if self.cached_input is None else self.cached_input


def _price(input_: float, cached: float, output: float) -> ModelPrice:
    return ModelPrice(input=input_, cached_input=cached, output=output)


# Sources and dates: shared/notes/openai-sdk-3-facts.md section 7. Re-check before relying on them.
DEFAULT_PRICES: Mapping[str, ModelPrice] = MappingProxyType(
    {
        "gpt-4.1": _price(2.00, 0.50, 8.00),
        "gpt-4.1-mini": _price(0.40, 0.10, 1.60),
        "gpt-4.1-nano": _price(0.10, 0.025, 0.40),
        "gpt-4o-mini": _price(0.15, 0.075, 0.60),
        "gpt-5": _price(1.25, 0.125, 10.00),
        "gpt-5-mini": _price(0.25, 0.025, 2.00),
        "gpt-5-nano": _price(0.05, 0.005, 0.40),
        "gpt-5.4": _price(2.50, 0.25, 15.00),
        "gpt-5.4-mini": _price(0.75, 0.075, 4.50),
        "gpt-5.4-nano": _price(0.20, 0.02, 1.25),
        "gpt-5.5": _price(5.00, 0.50, 30.00),
        "gpt-5.6-luna": _price(0.20, 0.02, 1.20),
        "gpt-5.6-terra": _price(2.00, 0.20, 12.00),
        "gpt-5.6-sol": _price(5.00, 0.50, 30.00),
    }
)


class InvalidPriceTable(ValueError):
    """A price override that is not valid JSON of `{model: {input, cached_input?, output}}`."""


@dataclass(frozen=True)
class PriceTable:
    """Prices by model name; lookup is case-insensitive and tolerates dated snapshot names."""

    prices: Mapping[str, ModelPrice] = field(default_factory=lambda: DEFAULT_PRICES)

    def __post_init__(self) -> None:
        lowered = {name.lower(): price for name, price in self.prices.items()}
        object.__setattr__(self, "prices", MappingProxyType(lowered))

    def lookup(self, model: str) -> ModelPrice | None:
        """The price of `model`, trying the exact name, then without a snapshot date suffix."""
        name = model.strip().lower()
        price = self.prices.get(name)
        if price is None:
            price = self.prices.get(_SNAPSHOT_SUFFIX.sub("", name))
        return price

    def with_overrides(self, overrides: Mapping[str, ModelPrice]) -> PriceTable:
        """A new table with `overrides` added to or replacing these prices."""
        return PriceTable({**self.prices, **{k.lower(): v for k, v in overrides.items()}})


_OVERRIDES = TypeAdapter(dict[str, ModelPrice])


def parse_price_overrides(text: str) -> dict[str, ModelPrice]:
    """Parse `{"gpt-4.1-mini": {"input": 0.4, "cached_input": 0.1, "output": 1.6}}`."""
    try:
        return _OVERRIDES.validate_json(text)
    except ValidationError as error:
        raise InvalidPriceTable(f"invalid price table override: {error}") from error


def load_price_table(override: str | Path | None = None) -> PriceTable:
    """Default prices, overridden by a JSON string (starting with `{`) or a JSON file path."""
    table = PriceTable()
    if override is None or (isinstance(override, str) and not override.strip()):
        return table
    if isinstance(override, str) and override.lstrip().startswith("{"):
        text = override
    else:
        try:
            text = Path(override).read_text(encoding="utf-8")
        except OSError as error:
            raise InvalidPriceTable(f"cannot read price table {override}: {error}") from error
    return table.with_overrides(parse_price_overrides(text))


def cost_usd(
    usage: TokenUsage, model: str, prices: PriceTable, batch: bool = False
) -> float | None:
    """USD cost of `usage` on `model`, or None when the table has no price for it.

    `(input - cached) * input + cached * cached_input + output * output`, halved for Batch.
    """
    price = prices.lookup(model)
    if price is None:
        return None
    uncached = max(usage.input_tokens - usage.cached_input_tokens, 0)
    dollars = (
        uncached * price.input
        + usage.cached_input_tokens * price.cached_input_rate
        + usage.output_tokens * price.output
    ) / PER_TOKENS
    return dollars * BATCH_DISCOUNT if batch else dollars
