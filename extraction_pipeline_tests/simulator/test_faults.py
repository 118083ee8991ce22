from __future__ import annotations

import pytest

from extraction_pipeline.simulator.faults import (
    FaultBook,
    FaultRule,
    InvalidFaultSpec,
    parse_fault_spec,
)
from extraction_pipeline.simulator.server import main


def test_fault_spec_parses_kind_and_options() -> None:
    assert parse_fault_spec("429:count=2:retry_after=1:retry_after_ms=250") == FaultRule(
        kind="429", count=2, retry_after=1, retry_after_ms=250
    )
    assert parse_fault_spec("refuse:match=INV-0003:count=always") == FaultRule(
        kind="refuse", match="INV-0003", count=None
    )
    assert parse_fault_spec("500").count == 1
    assert parse_fault_spec("refuse:match=INV-0003").count is None  # targeted: always


@pytest.mark.parametrize("spec", ["teapot", "500:count", "500:count=-1", "500:rate=2", "500:x=1"])
def test_invalid_fault_specs_are_rejected(spec: str) -> None:
    with pytest.raises(InvalidFaultSpec):
        parse_fault_spec(spec)


def test_rule_fires_count_times_then_stops() -> None:
    book = FaultBook([FaultRule(kind="500", count=2)])
    fired = [book.decide("any", "responses") for _ in range(3)]
    assert [rule.kind if rule else None for rule in fired] == ["500", "500", None]
    assert book.rules()[0].count == 0


def test_rule_fires_only_on_matching_text_and_endpoint() -> None:
    book = FaultBook([FaultRule(kind="refuse", match="INV-0003", endpoint="chat", count=None)])
    assert book.decide("Invoice number: INV-0003", "responses") is None
    assert book.decide("Invoice number: INV-0001", "chat") is None
    assert book.decide("Invoice number: INV-0003", "chat") is not None


def test_first_matching_rule_wins() -> None:
    book = FaultBook([FaultRule(kind="500", match="X", count=1), FaultRule(kind="429", count=None)])
    assert [book.decide("X", "chat").kind for _ in range(2)] == ["500", "429"]  # type: ignore[union-attr]


def test_rate_is_deterministic_for_a_seed() -> None:
    def pattern() -> list[bool]:
        book = FaultBook([FaultRule(kind="500", count=None, rate=0.3)], seed=7)
        return [book.decide("", "chat") is not None for _ in range(200)]

    first = pattern()
    assert first == pattern()
    assert 30 < sum(first) < 90


@pytest.mark.parametrize(
    ("marker", "kind"),
    [("SIMULATE:REFUSE", "refuse"), ("SIMULATE:500", "500"), ("SIMULATE:TRUNCATE", "truncate")],
)
def test_markers_always_fire(marker: str, kind: str) -> None:
    book = FaultBook([])
    assert [book.decide(f"text\n{marker}\n", "chat").kind for _ in range(3)] == [kind] * 3  # type: ignore[union-attr]


def test_cli_rejects_an_invalid_fault_before_serving(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--fault", "bogus"])
    assert exit_info.value.code == 2
    assert "bogus" in capsys.readouterr().err
