"""Archiving settled documents' partitions (core.operations.archive decides which)."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import dagster as dg

from extraction_pipeline.core.documents.registry import DocumentRegistry
from extraction_pipeline.core.operations.archive import (
    WINDOW,
    ArchiveCursor,
    ArchivePlan,
    plan_archive,
    window,
)
from extraction_pipeline.core.operations.lifecycle import RetryPolicy, classify
from extraction_pipeline.instance.facts import all_document_keys, document_facts
from extraction_pipeline.instance.names import DOCUMENTS_PARTITIONS_NAME


def archive_pass(
    instance: dg.DagsterInstance,
    registry: DocumentRegistry,
    cursor: ArchiveCursor,
    now: datetime,
    after: timedelta,
    policy: RetryPolicy,
    size: int = WINDOW,
) -> ArchivePlan:
    """One window of the live partitions, judged: what the `archive_settled` sensor does per
    tick (the daemon then removes the partitions)."""
    keys = all_document_keys(instance)
    start, stop = window(cursor, len(keys), size)
    chunk = keys[start:stop]
    states = {
        facts.document_key: classify(facts, policy)
        for facts in document_facts(instance, chunk, ordered_keys=keys)
    }
    registered = {key: _registered_at(registry, key) for key in chunk}
    return plan_archive(start, chunk, states, registered, now, after, len(keys))


@dataclass
class ArchiveReport:
    archived: list[str] = field(default_factory=list)
    kept: dict[str, int] = field(default_factory=dict)
    live_before: int = 0

    def add(self, plan: ArchivePlan) -> None:
        self.archived.extend(plan.archive)
        for state, count in plan.kept.items():
            self.kept[state] = self.kept.get(state, 0) + count


def archive_settled(
    instance: dg.DagsterInstance,
    registry: DocumentRegistry,
    now: datetime,
    after: timedelta,
    policy: RetryPolicy,
    dry_run: bool = False,
) -> ArchiveReport:
    """Every live partition in one go, window by window (`extraction-pipeline archive`)."""
    report = ArchiveReport(live_before=len(all_document_keys(instance)))
    cursor = ArchiveCursor()
    while True:
        plan = archive_pass(instance, registry, cursor, now, after, policy)
        report.add(plan)
        if dry_run:
            cursor = ArchiveCursor(plan.start + plan.examined)
        else:
            for key in plan.archive:
                instance.delete_dynamic_partition(DOCUMENTS_PARTITIONS_NAME, key)
            cursor = plan.cursor
        if plan.wrapped:
            return report


def _registered_at(registry: DocumentRegistry, key: str) -> datetime | None:
    record = registry.get(key)
    return None if record is None else record.registered_at
