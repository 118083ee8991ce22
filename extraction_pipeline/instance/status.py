"""`extraction-pipeline status`: documents by state, with what they cost so far."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import pyarrow.compute as pc
import pyarrow.parquet as pq

from extraction_pipeline.core.operations.dead_letters import DeadLetter, DeadLetterStore
from extraction_pipeline.core.operations.lifecycle import DocumentState, RetryPolicy, classify
from extraction_pipeline.core.store import ObjectStore
from extraction_pipeline.core.tables.layout import DOCUMENTS_TABLE, table_path
from extraction_pipeline.instance.facts import all_document_keys, document_facts


@dataclass(frozen=True)
class StatusReport:
    as_of: datetime
    total: int
    counts: dict[str, int]
    cost_usd: float  # every attempt so far, as of the last table refresh
    documents_by_state: dict[str, list[str]] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat(),
            "total": self.total,
            "counts": self.counts,
            "cost_usd": self.cost_usd,
            "documents_by_state": self.documents_by_state,
            "dead_letters": [letter.model_dump(mode="json") for letter in self.dead_letters],
        }


def status_report(
    instance: dg.DagsterInstance, store: ObjectStore, policy: RetryPolicy
) -> StatusReport:
    keys = all_document_keys(instance)
    review_keys, cost = _documents_table(store)
    by_state: dict[str, list[str]] = {state.value: [] for state in DocumentState}
    for facts in document_facts(instance, keys, review_keys, ordered_keys=keys):
        by_state[classify(facts, policy).value].append(facts.document_key)
    return StatusReport(
        as_of=datetime.now(UTC),
        total=len(keys),
        counts={state: len(documents) for state, documents in by_state.items()},
        cost_usd=cost,
        documents_by_state=by_state,
        dead_letters=DeadLetterStore(store).all(),
    )


def _documents_table(store: ObjectStore) -> tuple[set[str], float]:
    try:
        data = store.get(table_path(DOCUMENTS_TABLE))
    except FileNotFoundError:
        return set(), 0.0
    table = pq.read_table(io.BytesIO(data), columns=["document_key", "status", "cost_usd_total"])
    review = table.filter(pc.equal(table["status"], "needs_review"))["document_key"].to_pylist()
    return set(review), round(float(pc.sum(table["cost_usd_total"]).as_py() or 0.0), 6)
