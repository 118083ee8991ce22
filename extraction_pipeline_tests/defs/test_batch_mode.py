"""Batch mode through Dagster: a run submits, the poller sees the batch end, a run collects it.

Real components: Postgres, the `openai` SDK over HTTP against the simulator's Files and Batch
API, the shipped definitions; the sensor is evaluated as the daemon would.
"""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import pytest

from extraction_pipeline.cli.samples import invoice_pdf, make_invoice
from extraction_pipeline.core.documents.registry import DocumentRegistry
from extraction_pipeline.core.extraction.batch import BatchApi
from extraction_pipeline.core.settings import Settings
from extraction_pipeline.core.store import LocalObjectStore
from extraction_pipeline.defs.batch_sensor import MAX_POLL_SECONDS, Pace, _next
from extraction_pipeline.instance.batches import batch_entries, documents_in_open_batches
from extraction_pipeline.instance.facts import busy_documents
from extraction_pipeline.instance.history import document_history
from extraction_pipeline.instance.names import (
    BATCH_TAG,
    EXTRACTION_KEY,
    MODE_TAG,
    documents_partitions,
)
from extraction_pipeline.instance.outcomes import read_outcomes
from extraction_pipeline.simulator import SimulatorControl
from extraction_pipeline_tests.defs.helpers import definitions_for

COUNT = 4


def register(instance: dg.DagsterInstance, settings: Settings, count: int = COUNT) -> list[str]:
    registry = DocumentRegistry(LocalObjectStore(settings.data_dir))
    keys = [
        registry.register(f"march-{i}.pdf", invoice_pdf(make_invoice(i))).record.document_key
        for i in range(count)
    ]
    instance.add_dynamic_partitions(documents_partitions.name, keys)
    return instance.get_dynamic_partitions(documents_partitions.name)


def run(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    job: str,
    keys: list[str],
    tags: dict[str, str],
) -> dg.ExecuteInProcessResult:
    if len(keys) > 1:
        tags = {
            **tags,
            "dagster/asset_partition_range_start": keys[0],
            "dagster/asset_partition_range_end": keys[-1],
        }
    return defs.resolve_job_def(job).execute_in_process(
        instance=instance,
        partition_key=keys[0] if len(keys) == 1 else None,
        tags=tags,
        raise_on_error=False,
    )


def poll_until_collect_runs(
    defs: dg.Definitions, instance: dg.DagsterInstance, timeout: float = 30
) -> list[dg.RunRequest]:
    """Evaluate `batch_poller` as the daemon does (cursor kept between ticks)."""
    sensor = defs.resolve_sensor_def("batch_poller")
    cursor = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with dg.build_sensor_context(
            instance=instance,
            cursor=cursor,
            definitions=defs,
            resources={"extraction_agent": defs.resources["extraction_agent"]},
        ) as context:
            result = sensor(context)
        if isinstance(result, dg.SensorResult):
            cursor = result.cursor
            if result.run_requests:
                for event in result.asset_events or []:
                    instance.report_runless_asset_event(event)
                return list(result.run_requests)
            # The pace doubles while the status stays: poll again at once in the test.
            cursor = None
        time.sleep(0.2)
    raise AssertionError("the batch did not end in time")


def collect(
    defs: dg.Definitions, instance: dg.DagsterInstance, request: dg.RunRequest
) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def(request.job_name or "extraction_job").execute_in_process(
        instance=instance,
        partition_key=request.partition_key,
        tags=dict(request.tags),
        raise_on_error=False,
    )


def extraction_outcomes(instance: dg.DagsterInstance, run_id: str) -> dict[str, object]:
    records = instance.get_records_for_run(
        run_id,
        of_type={dg.DagsterEventType.ASSET_MATERIALIZATION, dg.DagsterEventType.ASSET_OBSERVATION},
    ).records
    return {o.document_key: o for o in read_outcomes(records) if o.asset_key == EXTRACTION_KEY}


@pytest.fixture
def batch_settings(pipeline_settings: Settings) -> Settings:
    extraction = pipeline_settings.extraction.model_copy(
        update={"mode": "batch", "batch_poll_seconds": 1}
    )
    return pipeline_settings.model_copy(update={"extraction": extraction})


def test_a_batch_is_submitted_polled_and_collected_at_half_the_online_price(
    instance: dg.DagsterInstance,
    batch_settings: Settings,
    model_simulator: SimulatorControl,
    tmp_path: Path,
) -> None:
    defs = definitions_for(batch_settings)
    keys = register(instance, batch_settings)

    submitted = run(defs, instance, "intake_job", keys, {})

    assert submitted.success
    (entry,) = batch_entries(instance)
    assert sorted(entry.documents) == sorted(keys) and entry.is_open
    assert set(documents_in_open_batches(instance)) == set(keys)
    assert set(busy_documents(instance, keys)) == set(keys)  # no schedule takes them meanwhile
    outcomes = extraction_outcomes(instance, submitted.run_id)
    assert {o.status for o in outcomes.values()} == {"submitted"}
    assert model_simulator.requests()["count"] == 0  # nothing answered online

    (request,) = poll_until_collect_runs(defs, instance)
    assert request.tags[BATCH_TAG] == entry.batch_id
    collected = collect(defs, instance, request)

    assert collected.success
    outcomes = extraction_outcomes(instance, collected.run_id)
    assert {o.status for o in outcomes.values()} == {"extracted"}
    assert {o.batch_id for o in outcomes.values()} == {entry.batch_id}
    assert instance.get_materialized_partitions(EXTRACTION_KEY) == set(keys)
    assert batch_entries(instance)[0].status == "completed"
    assert documents_in_open_batches(instance) == {}
    attempts = [a for a in document_history(instance, keys[0]) if a.asset == "extraction"]
    assert [(a.outcome, a.batch_id) for a in attempts] == [
        ("submitted", entry.batch_id),
        ("extracted", entry.batch_id),
    ]

    # The same documents online, in another data dir (nothing cached): twice the price.
    online_settings = batch_settings.model_copy(
        update={
            "data_dir": tmp_path / "online",
            "extraction": batch_settings.extraction.model_copy(update={"mode": "online"}),
        }
    )
    with dg.instance_for_test() as other:
        online_keys = register(other, online_settings)
        online = run(definitions_for(online_settings), other, "intake_job", online_keys, {})
        online_cost = {
            o.file_name: o.cost_usd for o in extraction_outcomes(other, online.run_id).values()
        }
    batch_cost = {o.file_name: o.cost_usd for o in outcomes.values()}
    assert batch_cost.keys() == online_cost.keys()
    for name, cost in batch_cost.items():
        assert cost == pytest.approx(online_cost[name] / 2)


def test_a_run_tag_chooses_batch_mode_and_online_runs_skip_documents_waiting_in_a_batch(
    instance: dg.DagsterInstance, pipeline_settings: Settings, model_simulator: SimulatorControl
) -> None:
    defs = definitions_for(pipeline_settings)  # online by default
    keys = register(instance, pipeline_settings)

    run(defs, instance, "intake_job", keys[:2], {MODE_TAG: "batch"})
    online = run(defs, instance, "extraction_job", keys, {})

    assert online.success
    assert set(extraction_outcomes(instance, online.run_id)) == set(keys[2:])
    assert model_simulator.requests()["count"] == len(keys) - 2  # paid once each, so far

    (request,) = poll_until_collect_runs(defs, instance)
    collect(defs, instance, request)
    again = run(defs, instance, "extraction_job", keys, {})
    assert all(o.cache_hit for o in extraction_outcomes(instance, again.run_id).values())
    assert model_simulator.requests()["count"] == len(keys) - 2


def test_an_unknown_mode_tag_fails_the_run_saying_which(
    instance: dg.DagsterInstance, pipeline_settings: Settings, model_simulator: SimulatorControl
) -> None:
    defs = definitions_for(pipeline_settings)
    keys = register(instance, pipeline_settings, 1)

    result = run(defs, instance, "intake_job", keys, {MODE_TAG: "later"})

    assert not result.success
    assert "use online or batch" in str(result.get_step_failure_events()[0].step_failure_data.error)


def invoice_number(index: int) -> str:
    return make_invoice(index).invoice_number


def collect_until_settled(
    defs: dg.Definitions, instance: dg.DagsterInstance, rounds: int = 3
) -> list[dg.ExecuteInProcessResult]:
    """Poll and collect until no batch is open (each round may submit the next)."""
    results = []
    for _ in range(rounds):
        if not documents_in_open_batches(instance):
            break
        for request in poll_until_collect_runs(defs, instance):
            results.append(collect(defs, instance, request))
    return results


def test_failed_lines_fail_their_documents_and_are_submitted_again(
    instance: dg.DagsterInstance, batch_settings: Settings, model_simulator: SimulatorControl
) -> None:
    defs = definitions_for(batch_settings)
    keys = register(instance, batch_settings)
    flaky = keys[[invoice_number(i) for i in range(COUNT)].index(invoice_number(2))]
    model_simulator.set_faults(f"500:match={invoice_number(2)}:count=1")
    run(defs, instance, "intake_job", keys, {})

    first, second = collect_until_settled(defs, instance)

    assert first.success  # the failed line is submitted again, not given up
    outcomes = extraction_outcomes(instance, first.run_id)
    assert outcomes[flaky].status == "submitted"  # its last event in the run
    failed = [
        o
        for o in read_outcomes(instance.get_records_for_run(first.run_id).records)
        if o.document_key == flaky and o.status == "failed"
    ]
    assert failed and failed[0].error_kind == "server_error"
    assert {k for k, o in outcomes.items() if o.status == "extracted"} == set(keys) - {flaky}
    assert extraction_outcomes(instance, second.run_id)[flaky].status == "extracted"
    assert [e.attempt for e in batch_entries(instance)] == [1, 2]
    assert instance.get_materialized_partitions(EXTRACTION_KEY) == set(keys)
    assert model_simulator.requests()["paid_twice"] == []


def test_an_expired_batch_keeps_what_it_answered_and_submits_the_rest_again(
    instance: dg.DagsterInstance, batch_settings: Settings, model_simulator: SimulatorControl
) -> None:
    defs = definitions_for(batch_settings)
    keys = register(instance, batch_settings)
    # in_progress from 2 s to 4 s after creation, one line every 0.5 s; expires at 3.2 s.
    model_simulator.configure(batch_phase_seconds=2.0, batch_expire_seconds=3.2)
    run(defs, instance, "intake_job", keys, {})
    model_simulator.configure(batch_phase_seconds=0.1, batch_expire_seconds=86400)

    first, second = collect_until_settled(defs, instance)

    assert batch_entries(instance)[0].status == "expired"
    outcomes = extraction_outcomes(instance, first.run_id)
    answered = {k for k, o in outcomes.items() if o.status == "extracted"}
    assert answered and set(keys) - answered  # partial: kept, the rest submitted again
    assert set(extraction_outcomes(instance, second.run_id)) == set(keys) - answered
    assert instance.get_materialized_partitions(EXTRACTION_KEY) == set(keys)
    assert model_simulator.requests()["paid_twice"] == []


def test_cancelling_keeps_the_answers_so_far_and_submits_the_rest_again(
    instance: dg.DagsterInstance, batch_settings: Settings, model_simulator: SimulatorControl
) -> None:
    defs = definitions_for(batch_settings)
    keys = register(instance, batch_settings)
    model_simulator.configure(batch_phase_seconds=2.0)
    run(defs, instance, "intake_job", keys, {})
    model_simulator.configure(batch_phase_seconds=0.1)
    (entry,) = batch_entries(instance)
    # in_progress from 2 s to 4 s after creation, one line every 0.5 s: cancel when two are done.
    time.sleep(max(0.0, entry.submitted_at + 3.2 - time.time()))
    config = batch_settings.extraction.agent_config(api_key="sk-simulator-test")
    with BatchApi(config) as api:
        assert api.cancel(entry.batch_id).status == "cancelling"

    first, _ = collect_until_settled(defs, instance)

    assert batch_entries(instance)[0].status == "cancelled"
    outcomes = extraction_outcomes(instance, first.run_id)
    answered = {k for k, o in outcomes.items() if o.status == "extracted"}
    assert 0 < len(answered) < len(keys)
    assert instance.get_materialized_partitions(EXTRACTION_KEY) == set(keys)
    assert model_simulator.requests()["paid_twice"] == []


def test_a_document_without_an_answer_after_max_attempts_fails_for_good(
    instance: dg.DagsterInstance, batch_settings: Settings, model_simulator: SimulatorControl
) -> None:
    operations = batch_settings.operations.model_copy(update={"max_attempts": 2})
    defs = definitions_for(batch_settings.model_copy(update={"operations": operations}))
    keys = register(instance, batch_settings, 2)
    model_simulator.set_faults(f"500:match={invoice_number(1)}")  # every time
    run(defs, instance, "intake_job", keys, {})

    first, second = collect_until_settled(defs, instance)

    assert first.success and not second.success
    (given_up,) = [o for o in extraction_outcomes(instance, second.run_id).values()]
    assert given_up.error_kind == "batch_no_answer" and given_up.retryable is False
    assert "after 2 batch submissions" in (given_up.error_message or "")
    assert documents_in_open_batches(instance) == {}


def test_documents_waiting_in_a_batch_are_not_submitted_again(
    instance: dg.DagsterInstance, batch_settings: Settings, model_simulator: SimulatorControl
) -> None:
    """A run retry of a submitting run, `batch submit` twice, a backfill in batch mode."""
    defs = definitions_for(batch_settings)
    keys = register(instance, batch_settings)
    run(defs, instance, "intake_job", keys[:3], {})

    again = run(defs, instance, "intake_job", keys, {})

    assert again.success
    assert set(extraction_outcomes(instance, again.run_id)) == {keys[3]}  # only the new one
    first, second = batch_entries(instance)
    assert sorted(first.documents) == sorted(keys[:3]) and second.documents == (keys[3],)


def test_a_collecting_run_that_failed_is_launched_again_and_nothing_is_paid_twice(
    instance: dg.DagsterInstance,
    batch_settings: Settings,
    model_simulator: SimulatorControl,
) -> None:
    defs = definitions_for(batch_settings)
    keys = register(instance, batch_settings)
    run(defs, instance, "intake_job", keys, {})
    (request,) = poll_until_collect_runs(defs, instance)
    # The provider cannot be reached while the answers are downloaded.
    unreachable = batch_settings.extraction.model_copy(
        update={"base_url": "http://127.0.0.1:9/v1", "timeout_seconds": 1}
    )
    failed = collect(
        definitions_for(batch_settings.model_copy(update={"extraction": unreachable})),
        instance,
        request,
    )

    assert not failed.success
    assert set(documents_in_open_batches(instance)) == set(keys)  # still waiting: busy
    assert set(busy_documents(instance, keys)) == set(keys)  # so retry_failed leaves them
    time.sleep(1.5)  # the poll interval since that run ended
    (again,) = poll_until_collect_runs(defs, instance)
    assert again.run_key != request.run_key
    assert collect(defs, instance, again).success
    assert instance.get_materialized_partitions(EXTRACTION_KEY) == set(keys)
    assert documents_in_open_batches(instance) == {}
    assert model_simulator.requests()["paid_twice"] == []


def test_the_poll_interval_doubles_while_nothing_changes_and_starts_over_on_a_change() -> None:
    paces = [_next(None, "validating", 30, 0.0)]
    for status in ("validating", "validating", "in_progress", "in_progress"):
        paces.append(_next(paces[-1], status, 30, 0.0))
    assert [p.delay for p in paces] == [30, 60, 120, 30, 60]
    long_wait = _next(Pace("in_progress", 500, 0.0), "in_progress", 30, 0.0)
    assert long_wait.delay == MAX_POLL_SECONDS
