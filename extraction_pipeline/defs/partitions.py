"""How many documents a run takes (the partitions themselves are named in instance.names)."""

import dagster as dg

# Runs over many documents (UI backfills, sensor batches, schedules) take at most
# EXTRACTION_DOCUMENTS_PER_RUN each (Settings.documents_per_run, 1,000 by default): a run's process
# start-up costs ~2 s of CPU, so fewer, larger runs keep the overhead per document low, and a
# failed run repeats little since extracted results are cached. On several workers a smaller
# number spreads a backfill over more of them.


def documents_backfill_policy(documents_per_run: int) -> dg.BackfillPolicy:
    """A backfill becomes ranged runs of at most `documents_per_run` partitions."""
    return dg.BackfillPolicy.multi_run(max_partitions_per_run=documents_per_run)
