"""Dead letters: documents that failed for good and need a person, stored in the data dir.

Which documents of a finished run are dead letters is decided here (`judge_run`), from what the
run recorded, with the same `classify` that `status` uses; the run-status sensors and `ingest`
only gather those facts and apply the verdict, so both paths record the same letters.
"""

from __future__ import annotations

import io
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from extraction_pipeline.core.operations.lifecycle import (
    AssetState,
    DocumentFacts,
    DocumentState,
    RetryPolicy,
    classify,
)
from extraction_pipeline.core.store import ObjectStore

PREFIX = "dead_letters"
TABLE_NAME = "tables/dead_letters.parquet"
SCHEMA = pa.schema(
    [
        pa.field("document_key", pa.string()),
        pa.field("file_name", pa.string()),
        pa.field("run_id", pa.string()),
        pa.field("error_kind", pa.string()),
        pa.field("error", pa.string()),
        pa.field("attempts", pa.int32()),
        pa.field("recorded_at", pa.timestamp("us", tz="UTC")),
    ]
)


class DeadLetter(BaseModel):
    document_key: str
    file_name: str
    run_id: str
    error_kind: str
    error: str
    attempts: int
    recorded_at: datetime


FailureStage = Literal["source", "extraction", "run"]
RUN_FAILED = "run_failed"


@dataclass(frozen=True)
class DocumentFailure:
    """What a run recorded about a document it did not extract. Stage `source`: unreadable;
    `extraction`: the model step failed; `run`: nothing was recorded and the run failed."""

    stage: FailureStage
    error_kind: str
    error: str
    retryable: bool | None
    file_name: str = ""


@dataclass(frozen=True)
class RunVerdict:
    """What a finished run means for the dead letters."""

    dead_letters: tuple[DeadLetter, ...] = ()
    cleared: tuple[str, ...] = ()  # documents the run extracted: dead letters no more


def judge_run(
    run_id: str,
    document_keys: Sequence[str],
    extracted: Collection[str],
    failures: Mapping[str, DocumentFailure],
    attempts: Mapping[str, int],
    policy: RetryPolicy,
    run_error: str | None,
    file_names: Mapping[str, str],
    now: datetime,
) -> RunVerdict:
    """The dead letters a finished run leaves, and the documents it cleared.

    A document of the run that it extracted is cleared. One it failed is a dead letter when
    `classify` says so: unreadable (source failed), a permanent extraction error, or
    `policy.max_attempts` extraction attempts used up (`attempts` counts them, this run
    included). `run_error` is the run's failure message, None for a run that succeeded; a
    failed run's documents without a recorded failure count as failed with that message.
    `file_names` fills in the names the failures do not carry.
    """
    letters: list[DeadLetter] = []
    cleared: list[str] = []
    for key in dict.fromkeys(document_keys):
        if key in extracted:
            cleared.append(key)
            continue
        failure = failures.get(key)
        if failure is None:
            if run_error is None:
                continue
            failure = DocumentFailure("run", RUN_FAILED, run_error, None)
        unreadable = failure.stage == "source"
        facts = DocumentFacts(
            document_key=key,
            source=AssetState.FAILED if unreadable else AssetState.MATERIALIZED,
            extraction=AssetState.MISSING if unreadable else AssetState.FAILED,
            attempts=attempts.get(key, 0),
            last_error_retryable=failure.retryable,
        )
        if classify(facts, policy) is not DocumentState.DEAD_LETTER:
            continue
        letters.append(
            DeadLetter(
                document_key=key,
                file_name=failure.file_name or file_names.get(key, ""),
                run_id=run_id,
                error_kind=failure.error_kind,
                error=failure.error,
                attempts=max(facts.attempts, 1),
                recorded_at=now,
            )
        )
    return RunVerdict(tuple(letters), tuple(cleared))


class DeadLetterStore:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def record(self, letter: DeadLetter) -> None:
        self.store.put(f"{PREFIX}/{letter.document_key}.json", letter.model_dump_json().encode())

    def clear(self, document_key: str) -> bool:
        """Forget a document that has since been extracted; True when it was a dead letter."""
        name = f"{PREFIX}/{document_key}.json"
        if not self.store.exists(name):
            return False
        self.store.delete(name)
        return True

    def apply(self, verdict: RunVerdict) -> bool:
        """Record the verdict's dead letters, forget the cleared ones, and rewrite the table when
        anything changed; True when it did."""
        cleared = [key for key in verdict.cleared if self.clear(key)]
        for letter in verdict.dead_letters:
            self.record(letter)
        if not (cleared or verdict.dead_letters):
            return False
        self.write_table()
        return True

    def keys(self) -> set[str]:
        """The dead letters' document keys, from the listing alone (no object read)."""
        return {
            name.removeprefix(f"{PREFIX}/").removesuffix(".json")
            for name in self.store.list(PREFIX)
            if name.endswith(".json")
        }

    def all(self) -> list[DeadLetter]:
        return sorted(
            (
                DeadLetter.model_validate_json(self.store.get(name))
                for name in self.store.list(PREFIX)
            ),
            key=lambda letter: letter.recorded_at,
        )

    def write_table(self) -> int:
        """Rewrite `tables/dead_letters.parquet` from the records (a short list by nature)."""
        rows = [letter.model_dump() for letter in self.all()]
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), buffer)
        self.store.put(TABLE_NAME, buffer.getvalue())
        return len(rows)
