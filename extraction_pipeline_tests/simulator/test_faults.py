from __future__ import annotations

import pytest

from extraction_pipeline.simulator.faults import (
    FaultBook,
    FaultRule,
    InvalidFaultSpec,
    fault_mix,
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


def test_rates_are_the_effective_shares_of_requests() -> None:
    book = FaultBook(
        [FaultRule(kind="429", rate=0.2, count=None), FaultRule(kind="500", rate=0.1, count=None)]
    )
    kinds = [getattr(book.decide("", "chat", f"doc-{i}"), "kind", None) for i in range(20_000)]
    # Independent coins tried in turn would give the 500 rule 0.8 * 10% = 8%.
    assert kinds.count("429") / len(kinds) == pytest.approx(0.2, abs=0.01)
    assert kinds.count("500") / len(kinds) == pytest.approx(0.1, abs=0.01)


def test_standard_mix_injects_its_stated_rates_at_once() -> None:
    book = FaultBook(fault_mix("standard"), seed=1)
    kinds = [
        getattr(book.decide("", "responses", f"doc-{i % 500}"), "kind", None) for i in range(40_000)
    ]
    shares = {kind: kinds.count(kind) / len(kinds) for kind in set(kinds)}
    stated = {"429": 0.20, "500": 0.10, "hang": 0.05, "invalid_json": 0.03, "refuse": 0.02}
    for kind, rate in stated.items():
        assert shares[kind] == pytest.approx(rate, abs=0.006), kind
    assert shares[None] == pytest.approx(0.60, abs=0.01)
    assert {rule.kind: rule.rate for rule in fault_mix("standard")} == stated


def test_draws_depend_on_seed_and_document_not_on_interleaving() -> None:
    def faults(order: list[str], seed: int) -> dict[str, list[str | None]]:
        book = FaultBook(fault_mix("standard"), seed=seed)
        seen: dict[str, list[str | None]] = {}
        for document in order:
            seen.setdefault(document, []).append(
                getattr(book.decide("", "chat", document), "kind", None)
            )
        return seen

    documents = [f"doc-{i}" for i in range(50)] * 4
    assert faults(documents, 5) == faults(list(reversed(documents)), 5)
    assert faults(documents, 5) != faults(documents, 6)


def test_rules_past_a_total_rate_of_one_never_fire() -> None:
    book = FaultBook(
        [
            FaultRule(kind="500", rate=0.7, count=None),
            FaultRule(kind="429", rate=0.7, count=None),
            FaultRule(kind="refuse", count=None),
        ]
    )
    kinds = {getattr(book.decide("", "chat", f"d{i}"), "kind", None) for i in range(2_000)}
    assert kinds == {"500", "429"}


def test_unknown_fault_mix_is_rejected() -> None:
    with pytest.raises(InvalidFaultSpec, match="known: standard"):
        fault_mix("chaos")


def test_cli_takes_a_fault_mix() -> None:
    from extraction_pipeline.simulator.server import _parser

    assert _parser().parse_args(["--fault-mix", "standard", "--seed", "3"]).fault_mix == "standard"


def test_cli_help_describes_the_standard_mix(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "20% 429" in " ".join(capsys.readouterr().out.split())
