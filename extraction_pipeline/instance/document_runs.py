"""Runs over documents, written and read in one place.

A run covers one document (Dagster's partition tag) or several adjacent in partition order
(Dagster's range tags: one run, one process, many documents). The sensor, the schedules and
`ingest` build their runs here; the queries read a run's documents back here.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import dagster as dg

from extraction_pipeline.instance.names import PARTITION_TAG, RANGE_END_TAG, RANGE_START_TAG


@dataclass(frozen=True)
class DocumentsRun:
    """A run of `job_name` over `keys`, which must be adjacent in partition order."""

    job_name: str
    keys: Sequence[str]
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("a run needs at least one document")

    @property
    def partition_key(self) -> str | None:
        """The partition of a one-document run; None for a ranged run (its tags say the range)."""
        return self.keys[0] if len(self.keys) == 1 else None

    @property
    def run_tags(self) -> dict[str, str]:
        tags = dict(self.tags)
        if len(self.keys) > 1:
            tags.update({RANGE_START_TAG: self.keys[0], RANGE_END_TAG: self.keys[-1]})
        return tags

    @property
    def submission_tags(self) -> dict[str, str]:
        """The tags of this run when it is submitted by tags alone (GraphQL, the UI's
        launchpad): the partition tag for one document, the range tags for several."""
        tags = self.run_tags
        if self.partition_key is not None:
            tags[PARTITION_TAG] = self.partition_key
        return tags

    def request(self, run_key: str) -> dg.RunRequest:
        return dg.RunRequest(
            run_key=run_key,
            job_name=self.job_name,
            partition_key=self.partition_key,
            tags=self.run_tags,
        )


def run_document_keys(run: dg.DagsterRun, ordered_keys: Sequence[str]) -> list[str]:
    """The documents a run covers: its partition tag, or its range in partition order."""
    if PARTITION_TAG in run.tags:
        return [run.tags[PARTITION_TAG]]
    start, end = run.tags.get(RANGE_START_TAG), run.tags.get(RANGE_END_TAG)
    if start is None or end is None or start not in ordered_keys or end not in ordered_keys:
        return []
    first, last = ordered_keys.index(start), ordered_keys.index(end)
    return list(ordered_keys[first : last + 1])
