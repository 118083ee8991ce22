"""The `tables_automation` sensor: refreshes the Parquet tables when document outcomes are newer
than the tables and no run is under way to do it (core.tables.catch_up says why that suffices).

A tick is four indexed reads of the event log and the run table, whatever the number of
documents. It replaces an AutomationConditionSensor on the tables, whose evaluation loaded the
status of every `documents` partition: 21.5 s per tick at 100,000 documents (benchmarks/scale.py).
"""

import time
from collections.abc import Sequence

import dagster as dg

from extraction_pipeline.core.settings import Settings
from extraction_pipeline.core.tables.catch_up import CatchUpCursor, decide_catch_up
from extraction_pipeline.core.tables.layout import DOCUMENTS
from extraction_pipeline.defs.table_refresh import outcome_feeds
from extraction_pipeline.instance.facts import UNFINISHED
from extraction_pipeline.instance.names import TRIGGER_TAG


def newest_outcome(instance: dg.DagsterInstance) -> int | None:
    """The storage id of the newest outcome event (a batch submission counts too: a refresh
    then only moves the tables' position past it)."""
    newest = None
    for fetch, key in outcome_feeds(instance):
        records = fetch(dg.AssetRecordsFilter(asset_key=key), limit=1).records
        if records:
            newest = max(newest or 0, records[0].storage_id)
    return newest


def tables_position(instance: dg.DagsterInstance) -> int | None:
    """The change-feed position the last reported refresh read up to."""
    records = instance.fetch_materializations(dg.AssetKey(DOCUMENTS.name), limit=1).records
    if not records:
        return None
    materialization = records[0].asset_materialization
    value = materialization.metadata.get("feed_storage_id") if materialization else None
    if isinstance(value, dg.IntMetadataValue) and value.value is not None:
        return int(value.value)
    return None


def build_tables_sensor(
    settings: Settings, table_keys: Sequence[dg.AssetKey]
) -> dg.SensorDefinition:
    @dg.sensor(
        name="tables_automation",
        asset_selection=dg.AssetSelection.assets(*table_keys),
        minimum_interval_seconds=settings.tables_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Refreshes the Parquet tables when document outcomes are newer than them and "
        "no run is under way (every run refreshes them at its end; this catches up after a run "
        "that could not, e.g. one that died).",
    )
    def tables_automation(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        instance = context.instance
        decision = decide_catch_up(
            newest_outcome(instance),
            tables_position(instance),
            instance.get_runs_count(dg.RunsFilter(statuses=UNFINISHED)),
            CatchUpCursor.parse(context.cursor),
            time.time(),
        )
        cursor = decision.cursor.serialize()
        if not decision.refresh:
            return dg.SensorResult(skip_reason=decision.reason, cursor=cursor)
        context.log.info(decision.reason)
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    asset_selection=list(table_keys), tags={TRIGGER_TAG: "tables_automation"}
                )
            ],
            cursor=cursor,
        )

    return tables_automation
