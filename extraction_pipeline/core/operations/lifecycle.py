"""Where each document stands, and which documents the schedules should run: pure decisions.

A document's state comes from Dagster's storage (partition statuses, runs, attempts) and is
classified here, so the schedules, `status` and the dead-letter sensor all agree on one meaning.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass


class AssetState(enum.StrEnum):
    """The status Dagster reports for one partition of one asset."""

    MISSING = "missing"
    MATERIALIZED = "materialized"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"


class DocumentState(enum.StrEnum):
    NEW = "new"  # registered, never run
    QUEUED = "queued"  # a run for it waits in the queue
    RUNNING = "running"
    IN_BATCH = "in_batch"  # waits in a Batch API batch for its answer
    EXTRACTED = "extracted"
    NEEDS_REVIEW = "needs_review"  # extracted, but a check failed
    FAILED = "failed"  # last attempt failed; the retry schedule will try again
    DEAD_LETTER = "dead_letter"  # failed for good: a person has to look


@dataclass(frozen=True)
class DocumentFacts:
    """What the storage says about one document."""

    document_key: str
    source: AssetState
    extraction: AssetState
    attempts: int = 0  # extraction runs planned for it so far
    last_error_retryable: bool | None = None  # None: unknown (e.g. the run's worker died)
    needs_review: bool = False
    queued: bool = False  # only meaningful when in progress
    in_batch: bool = False  # submitted to a batch that has not ended


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3


def classify(facts: DocumentFacts, policy: RetryPolicy) -> DocumentState:
    if AssetState.IN_PROGRESS in (facts.source, facts.extraction):
        return DocumentState.QUEUED if facts.queued else DocumentState.RUNNING
    if facts.in_batch:
        return DocumentState.IN_BATCH
    if facts.extraction is AssetState.MATERIALIZED:
        return DocumentState.NEEDS_REVIEW if facts.needs_review else DocumentState.EXTRACTED
    if facts.source is AssetState.FAILED and facts.extraction is not AssetState.FAILED:
        return DocumentState.DEAD_LETTER  # unreadable: no retry can read it
    if facts.extraction is AssetState.FAILED:
        if is_dead_letter(facts, policy):
            return DocumentState.DEAD_LETTER
        return DocumentState.FAILED
    return DocumentState.NEW


def is_dead_letter(facts: DocumentFacts, policy: RetryPolicy) -> bool:
    """Permanent failures (refusal, truncation, unreadable input) are dead at once; transient
    ones after `max_attempts` attempts."""
    return facts.last_error_retryable is False or facts.attempts >= policy.max_attempts


def intake_candidates(
    ordered_keys: Sequence[str],
    busy: Collection[str],
    extracted: Collection[str],
    attempted: Collection[str],
) -> list[str]:
    """Documents never attempted: no run planned them (an unreadable one was planned by its
    source run, a failed one by its extraction run), none is under way, none extracted."""
    return [
        key
        for key in ordered_keys
        if key not in busy and key not in extracted and key not in attempted
    ]


def needs_retry(facts: DocumentFacts, policy: RetryPolicy) -> bool:
    return (
        facts.extraction is AssetState.FAILED
        and facts.source is not AssetState.IN_PROGRESS
        and not is_dead_letter(facts, policy)
    )


def contiguous_batches(
    ordered_keys: Sequence[str], selected: Iterable[str], max_per_batch: int
) -> list[list[str]]:
    """Group `selected` into runs of keys adjacent in partition order, at most `max_per_batch`
    each, so every batch can be one ranged run covering exactly its documents."""
    wanted = set(selected)
    batches: list[list[str]] = []
    current: list[str] = []
    for key in ordered_keys:
        if key in wanted and len(current) < max_per_batch:
            current.append(key)
            continue
        if current:
            batches.append(current)
        current = [key] if key in wanted else []
    if current:
        batches.append(current)
    return batches
