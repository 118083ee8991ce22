import pytest

from extraction_pipeline.core.operations.lifecycle import (
    AssetState,
    DocumentFacts,
    DocumentState,
    RetryPolicy,
    classify,
    contiguous_batches,
    intake_candidates,
    needs_retry,
)

M, F, P, N = AssetState.MATERIALIZED, AssetState.FAILED, AssetState.IN_PROGRESS, AssetState.MISSING
POLICY = RetryPolicy(max_attempts=3)


def facts(
    source=M, extraction=N, attempts=0, retryable=None, review=False, queued=False, batch=False
):
    return DocumentFacts("doc", source, extraction, attempts, retryable, review, queued, batch)


@pytest.mark.parametrize(
    ("document", "state"),
    [
        (facts(source=N), DocumentState.NEW),
        (facts(), DocumentState.NEW),
        (facts(extraction=P, queued=True), DocumentState.QUEUED),
        (facts(source=P), DocumentState.RUNNING),
        (facts(extraction=M), DocumentState.EXTRACTED),
        (facts(extraction=M, review=True), DocumentState.NEEDS_REVIEW),
        (facts(extraction=F, attempts=1, retryable=True), DocumentState.FAILED),
        (facts(extraction=F, attempts=1, retryable=None), DocumentState.FAILED),
        (facts(extraction=F, attempts=3, retryable=True), DocumentState.DEAD_LETTER),
        (facts(extraction=F, attempts=1, retryable=False), DocumentState.DEAD_LETTER),
        (facts(source=F), DocumentState.DEAD_LETTER),
        (facts(batch=True), DocumentState.IN_BATCH),
        (facts(extraction=F, attempts=1, retryable=True, batch=True), DocumentState.IN_BATCH),
        (facts(extraction=P, queued=True, batch=True), DocumentState.QUEUED),
    ],
)
def test_classify(document: DocumentFacts, state: DocumentState) -> None:
    assert classify(document, POLICY) is state


def test_nightly_intake_takes_only_never_attempted_idle_documents() -> None:
    order = ["new", "busy", "extracted", "unreadable", "failed", "also-new"]
    todo = intake_candidates(
        order,
        busy={"busy"},
        extracted={"extracted"},
        attempted={"unreadable", "failed", "extracted"},
    )
    assert todo == ["new", "also-new"]


def test_retry_takes_failed_documents_until_the_attempt_cap() -> None:
    assert needs_retry(facts(extraction=F, attempts=2, retryable=True), POLICY)
    assert needs_retry(facts(extraction=F, attempts=1, retryable=None), POLICY)
    assert not needs_retry(facts(extraction=F, attempts=3, retryable=True), POLICY)
    assert not needs_retry(facts(extraction=F, attempts=1, retryable=False), POLICY)
    assert not needs_retry(facts(extraction=M), POLICY)
    assert not needs_retry(facts(extraction=N), POLICY)


def test_batches_are_contiguous_in_partition_order_and_bounded() -> None:
    order = [f"k{i}" for i in range(10)]
    selected = {"k0", "k1", "k2", "k4", "k5", "k9"}
    assert contiguous_batches(order, selected, 2) == [
        ["k0", "k1"],
        ["k2"],
        ["k4", "k5"],
        ["k9"],
    ]
    assert contiguous_batches(order, selected, 100) == [["k0", "k1", "k2"], ["k4", "k5"], ["k9"]]
    assert contiguous_batches(order, [], 5) == []
