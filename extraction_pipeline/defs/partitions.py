"""How many documents a run takes (the partitions themselves are named in instance.names)."""

import dagster as dg

# Runs over many documents (UI backfills, sensor batches, schedules) take at most this many per
# run: a run's process start-up costs ~2 s of CPU, so fewer, larger runs keep the overhead per
# document low; a failed run repeats little since extracted results are cached.
MAX_DOCUMENTS_PER_RUN = 200
DOCUMENTS_BACKFILL_POLICY = dg.BackfillPolicy.multi_run(
    max_partitions_per_run=MAX_DOCUMENTS_PER_RUN
)
