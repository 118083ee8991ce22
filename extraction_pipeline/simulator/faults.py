"""Injected faults: rules that decide, deterministically, which model requests misbehave and how.

A `FaultRule` fires on a request when its optional `match` substring occurs in the request's
document text or file names, its optional `endpoint` matches, it has firings left (`count`; None
means always) and a seeded coin with probability `rate` lands. Rules are tried in order; the first
that fires wins. Independently, a document containing a marker such as ``SIMULATE:REFUSE`` always
gets that fault (see `MARKERS`), which is handy for demos and browser tests.

CLI form (`--fault`): ``KIND[:key=value]...``, e.g. ``429:count=2:retry_after=1``,
``refuse:match=INV-0003``, ``500:rate=0.1``, ``hang:hang_seconds=5``.
"""

from __future__ import annotations

import random
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

FaultKind = Literal[
    "429", "quota", "500", "hang", "invalid_json", "refuse", "truncate", "content_filter"
]
Endpoint = Literal["responses", "chat"]

MARKERS: dict[str, FaultKind] = {
    "SIMULATE:REFUSE": "refuse",
    "SIMULATE:500": "500",
    "SIMULATE:429": "429",
    "SIMULATE:INVALID_JSON": "invalid_json",
    "SIMULATE:TRUNCATE": "truncate",
    "SIMULATE:HANG": "hang",
    "SIMULATE:QUOTA": "quota",
    "SIMULATE:CONTENT_FILTER": "content_filter",
}


class FaultRule(BaseModel):
    """One fault to inject. `count=None` fires on every matching request.

    Without an explicit `count`, a rule with `match` fires always (it targets documents) and a
    rule without fires once.
    """

    model_config = ConfigDict(extra="forbid")

    kind: FaultKind
    match: str | None = None
    endpoint: Endpoint | None = None
    count: int | None = Field(default=1, ge=0)
    rate: float = Field(default=1.0, ge=0.0, le=1.0)
    retry_after: float | None = Field(default=None, ge=0, description="seconds, for 429")
    retry_after_ms: int | None = Field(default=None, ge=0, description="milliseconds, for 429")
    hang_seconds: float = Field(default=30.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _default_count(cls, data: object) -> object:
        if isinstance(data, dict) and "count" not in data:
            return {**data, "count": None if data.get("match") else 1}
        return data


class InvalidFaultSpec(ValueError):
    """A `--fault` string that does not describe a valid `FaultRule`."""


def parse_fault_spec(spec: str) -> FaultRule:
    """Parse ``KIND[:key=value]...``; ``count=always`` means every matching request."""
    kind, *options = spec.split(":")
    fields: dict[str, object] = {"kind": kind.strip()}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep:
            raise InvalidFaultSpec(f"fault {spec!r}: expected key=value, got {option!r}")
        key = key.strip()
        fields[key] = None if key == "count" and value.strip() == "always" else value.strip()
    try:
        return FaultRule.model_validate(fields)
    except ValidationError as error:
        raise InvalidFaultSpec(f"fault {spec!r}: {error}") from error


class FaultBook:
    """The live rule list with the firings left on each rule. Used from one event loop only."""

    def __init__(self, rules: list[FaultRule], seed: int = 0) -> None:
        self._rng = random.Random(seed)
        self.replace(rules)

    def replace(self, rules: list[FaultRule]) -> None:
        self._rules = [rule.model_copy() for rule in rules]
        self._left: list[int | None] = [rule.count for rule in self._rules]

    def rules(self) -> list[FaultRule]:
        """The rules with `count` showing the firings left."""
        return [
            rule.model_copy(update={"count": left})
            for rule, left in zip(self._rules, self._left, strict=True)
        ]

    def decide(self, match_text: str, endpoint: Endpoint) -> FaultRule | None:
        """The fault for a request, consuming one firing of the rule that fires."""
        for marker, kind in MARKERS.items():
            if marker in match_text:
                return FaultRule(kind=kind, count=None, hang_seconds=30.0)
        for index, rule in enumerate(self._rules):
            left = self._left[index]
            if left == 0:
                continue
            if rule.endpoint is not None and rule.endpoint != endpoint:
                continue
            if rule.match is not None and rule.match not in match_text:
                continue
            if rule.rate < 1.0 and self._rng.random() >= rule.rate:
                continue
            if left is not None:
                self._left[index] = left - 1
            return rule
        return None
