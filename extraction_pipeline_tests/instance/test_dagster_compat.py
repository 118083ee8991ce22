"""The private Dagster names in `dagster_compat` still exist and mean what the project relies on."""

import os
import time

import dagster as dg

from extraction_pipeline.instance.dagster_compat import (
    GRPC_INFO_TAG,
    AssetEventTagsTable,
    AssetStatusCacheValue,
    CheckRunHealthResult,
    ConfigurableClassData,
    SqlEventLogStorageTable,
    WorkerStatus,
    partition_keys_stamp,
    provenance_tags,
)
from extraction_pipeline.instance.event_log import PooledPostgresEventLogStorage
from extraction_pipeline.instance.run_launcher import WorkerCheckingRunLauncher, worker_status


def test_private_names_the_project_relies_on_are_still_there() -> None:
    assert GRPC_INFO_TAG == ".dagster/grpc_info"
    assert {s.name for s in WorkerStatus} >= {"RUNNING", "NOT_FOUND", "FAILED", "SUCCESS"}
    assert CheckRunHealthResult(WorkerStatus.RUNNING).status is WorkerStatus.RUNNING
    assert issubclass(WorkerCheckingRunLauncher, dg.DefaultRunLauncher)
    data = ConfigurableClassData("extraction_pipeline.instance.event_log", "X", "{}")
    assert data.module_name == "extraction_pipeline.instance.event_log"
    assert "inst_data" in PooledPostgresEventLogStorage.__init__.__code__.co_varnames
    # Columns instance/event_columns.py reads.
    assert {"id", "run_id", "asset_key", "dagster_event_type", "partition"} <= set(
        SqlEventLogStorageTable.c.keys()
    )
    assert {"event_id", "key", "value"} <= set(AssetEventTagsTable.c.keys())


def test_provenance_tags_read_back_through_dagsters_public_reader() -> None:
    source, extraction = dg.AssetKey("source_document"), dg.AssetKey("extraction")
    tags = provenance_tags("1", "feed-9", {source: 7, extraction: None})

    provenance = dg.DataProvenance.from_tags(tags)

    assert provenance is not None
    assert provenance.code_version == "1"
    assert provenance.input_storage_ids == {source: 7, extraction: None}
    assert set(provenance.input_data_versions) == {source, extraction}
    # Accepted as Dagster's own tags on a user-built materialisation.
    assert dg.AssetMaterialization("documents", tags=tags).tags == tags


def test_worker_status_tells_a_live_worker_from_a_gone_or_reused_one() -> None:
    me = os.getpid()
    assert worker_status(me, run_started_at=time.time()).status is WorkerStatus.RUNNING
    # A process created long after the run started is not its worker: the id was reused.
    assert worker_status(me, run_started_at=0.0).status is WorkerStatus.NOT_FOUND
    assert worker_status(2**22 + 17, time.time()).status is WorkerStatus.NOT_FOUND


def test_the_partition_status_is_stamped_with_dagsters_hash_of_the_partition_keys() -> None:
    # instance/partition_status.py stamps what it stores as Dagster stamps its own status
    # (defs/test_archive.py checks a reader takes it, against a dynamic definition).
    keys = ["b", "a", "c"]
    assert (
        partition_keys_stamp(keys)
        == dg.StaticPartitionsDefinition(keys).get_serializable_unique_identifier()
    )
    assert partition_keys_stamp(keys) != partition_keys_stamp(sorted(keys))
    assert set(AssetStatusCacheValue._fields) >= {
        "latest_storage_id",
        "partitions_def_id",
        "serialized_materialized_partition_subset",
        "serialized_failed_partition_subset",
        "serialized_in_progress_partition_subset",
        "earliest_in_progress_materialization_event_id",
    }
