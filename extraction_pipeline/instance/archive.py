"""Archiving settled documents' partitions (core.operations.archive decides which)."""

from collections.abc import Collection, Sequence
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
from extraction_pipeline.core.operations.dead_letters import DeadLetterStore
from extraction_pipeline.core.store import ObjectStore
from extraction_pipeline.instance.facts import (
    all_document_keys,
    busy_documents,
    extracted_documents,
)
from extraction_pipeline.instance.names import DOCUMENTS_PARTITIONS_NAME
from extraction_pipeline.instance.partition_status import refresh_partition_status


@dataclass(frozen=True)
class Standing:
    """What a pass needs to know of every live document, read once: three cheap reads (which
    live documents are extracted, the unfinished runs and open batches, the dead letters'
    names), not each document's full state."""

    keys: list[str]
    settled: set[str]
    busy: set[str]

    @classmethod
    def read(cls, instance: dg.DagsterInstance, store: ObjectStore) -> "Standing":
        keys = all_document_keys(instance)
        extracted = extracted_documents(instance, keys)
        settled = extracted | DeadLetterStore(store).keys()
        return cls(keys, settled, busy_documents(instance, keys))

    def live_after(self, archived: Collection[str]) -> list[str]:
        """The live keys once `archived` are removed, in Dagster's order."""
        gone = set(archived)
        return [key for key in self.keys if key not in gone]


def archive_pass(
    standing: Standing,
    store: ObjectStore,
    cursor: ArchiveCursor,
    now: datetime,
    after: timedelta,
    size: int = WINDOW,
) -> ArchivePlan:
    """One window of the live partitions, judged: what the `archive_settled` sensor does per
    tick (the daemon then removes the partitions)."""
    start, stop = window(cursor, len(standing.keys), size)
    chunk = standing.keys[start:stop]
    registry = DocumentRegistry(store)
    registered = {key: _registered_at(registry, key) for key in chunk}
    return plan_archive(
        start, chunk, standing.settled, standing.busy, registered, now, after, len(standing.keys)
    )


@dataclass
class ArchiveReport:
    archived: list[str] = field(default_factory=list)
    kept: dict[str, int] = field(default_factory=dict)
    live_before: int = 0

    def add(self, plan: ArchivePlan) -> None:
        self.archived.extend(plan.archive)
        for reason, count in plan.kept.items():
            self.kept[reason] = self.kept.get(reason, 0) + count


def archive_settled(
    instance: dg.DagsterInstance,
    store: ObjectStore,
    now: datetime,
    after: timedelta,
    dry_run: bool = False,
) -> ArchiveReport:
    """Every live partition in one go (`extraction-pipeline archive`), window by window over
    one reading of the documents' standing."""
    standing = Standing.read(instance, store)
    report = ArchiveReport(live_before=len(standing.keys))
    start = 0
    while True:
        plan = archive_pass(standing, store, ArchiveCursor(start), now, after)
        report.add(plan)
        if not dry_run:
            remove_partitions(instance, plan.archive)
        start = plan.start + plan.examined  # over the same reading: removed keys still count
        if plan.wrapped:
            break
    if report.archived and not dry_run:
        live = standing.live_after(report.archived)
        refresh_partition_status(instance, live, before=standing.keys)
    return report


def remove_partitions(instance: dg.DagsterInstance, keys: Sequence[str]) -> None:
    """Removes the `documents` partitions of `keys` (Dagster removes one key per call)."""
    for key in keys:
        instance.delete_dynamic_partition(DOCUMENTS_PARTITIONS_NAME, key)


def _registered_at(registry: DocumentRegistry, key: str) -> datetime | None:
    record = registry.get(key)
    return None if record is None else record.registered_at
