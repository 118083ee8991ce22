"""The `batch_poller` sensor: follows every open Batch API batch until its answers are recorded.

Open batches are read from the event log (`model_batches` observations), so a restarted daemon
or a reset cursor loses none. The cursor only paces the polling: each batch is asked again
after a delay that doubles while its status stays the same (from EXTRACTION_BATCH_POLL_SECONDS
up to MAX_POLL_SECONDS) and starts over when it changes. When the provider says a batch ended,
that is recorded in the same tick as the runs that collect it (one per run of adjacent
documents). A batch stays open until those runs have recorded every document: if they failed
(the provider unreachable while downloading, say), it launches them again, after the same
backoff, and never while one of them is still under way or about to be retried.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace

import dagster as dg
import openai

from extraction_pipeline.core.extraction.batch import BatchApi, BatchState
from extraction_pipeline.core.operations.lifecycle import contiguous_batches
from extraction_pipeline.core.settings import Settings
from extraction_pipeline.defs.batch_steps import LOST
from extraction_pipeline.defs.jobs import extraction_job
from extraction_pipeline.defs.resources import ExtractionAgentResource
from extraction_pipeline.instance.batches import (
    BatchEntry,
    collected_event,
    ended_event,
    open_batches,
)
from extraction_pipeline.instance.document_runs import DocumentsRun
from extraction_pipeline.instance.names import (
    BATCH_ATTEMPT_TAG,
    BATCH_TAG,
    DOCUMENTS_PARTITIONS_NAME,
    MODEL_BATCHES_KEY,
    TRIGGER_TAG,
    WILL_RETRY_TAG,
)

MAX_POLL_SECONDS = 600.0

model_batches_asset = dg.AssetSpec(
    MODEL_BATCHES_KEY,
    description="Batches handed to the provider's Batch API (EXTRACTION_MODE=batch, or "
    "`extraction-pipeline batch submit`): an observation when one is submitted (its documents) "
    "and when it ends (its status and counts). Kept by the document runs and the batch_poller "
    "sensor.",
    group_name="extraction",
    kinds={"openai"},
)


@dataclass
class Pace:
    """When to ask about a batch next."""

    status: str
    delay: float
    due: float


def build_batch_sensor(settings: Settings) -> dg.SensorDefinition:
    first_delay = float(settings.extraction.batch_poll_seconds)

    @dg.sensor(
        name="batch_poller",
        job=extraction_job,
        minimum_interval_seconds=settings.extraction.batch_poll_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Polls every open Batch API batch (with backoff) and, when one ends, "
        "launches the runs that record its answers and submit again what it left unanswered.",
    )
    def batch_poller(
        context: dg.SensorEvaluationContext, extraction_agent: ExtractionAgentResource
    ) -> dg.SensorResult | dg.SkipReason:
        batches = open_batches(context.instance)
        if not batches:
            return dg.SkipReason("no open batch")
        paces = {k: Pace(**v) for k, v in json.loads(context.cursor or "{}").items()}
        now = time.time()
        requests: list[dg.RunRequest] = []
        events: list[dg.AssetObservation] = []
        config = extraction_agent.agent_config_with_key()
        # A tick must not wait on one slow answer for long: it asks again on the next one.
        with BatchApi(replace(config, timeout_seconds=min(config.timeout_seconds, 30))) as api:
            for entry in batches:
                pace = paces.get(entry.batch_id)
                if pace is not None and pace.due > now:
                    continue
                if entry.has_ended:  # its collecting runs failed: again, unless under way
                    if _collecting(context.instance, entry.batch_id, now - first_delay):
                        continue
                    context.log.info(f"batch {entry.batch_id}: collecting it again")
                    requests += _collect_runs(context.instance, entry, settings.documents_per_run)
                    paces[entry.batch_id] = _next(pace, "collecting", first_delay, now)
                    continue
                state = _state(api, entry.batch_id, context)
                if state is None:  # the provider did not answer: ask again later
                    paces[entry.batch_id] = _next(pace, "unreachable", first_delay, now)
                    continue
                if state.is_open:
                    paces[entry.batch_id] = _next(pace, state.status, first_delay, now)
                    context.log.info(
                        f"batch {entry.batch_id}: {state.status}, {state.completed} of "
                        f"{state.total} answered"
                    )
                    continue
                paces[entry.batch_id] = _next(None, "collecting", first_delay, now)
                context.log.info(f"batch {entry.batch_id} ended: {state.status}")
                events.append(ended_event(state))
                runs = _collect_runs(context.instance, entry, settings.documents_per_run)
                if not runs:  # none of its documents is a partition any more
                    events.append(collected_event(entry.batch_id, entry.uncollected))
                requests += runs
        cursor = json.dumps({k: asdict(v) for k, v in paces.items()})
        if not requests and not events:
            return dg.SensorResult(skip_reason="no batch ended", cursor=cursor)
        return dg.SensorResult(run_requests=requests, asset_events=events, cursor=cursor)

    return batch_poller


def _collecting(instance: dg.DagsterInstance, batch_id: str, settled_before: float) -> bool:
    """Whether a run collecting `batch_id` is under way, about to be retried by run retries, or
    ended too recently to tell (the retry is created just after the failure)."""
    runs = instance.get_run_records(dg.RunsFilter(tags={BATCH_TAG: batch_id}))
    for record in runs:
        run = record.dagster_run
        if not run.is_finished or run.tags.get(WILL_RETRY_TAG) == "true":
            return True
        ended = record.end_time or record.update_timestamp.timestamp()
        if ended > settled_before:
            return True
    return False


def _state(api: BatchApi, batch_id: str, context: dg.SensorEvaluationContext) -> BatchState | None:
    try:
        return api.state(batch_id)
    except openai.NotFoundError:
        context.log.warning(f"batch {batch_id} is unknown to the provider: collecting it as lost")
        return BatchState(batch_id, LOST)
    except openai.OpenAIError as error:
        context.log.warning(f"batch {batch_id}: cannot ask the provider ({type(error).__name__})")
        return None


def _next(pace: Pace | None, status: str, first_delay: float, now: float) -> Pace:
    """Poll sooner after a change, ever later while nothing changes."""
    if pace is None or pace.status != status:
        delay = first_delay
    else:
        delay = min(pace.delay * 2, MAX_POLL_SECONDS)
    return Pace(status=status, delay=delay, due=now + delay)


def _collect_runs(
    instance: dg.DagsterInstance, entry: BatchEntry, per_run: int
) -> list[dg.RunRequest]:
    """Runs over the documents of `entry` not collected yet; keyed by the batch and by how
    many collecting runs it has had, so a tick evaluated twice launches nothing new."""
    ordered = instance.get_dynamic_partitions(DOCUMENTS_PARTITIONS_NAME)
    groups = contiguous_batches(ordered, entry.uncollected, per_run)
    round_ = instance.get_runs_count(dg.RunsFilter(tags={BATCH_TAG: entry.batch_id}))
    tags = {
        BATCH_TAG: entry.batch_id,
        BATCH_ATTEMPT_TAG: str(entry.attempt),
        TRIGGER_TAG: "batch_poller",
    }
    return [
        DocumentsRun(extraction_job.name, keys, tags).request(
            f"batch:{entry.batch_id}:{round_}:{index}"
        )
        for index, keys in enumerate(groups)
    ]
