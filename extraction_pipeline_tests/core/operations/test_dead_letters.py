from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from extraction_pipeline.core.operations.dead_letters import (
    DeadLetter,
    DeadLetterStore,
    DocumentFailure,
    RunVerdict,
    judge_run,
)
from extraction_pipeline.core.operations.lifecycle import RetryPolicy
from extraction_pipeline.core.store import LocalObjectStore

NOW = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)
POLICY = RetryPolicy(max_attempts=3)
UNREADABLE = DocumentFailure(
    "source", "CorruptPdf", "CorruptPdf: b.pdf: the PDF is truncated", False, "b.pdf"
)
REFUSED = DocumentFailure("extraction", "refused", "refused: no", False, "r.pdf")
RATE_LIMITED = DocumentFailure("extraction", "rate_limited", "429", True, "t.pdf")


def judge(
    failures: dict[str, DocumentFailure],
    attempts: int = 1,
    run_error: str | None = "the run failed",
    extracted: tuple[str, ...] = (),
    keys: tuple[str, ...] = ("doc",),
) -> RunVerdict:
    return judge_run(
        run_id="run-1",
        document_keys=keys,
        extracted=extracted,
        failures=failures,
        attempts=dict.fromkeys(keys, attempts),
        policy=POLICY,
        run_error=run_error,
        file_names={"doc": "registered.pdf"},
        now=NOW,
    )


@pytest.mark.parametrize(
    ("failure", "attempts", "run_error", "kind"),
    [
        (UNREADABLE, 0, "failed", "CorruptPdf"),  # unreadable: dead at once, never extracted
        (REFUSED, 1, "failed", "refused"),  # permanent: dead at once
        (RATE_LIMITED, 1, "failed", None),  # transient: the retry schedule tries again
        (RATE_LIMITED, 3, "failed", "rate_limited"),  # attempts used up
        (None, 1, "failed", None),  # nothing recorded (worker died): retried
        (None, 3, "failed", "run_failed"),
        (None, 3, None, None),  # a successful run that did not extract it (e.g. source only)
    ],
)
def test_judge_run_makes_dead_letters_as_status_classifies_them(
    failure: DocumentFailure | None, attempts: int, run_error: str | None, kind: str | None
) -> None:
    verdict = judge({"doc": failure} if failure else {}, attempts, run_error)

    assert [letter.error_kind for letter in verdict.dead_letters] == ([kind] if kind else [])
    assert verdict.cleared == ()


def test_a_dead_letter_carries_the_recorded_failure() -> None:
    (letter,) = judge({"doc": UNREADABLE}, attempts=0).dead_letters
    assert letter == DeadLetter(
        document_key="doc",
        file_name="b.pdf",
        run_id="run-1",
        error_kind="CorruptPdf",
        error="CorruptPdf: b.pdf: the PDF is truncated",
        attempts=1,
        recorded_at=NOW,
    )
    (unnamed,) = judge({}, attempts=3, run_error="step failed").dead_letters
    assert (unnamed.file_name, unnamed.error, unnamed.attempts) == (
        "registered.pdf",
        "step failed",
        3,
    )


def test_extracted_documents_are_cleared_and_failed_ones_judged_in_the_same_run() -> None:
    verdict = judge({"b": UNREADABLE}, extracted=("a",), keys=("a", "b", "a"))
    assert verdict.cleared == ("a",)
    assert [letter.document_key for letter in verdict.dead_letters] == ["b"]


def test_applying_a_verdict_records_clears_and_rewrites_the_table(tmp_path: Path) -> None:
    store = DeadLetterStore(LocalObjectStore(tmp_path))
    assert store.apply(judge({"doc": REFUSED}))
    assert [letter.document_key for letter in store.all()] == ["doc"]
    assert store.apply(RunVerdict()) is False  # nothing changed: the table is not rewritten

    assert store.apply(judge({}, extracted=("doc",)))

    assert store.all() == []
    table = pq.read_table(tmp_path / "tables" / "dead_letters.parquet")
    assert table.num_rows == 0
    assert store.apply(judge({}, extracted=("doc",))) is False  # already cleared
