"""Injected faults: rules that decide, deterministically, which model requests misbehave and how.

A `FaultRule` is eligible for a request when its optional `match` substring occurs in the
request's document text or file names, its optional `endpoint` matches and it has firings left
(`count`; None means always). Each request draws one number u in [0, 1); the eligible rules,
in order, take consecutive slices of that interval as wide as their `rate`, and the rule whose
slice holds u fires. So the rates are the effective shares of requests: rules of 20% and 10%
fault 20% and 10% of the requests they are eligible for (not 20% and 8%, as independent coins
tried one after the other would), a `rate=1` rule fires on whatever the rules before it left,
and rates beyond a total of 1 are cut off. The draw is a hash of the seed, the document the
request is about and how many requests about that document came before, so a run is
reproducible however concurrent requests interleave. Independently, a document containing a
marker such as ``SIMULATE:REFUSE`` always gets that fault (see `MARKERS`), which is handy for
demos and browser tests.

CLI form (`--fault`): ``KIND[:key=value]...``, e.g. ``429:count=2:retry_after=1``,
``refuse:match=INV-0003``, ``500:rate=0.1``, ``hang:hang_seconds=5``. Named mixes
(`--fault-mix standard`, `FAULT_MIXES`) are ready-made rule lists.
"""

from __future__ import annotations

import hashlib
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

FaultKind = Literal[
    "429", "quota", "500", "hang", "invalid_json", "refuse", "truncate", "content_filter"
]
Endpoint = Literal["responses", "chat"]
FaultMixName = Literal["standard"]

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


# A hang lasts until the client gives up (the simulator notices the disconnect), so "longer
# than any client timeout" costs nothing beyond that timeout.
HANG_LONGER_THAN_ANY_TIMEOUT_SECONDS = 3600.0

FAULT_MIXES: dict[FaultMixName, tuple[FaultRule, ...]] = {
    # A bad day at a provider, all at once: each request independently gets one of these.
    "standard": (
        FaultRule(kind="429", rate=0.20, count=None, retry_after=1),
        FaultRule(kind="500", rate=0.10, count=None),
        FaultRule(
            kind="hang", rate=0.05, count=None, hang_seconds=HANG_LONGER_THAN_ANY_TIMEOUT_SECONDS
        ),
        FaultRule(kind="invalid_json", rate=0.03, count=None),
        FaultRule(kind="refuse", rate=0.02, count=None),
    ),
}


class InvalidFaultSpec(ValueError):
    """A `--fault` string that does not describe a valid `FaultRule`, or an unknown mix."""


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


def fault_mix(name: str) -> list[FaultRule]:
    """The rules of a named mix (`FAULT_MIXES`)."""
    if name not in FAULT_MIXES:
        known = ", ".join(get_args(FaultMixName))
        raise InvalidFaultSpec(f"unknown fault mix {name!r} (known: {known})")
    return [rule.model_copy() for rule in FAULT_MIXES[name]]  # type: ignore[index]


def describe_mix(name: FaultMixName) -> str:
    """``20% 429, 10% 500, ...``: a mix in one line."""
    return ", ".join(f"{rule.rate:.0%} {rule.kind}" for rule in FAULT_MIXES[name])


class FaultBook:
    """The live rule list with the firings left on each rule. Used from one event loop only."""

    def __init__(self, rules: list[FaultRule], seed: int = 0) -> None:
        self.reseed(seed)
        self.replace(rules)

    def replace(self, rules: list[FaultRule]) -> None:
        self._rules = [rule.model_copy() for rule in rules]
        self._left: list[int | None] = [rule.count for rule in self._rules]

    def reseed(self, seed: int) -> None:
        """Start the draws afresh from `seed`."""
        self._seed = seed
        self._asked: dict[str, int] = {}

    def rules(self) -> list[FaultRule]:
        """The rules with `count` showing the firings left."""
        return [
            rule.model_copy(update={"count": left})
            for rule, left in zip(self._rules, self._left, strict=True)
        ]

    def decide(
        self, match_text: str, endpoint: Endpoint, document: str | None = None
    ) -> FaultRule | None:
        """The fault for a request about `document` (default: its text), consuming one firing
        of the rule that fires."""
        for marker, kind in MARKERS.items():
            if marker in match_text:
                return FaultRule(kind=kind, count=None, hang_seconds=30.0)
        draw = self._draw(match_text if document is None else document)
        low = 0.0
        for index, rule in enumerate(self._rules):
            left = self._left[index]
            if left == 0:
                continue
            if rule.endpoint is not None and rule.endpoint != endpoint:
                continue
            if rule.match is not None and rule.match not in match_text:
                continue
            if not low <= draw < low + rule.rate:
                low += rule.rate
                continue
            if left is not None:
                self._left[index] = left - 1
            return rule
        return None

    def _draw(self, document: str) -> float:
        """Uniform in [0, 1): the n-th request about `document` under this seed."""
        about = hashlib.blake2b(document.encode(), digest_size=16).hexdigest()
        nth = self._asked.get(about, 0)
        self._asked[about] = nth + 1
        digest = hashlib.blake2b(f"{self._seed}:{about}:{nth}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64
