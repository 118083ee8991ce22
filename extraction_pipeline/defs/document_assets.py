"""`source_document` and `extraction`: the per-document assets, computed by one op.

They are one op because Dagster skips a downstream step when its upstream step yields no output
or fails, and in a ranged run that would let one unreadable PDF stop the extraction of every
other document in the run. In one op each document goes as far as it can: a success is
materialised on its own partition, a failure is recorded as an observation (error, tokens, cost)
and, at the end, fails exactly the partitions that failed. The assets can still be materialised
separately (the op is subsettable): a backfill of `extraction` alone reads the stored originals.
"""

import contextlib
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import dagster as dg

from extraction_pipeline.core.documents.registry import DocumentRegistry
from extraction_pipeline.core.extraction.outcomes import ExtractionJob, SourceRead, read_source
from extraction_pipeline.core.extraction.records import ExtractionRecord
from extraction_pipeline.core.extraction.schemas import load_schema
from extraction_pipeline.core.extraction.stream import ExtractionStream
from extraction_pipeline.core.extraction.validation import ValidationPolicy
from extraction_pipeline.core.settings import ExtractionSettings
from extraction_pipeline.core.tables.layout import TableSet, record_layouts
from extraction_pipeline.defs.batch_steps import BatchSubmission, collect_batch
from extraction_pipeline.defs.event_batches import MAX_WAIT_SECONDS, EventBatches
from extraction_pipeline.defs.metadata import column_schema
from extraction_pipeline.defs.partitions import documents_backfill_policy
from extraction_pipeline.defs.resources import DocumentStoreResource, ExtractionAgentResource
from extraction_pipeline.defs.table_refresh import refresh_in_run
from extraction_pipeline.instance.batches import (
    batch_entries,
    documents_in_open_batches,
    waiting_documents,
)
from extraction_pipeline.instance.model_limits import deployment_limits
from extraction_pipeline.instance.names import (
    BATCH_TAG,
    EXTRACTION_KEY,
    MODE_TAG,
    PARENT_RUN_TAG,
    RETRY_ON_STEP_FAILURE_TAG,
    SOURCE_KEY,
    documents_partitions,
)
from extraction_pipeline.instance.outcomes import (
    OUTCOME_EVENT_TYPES,
    outcome_metadata,
    outcome_tags,
    read_outcomes,
)

MODEL_POOL = "openai"
STEP_RETRIES = 2

SOURCE_DESCRIPTION = """The original PDF of each document, stored content-addressed under the
data dir, with file name, SHA-256, size, page count and text-layer flag as metadata. An
unreadable PDF (empty, not a PDF, truncated or corrupt, encrypted, over the page or byte limit)
fails its own partition with the specific reason and never its neighbours; that failure is the
document's outcome (a row in documents.parquet with status failed and the reason)."""

EXTRACTION_DESCRIPTION = """The structured record the model extracted from each document
(structured outputs into the configured pydantic schema), validated by the business checks, with
tokens, cost, latency, attempts and model as metadata. Documents are extracted concurrently
under the deployment's limits (EXTRACTION_MAX_CONCURRENCY calls in flight and the RPM/TPM
window, shared by every run through Postgres); the `openai` pool bounds extraction steps. A
document already extracted with the same schema, model and prompt is served from the store and
never paid for twice. Step retries skip the documents the run already settled; run retries skip
the documents the runs they retry failed for good."""


@dataclass
class Settled:
    """What earlier attempts of this step already settled, per asset: key -> error ("" = ok)."""

    source: dict[str, str] = field(default_factory=dict)
    extraction: dict[str, str] = field(default_factory=dict)


def build_document_assets(
    settings: ExtractionSettings, max_attempts: int, documents_per_run: int
) -> dg.AssetsDefinition:
    layout = record_layouts(load_schema(settings.schema_ref), "extraction", "line_items").records
    specs = [
        dg.AssetSpec(
            SOURCE_KEY,
            description=SOURCE_DESCRIPTION,
            group_name="intake",
            kinds={"pdf"},
            skippable=True,
        ),
        dg.AssetSpec(
            EXTRACTION_KEY,
            deps=[SOURCE_KEY],
            description=EXTRACTION_DESCRIPTION,
            group_name="extraction",
            kinds={"openai", "python"},
            skippable=True,
            metadata={"dagster/column_schema": column_schema(layout)},
        ),
    ]

    @dg.multi_asset(
        name="document_assets",
        specs=specs,
        partitions_def=documents_partitions,
        backfill_policy=documents_backfill_policy(documents_per_run),
        can_subset=True,
        pool=MODEL_POOL,
        # For documents that failed transiently (rate limits, server errors, timeouts) after the
        # agent's own retries; what the run already settled is skipped.
        retry_policy=dg.RetryPolicy(
            max_retries=STEP_RETRIES,
            delay=settings.step_retry_delay_seconds,
            backoff=dg.Backoff.EXPONENTIAL,
            jitter=dg.Jitter.PLUS_MINUS,
        ),
        code_version="1",
    )
    def document_assets(
        context: dg.AssetExecutionContext,
        document_store: DocumentStoreResource,
        extraction_agent: ExtractionAgentResource,
    ) -> Iterator[
        dg.DagsterEvent | dg.AssetMaterialization | dg.AssetObservation | dg.AssetCheckEvaluation
    ]:
        keys = context.partition_keys
        selected = context.selected_asset_keys
        settled = _settled_before(context)
        failures = {k: v for k, v in {**settled.source, **settled.extraction}.items() if v}
        outcomes: list[ExtractionRecord] = []
        job = ExtractionJob(
            registry=document_store.registry(),
            records=document_store.records(),
            schema=extraction_agent.output_schema(),
            config=extraction_agent.agent_config_with_key(),
            policy=ValidationPolicy(),
            pdf_limits=document_store.pdf_limits(),
            run_id=context.run.run_id,
            stop_grace_seconds=extraction_agent.stop_grace_seconds,
            shared_limits=deployment_limits(context.instance),
        )
        extracting = EXTRACTION_KEY in selected
        batch_id = context.run.tags.get(BATCH_TAG)
        if extracting and batch_id is not None:
            # A run the batch sensor launched: the batch's answers are the outcomes.
            entries = batch_entries(context.instance)
            entry = next((e for e in entries if e.batch_id == batch_id), None)
            if entry is None:
                raise dg.Failure(f"no batch {batch_id} is recorded", allow_retries=False)
            # Only documents still waiting in this batch: not those collected already, nor
            # those an earlier attempt of this run settled or submitted again.
            waiting = waiting_documents(entries)
            pending = [
                k for k in keys if k not in settled.extraction and waiting.get(k) == batch_id
            ]
            for item in collect_batch(job, entry, max_attempts, pending, context.log):
                yield from _batch_events(item, outcomes, failures)
            unreadable_seen = False
        else:
            stream = _extractor(job, _mode(context, extraction_agent.mode)) if extracting else None
            unreadable_seen = yield from _read_and_extract(
                context, job, settled, stream, outcomes, failures
            )
        if extracting:
            context.log.info(_summary(outcomes, len(settled.extraction)))
        if extracting or unreadable_seen:
            # The run brings the tables up to date itself: rows appear as soon as the run's
            # documents are done (unreadable ones included), without waiting for another run.
            yield from refresh_in_run(
                context.instance, document_store, TableSet.for_schema(job.schema)
            )
        # Step retries only for what failed here for now (not what went to a batch again).
        retryable = any(o.retryable for o in outcomes if o.document_key in failures)

        if failures:
            raise dg.Failure(
                description="\n".join(
                    [f"{len(failures)} of {len(keys)} documents failed:"]
                    + [f"- {key}: {message}" for key, message in failures.items()]
                ),
                metadata={"failed_documents": dg.MetadataValue.json(failures)},
                allow_retries=retryable,
            )

    return document_assets


def _read_and_extract(
    context: dg.AssetExecutionContext,
    job: ExtractionJob,
    settled: Settled,
    stream: ExtractionStream | BatchSubmission | None,
    outcomes: list[ExtractionRecord],
    failures: dict[str, str],
) -> Generator[dg.DagsterEvent | dg.AssetMaterialization | dg.AssetObservation, None, bool]:
    """Read each document's source and extract it: online, each document goes to the model as
    soon as its source is read and each outcome is recorded soon after it is stored, in batches
    (reading, calls and event writes overlap); in batch mode they are submitted together at the
    end. Returns whether any document was unreadable."""
    # Neither extracted online nor submitted again: documents waiting in a batch (their answer
    # is on its way). A run retry of a submitting run finds its own batches here.
    waiting = documents_in_open_batches(context.instance) if stream is not None else {}
    events = EventBatches(context)
    with stream if stream is not None else contextlib.nullcontext():
        try:
            unreadable_seen = yield from _document_events(
                context, job, settled, stream, outcomes, failures, waiting, events
            )
            if isinstance(stream, BatchSubmission):
                for event in stream.submit_batches(context.log):
                    yield from _batch_events(event, outcomes, failures)
        except (dg.DagsterExecutionInterruptedError, KeyboardInterrupt):
            if stream is not None:
                context.log.warning(
                    f"interrupted: {stream.calls_in_flight()} model calls in flight get up to "
                    f"{job.stop_grace_seconds:.0f} s to finish; unsent documents are left for "
                    "the retry of this run"
                )
                events.add(_extraction_events(stream.interrupt(), outcomes, failures))
            yield from events.flush()
            raise _interrupted(
                context, context.partition_keys, settled, outcomes, failures
            ) from None
    return unreadable_seen


def _mode(context: dg.AssetExecutionContext, default: str) -> str:
    mode = context.run.tags.get(MODE_TAG, default)
    if mode not in ("online", "batch"):
        raise dg.Failure(f"run tag {MODE_TAG}={mode!r}: use online or batch", allow_retries=False)
    return mode


def _extractor(job: ExtractionJob, mode: str) -> ExtractionStream | BatchSubmission:
    return BatchSubmission(job) if mode == "batch" else ExtractionStream(job)


def _batch_events(
    item: ExtractionRecord | dg.AssetObservation,
    outcomes: list[ExtractionRecord],
    failures: dict[str, str],
) -> Iterator[dg.AssetMaterialization | dg.AssetObservation]:
    if isinstance(item, ExtractionRecord):
        yield from _extraction_events([item], outcomes, failures)
        return
    if item.asset_key == EXTRACTION_KEY and item.partition is not None:
        # Submitted (again) to a batch: not failed, its answer is on its way.
        failures.pop(item.partition, None)
    yield item


def _document_events(
    context: dg.AssetExecutionContext,
    job: ExtractionJob,
    settled: Settled,
    stream: ExtractionStream | BatchSubmission | None,
    outcomes: list[ExtractionRecord],
    failures: dict[str, str],
    waiting: Mapping[str, str],
    events: EventBatches,
) -> Generator[dg.DagsterEvent, None, bool]:
    """Each document's source event, then (when extracting) its extraction event as its
    outcome arrives, written in batches (`EventBatches`); all are written when it returns.
    Returns whether any document was unreadable."""
    unreadable_seen = False
    for key in context.partition_keys:
        info = None
        if SOURCE_KEY in context.selected_asset_keys and key not in settled.source:
            source = read_source(job.registry, key, job.pdf_limits, job.run_id)
            if isinstance(source, ExtractionRecord):
                # Stored before its event: the change feed finds the outcome it names.
                job.records.save(source)
                failures[key] = source.error_message or "unreadable"
                unreadable_seen = True
                context.log.error(f"{key}: {failures[key]}")
                events.add(
                    [
                        dg.AssetObservation(
                            asset_key=SOURCE_KEY, partition=key, metadata=outcome_metadata(source)
                        )
                    ]
                )
            else:
                info = source.info
                events.add([_source_materialization(job.registry, source)])
        if key in waiting and stream is not None:
            context.log.info(f"{key}: waits in batch {waiting[key]}; not taken again")
            continue
        if stream is not None and key not in settled.extraction and key not in failures:
            stream.submit(key, info)
            events.add(_extraction_events(stream.ready(), outcomes, failures))
        yield from events.flush_if_due()
    yield from events.flush()  # before waiting for the model
    if stream is not None:
        stream.close()
        for group in stream.remaining_groups(MAX_WAIT_SECONDS):
            events.add(_extraction_events(group, outcomes, failures))
            yield from events.flush()
    return unreadable_seen


def _interrupted(
    context: dg.AssetExecutionContext,
    keys: Sequence[str],
    settled: Settled,
    outcomes: list[ExtractionRecord],
    failures: dict[str, str],
) -> dg.Failure:
    """The failure of a step stopped mid-way (Ctrl-C of `dev`, SIGTERM, run termination).

    Dagster would turn the interrupt into a step retry (the step has a RetryPolicy), which keeps
    a stopping worker working. Instead the step fails without retries, and the run is tagged so
    that run retries relaunch it (on the next start of the daemon after a stop); a run terminated
    from the UI is canceled and not retried. The calls in flight were drained and recorded
    before this, so the retry pays for nothing twice.
    """
    done = set(settled.extraction) | set(failures) | {o.document_key for o in outcomes}
    left = [key for key in keys if key not in done]
    context.instance.add_run_tags(context.run.run_id, {RETRY_ON_STEP_FAILURE_TAG: "true"})
    return dg.Failure(
        description=f"interrupted: {len(left)} of {len(keys)} documents not extracted yet, "
        "left for the retry of this run",
        metadata={"interrupted_documents": dg.MetadataValue.json(left)},
        allow_retries=False,
    )


def _extraction_events(
    ready: Iterable[ExtractionRecord], outcomes: list[ExtractionRecord], failures: dict[str, str]
) -> Iterator[dg.AssetMaterialization | dg.AssetObservation]:
    """The event of each outcome: a materialisation, or an observation of the failure."""
    for outcome in ready:
        outcomes.append(outcome)
        metadata = outcome_metadata(outcome)
        if outcome.status == "failed":
            failures[outcome.document_key] = outcome.error_message or "failed"
            yield dg.AssetObservation(
                asset_key=EXTRACTION_KEY,
                partition=outcome.document_key,
                metadata=metadata,
                tags=outcome_tags(outcome),
            )
        else:
            yield dg.AssetMaterialization(
                asset_key=EXTRACTION_KEY, partition=outcome.document_key, metadata=metadata
            )


def _source_materialization(
    registry: DocumentRegistry, source: SourceRead
) -> dg.AssetMaterialization:
    record, info = source.document, source.info
    return dg.AssetMaterialization(
        asset_key=SOURCE_KEY,
        partition=record.document_key,
        metadata={
            "file_name": record.file_name,
            "sha256": record.sha256,
            "size_bytes": record.size_bytes,
            "pages": info.page_count,
            "has_text_layer": info.has_text_layer,
            "text_chars": info.text_chars,
            "registered_at": record.registered_at.isoformat(),
            "aliases": ", ".join(record.aliases),
            "original": dg.MetadataValue.path(registry.original_uri(record)),
        },
    )


def _settled_before(context: dg.AssetExecutionContext) -> Settled:
    """What this step must not do again.

    On a step retry: what the earlier attempts of this step settled, materialised or failed for
    good. On a run retry (a worker died, the run was interrupted): what the runs it retries
    failed for good; asking again would pay again for the same refusal or invalid answer. Their
    successes are not skipped: the store serves them free and this run records them again.
    Transient failures are tried again in both cases. A later run's outcome counts."""
    settled = Settled()
    runs = [(context.run.run_id, False)] if context.retry_number else []
    parent_id = context.run.tags.get(PARENT_RUN_TAG)
    while parent_id is not None:
        runs.append((parent_id, True))
        parent = context.instance.get_run_by_id(parent_id)
        parent_id = parent.tags.get(PARENT_RUN_TAG) if parent is not None else None
    decided: set[tuple[str, str]] = set()
    for run_id, failures_only in runs:  # the latest first
        for asset, key, error in _settled_in_run(context.instance, run_id):
            if (asset, key) in decided:
                continue
            decided.add((asset, key))
            if error is not None and (error or not failures_only):
                (settled.source if asset == "source" else settled.extraction)[key] = error
    return settled


def _settled_in_run(instance: dg.DagsterInstance, run_id: str) -> list[tuple[str, str, str | None]]:
    """(asset, document key, error) of the last outcome of each document in run `run_id`: ""
    when materialised, the message when failed for good, None when failed transiently."""
    records = instance.get_records_for_run(run_id, of_type=set(OUTCOME_EVENT_TYPES)).records
    last: dict[tuple[str, str], str | None] = {}
    for outcome in read_outcomes(records):  # oldest first
        asset = "source" if outcome.asset_key == SOURCE_KEY else "extraction"
        if outcome.materialized or outcome.is_submission:
            last[(asset, outcome.document_key)] = ""
        elif outcome.retryable is False:
            last[(asset, outcome.document_key)] = outcome.error_message or "failed"
        else:
            last[(asset, outcome.document_key)] = None  # tried again
    return [(asset, key, error) for (asset, key), error in last.items()]


def _summary(outcomes: list[ExtractionRecord], settled_before: int) -> str:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    paid = sum(o.call.cost_usd or 0.0 for o in outcomes if o.call is not None and not o.cache_hit)
    hits = sum(o.cache_hit for o in outcomes)
    parts = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "none"
    return (
        f"{len(outcomes)} documents extracted: {parts}; {hits} served from the store; "
        f"${paid:.4f} paid; {settled_before} settled by an earlier attempt"
    )
