"""The few Dagster names this project needs that Dagster does not export publicly.

Each is used where Dagster offers no public way:
- a run launcher's health-check result types (run monitoring asks launchers for them) and the
  run tag where the default launcher records the code server it used;
- the type a configurable storage class is constructed with (dagster.yaml's `module`/`class`),
  and what the event-log storage (`instance/event_log.py`) needs to write events as
  dagster-postgres does: the event table and which event types touch the asset tables; and
  the event and tag tables whose columns `instance/event_columns.py` reads without decoding;
- how a step logs its events as one batch (`batched_step_events`), as Dagster does for a ranged
  output's materialisations;
- the tags that carry a materialisation's data provenance. Dagster writes them for an asset's
  own outputs; the document runs report the tables they refresh from inside their step, and
  without these tags the UI calls those tables "Unsynced" (`dg.DataProvenance.from_tags` is
  the public reader of the same tags).
- the partition status Dagster stores per asset (`AssetStatusCacheValue`), the stamp it carries
  (a hash of the partition keys it was computed for) and the storage id it starts from, which
  `instance/partition_status.py` stores for the live documents when their set changes.
`extraction_pipeline_tests/instance/test_dagster_compat.py` fails loudly if an upgrade moves or
changes any of them.
"""

from collections.abc import Mapping, Sequence

import dagster as dg
from dagster._core.definitions.data_version import (
    CODE_VERSION_TAG,
    DATA_VERSION_TAG,
    NULL_EVENT_POINTER,
    UNKNOWN_DATA_VERSION,
    get_input_data_version_tag,
    get_input_event_pointer_tag,
)
from dagster._core.definitions.partitions.utils.base import (
    generate_partition_key_based_definition_id as partition_keys_stamp,
)
from dagster._core.events import (
    ASSET_CHECK_EVENTS,
    ASSET_EVENTS,
    DagsterEventBatchMetadata,
    generate_event_batch_id,
)
from dagster._core.execution.context.system import StepExecutionContext
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus
from dagster._core.storage.event_log import SqlEventLogStorageTable
from dagster._core.storage.event_log.schema import AssetEventTagsTable
from dagster._core.storage.partition_status_cache import (
    AssetStatusCacheValue,
)
from dagster._core.storage.partition_status_cache import (
    get_last_planned_storage_id as last_planned_storage_id,
)
from dagster._core.storage.tags import GRPC_INFO_TAG
from dagster._serdes import ConfigurableClassData

__all__ = [
    "ASSET_CHECK_EVENTS",
    "ASSET_EVENTS",
    "GRPC_INFO_TAG",
    "AssetEventTagsTable",
    "AssetStatusCacheValue",
    "CheckRunHealthResult",
    "ConfigurableClassData",
    "SqlEventLogStorageTable",
    "WorkerStatus",
    "batched_step_events",
    "last_planned_storage_id",
    "partition_keys_stamp",
    "provenance_tags",
]


def provenance_tags(
    code_version: str, data_version: str, inputs: Mapping[dg.AssetKey, int | None]
) -> dict[str, str]:
    """The provenance tags of a materialisation made with `code_version` from its inputs as they
    stood at event-log position `inputs[key]` (None: the input had no materialisation)."""
    tags = {CODE_VERSION_TAG: code_version, DATA_VERSION_TAG: data_version}
    for key, storage_id in inputs.items():
        # Partitioned inputs are compared by position, not data version.
        tags[get_input_data_version_tag(key)] = UNKNOWN_DATA_VERSION.value
        pointer = NULL_EVENT_POINTER if storage_id is None else str(storage_id)
        tags[get_input_event_pointer_tag(key)] = pointer
    return tags


def batched_step_events(
    step_context: StepExecutionContext,
    events: Sequence[dg.AssetMaterialization | dg.AssetObservation],
) -> list[dg.DagsterEvent]:
    """`events` as one batch of the step's Dagster events, as Dagster logs a ranged output's
    materialisations: each is logged when built (Dagster holds a batch until its last event
    when DAGSTER_EVENT_BATCH_SIZE is set, then writes it with one `store_event_batch`); the step
    yields them so they appear among its events as `context.log_event`'s do."""
    batch_id = generate_event_batch_id()
    built = []
    for index, event in enumerate(events):
        metadata = DagsterEventBatchMetadata(batch_id, index == len(events) - 1)
        if isinstance(event, dg.AssetMaterialization):
            built.append(dg.DagsterEvent.asset_materialization(step_context, event, metadata))
        else:
            built.append(dg.DagsterEvent.asset_observation(step_context, event, metadata))
    return built
