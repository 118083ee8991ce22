"""The outcome contract: what the document op records per document in Dagster's event log, and
the one reader of it.

An extraction outcome is an `extraction` materialisation (extracted, needs_review) or, for a
failure, an `extraction` observation; an unreadable document is a `source_document` observation.
A document handed to the Batch API gets an `extraction` observation with status `submitted` (no
outcome yet: its answer comes in the run that collects the batch).
`outcome_metadata` writes their metadata; `read_outcome` turns a stored event back into a typed
`RecordedOutcome`. Sensors, the step's resume after a retry, history, status and the tables'
change feed all read through here, so a key renamed on one side cannot go unnoticed on the other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg

from extraction_pipeline.core.extraction.records import ExtractionRecord
from extraction_pipeline.instance.names import DOCUMENT_KEYS, RETRYABLE_TAG

SUBMITTED = "submitted"
OUTCOME_EVENT_TYPES = frozenset(
    {dg.DagsterEventType.ASSET_MATERIALIZATION, dg.DagsterEventType.ASSET_OBSERVATION}
)


@dataclass(frozen=True)
class RecordedOutcome:
    """One document's outcome as an event recorded it.

    `materialized`: the asset was materialised (for `extraction`, the document was extracted);
    otherwise the event is the observation of a failure, or of a submission to a batch. `status`
    is extracted, needs_review or failed for outcomes, submitted for a submission; None on a
    `source_document` materialisation (the original was stored, which is no outcome yet).
    `retryable` is None when the event does not say.
    """

    document_key: str
    asset_key: dg.AssetKey
    materialized: bool
    run_id: str
    timestamp: float
    storage_id: int | None = None
    status: str | None = None
    file_name: str = ""
    error_kind: str | None = None
    error_message: str | None = None
    retryable: bool | None = None
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    cache_hit: bool | None = None
    batch_id: str | None = None

    @property
    def is_submission(self) -> bool:
        return self.status == SUBMITTED

    @property
    def is_failure(self) -> bool:
        return not self.materialized and not self.is_submission

    @property
    def settled_for_good(self) -> bool:
        """A success, or a failure that retrying the same step cannot mend."""
        return self.materialized or self.retryable is False

    @property
    def paid_usd(self) -> float:
        """What this outcome cost: nothing when a stored result was reused."""
        return 0.0 if self.cache_hit else float(self.cost_usd or 0.0)


def submission_metadata(file_name: str, batch_id: str, attempt: int) -> dict[str, Any]:
    """Metadata of a document's `extraction` observation when it is handed to a batch."""
    return {"status": SUBMITTED, "file_name": file_name, "batch_id": batch_id, "attempt": attempt}


def outcome_metadata(outcome: ExtractionRecord) -> dict[str, Any]:
    """Per-document metadata of an extraction (materialisation or failure observation)."""
    call = outcome.call
    metadata: dict[str, Any] = {
        "status": outcome.status,
        "file_name": outcome.file_name,
        "sha256": outcome.sha256,
        "cache_hit": outcome.cache_hit,
    }
    if outcome.record is not None:
        metadata["record"] = dg.MetadataValue.json(outcome.record)
    if call is not None:
        metadata.update(
            {
                "model": call.model,
                "input_tokens": call.input_tokens,
                "cached_input_tokens": call.cached_input_tokens,
                "output_tokens": call.output_tokens,
                "cost_usd": dg.MetadataValue.float(float(call.cost_usd or 0.0)),
                "latency_seconds": dg.MetadataValue.float(call.latency_seconds),
                "attempts": call.attempts,
                "request_id": call.request_id or "",
                "api_mode": call.api_mode,
                "input_mode": call.input_mode,
            }
        )
    if outcome.pages is not None:
        metadata["pages"] = outcome.pages
    if outcome.findings:
        metadata["findings"] = dg.MetadataValue.md(
            "\n".join(f"- **{f.check}**: {f.message}" for f in outcome.findings)
        )
    if outcome.review_reason:
        metadata["review_reason"] = outcome.review_reason
    if outcome.batch_id:
        metadata["batch_id"] = outcome.batch_id
    if outcome.error_kind:
        metadata["error_kind"] = outcome.error_kind
        metadata["error_message"] = outcome.error_message or ""
        metadata["retryable"] = bool(outcome.retryable)
    return metadata


def outcome_tags(outcome: ExtractionRecord) -> dict[str, str]:
    """Tags of an outcome's event: a failure's retryability, indexed by the event-log storage
    (the same value as its `retryable` metadata, readable without decoding the event)."""
    if not outcome.error_kind:
        return {}
    return {RETRYABLE_TAG: "true" if outcome.retryable else "false"}


def retryable_from_tag(value: str | None) -> bool | None:
    """A failure's retryability from its `outcome_tags` value (None: the event has no tag)."""
    return None if value is None else value == "true"


def read_outcome(record: dg.EventLogRecord) -> RecordedOutcome | None:
    """The document outcome a stored event records, or None when it records none (another
    asset, another event type, no partition)."""
    entry = record.event_log_entry
    event = entry.dagster_event
    if (
        event is None
        or event.partition is None
        or event.event_type not in OUTCOME_EVENT_TYPES
        or event.asset_key not in DOCUMENT_KEYS
    ):
        return None
    materialized = event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
    data = event.event_specific_data
    happened = data.materialization if materialized else data.asset_observation  # type: ignore[union-attr]
    values = _plain(happened.metadata)
    return RecordedOutcome(
        document_key=event.partition,
        asset_key=event.asset_key,  # type: ignore[arg-type]
        materialized=materialized,
        run_id=entry.run_id,
        timestamp=entry.timestamp,
        storage_id=record.storage_id,
        status=_text(values.get("status")) or (None if materialized else "failed"),
        file_name=_text(values.get("file_name")) or "",
        error_kind=_text(values.get("error_kind")),
        error_message=_text(values.get("error_message")),
        retryable=_flag(values.get("retryable")),
        model=_text(values.get("model")),
        input_tokens=_whole(values.get("input_tokens")),
        output_tokens=_whole(values.get("output_tokens")),
        cost_usd=None if values.get("cost_usd") is None else float(values["cost_usd"]),
        cache_hit=_flag(values.get("cache_hit")),
        batch_id=_text(values.get("batch_id")),
    )


def read_outcomes(records: Iterable[dg.EventLogRecord]) -> list[RecordedOutcome]:
    return [outcome for outcome in map(read_outcome, records) if outcome is not None]


def _plain(metadata: Mapping[str, Any]) -> dict[str, Any]:
    return {name: getattr(value, "value", value) for name, value in metadata.items()}


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _flag(value: Any) -> bool | None:
    return None if value is None else bool(value)


def _whole(value: Any) -> int | None:
    return None if value is None else int(value)
