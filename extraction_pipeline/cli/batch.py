"""`extraction-pipeline batch ...`: documents through the provider's Batch API, at half the token
price, followed from any process (every batch is recorded in Dagster's event log).

`submit` queues batch-mode runs on the daemon of a running `dev` (they register nothing twice
and submit at once) and prints the batch ids; the daemon's `batch_poller` sensor collects each
batch when it ends. `status`, `retrieve`, `cancel` take `--batch-id`, else the last submitted.
Exit codes: 0 done; 1 nothing to retrieve yet, a submitting run failed, or the provider
refused; 2 no such batch, bad input, or no running `dev` (submit); 3 the submitting runs did not
end within SUBMIT_TIMEOUT_SECONDS (they may still).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import openai

from extraction_pipeline.cli.ingest import pdfs_to_take, plan_ingest
from extraction_pipeline.cli.launcher import Environment, local_instance, model_endpoint_env
from extraction_pipeline.cli.runs import POLL_SECONDS, queue_runs, running_dev
from extraction_pipeline.core.extraction.batch import BatchApi, BatchState
from extraction_pipeline.core.extraction.records import RecordStore
from extraction_pipeline.core.model.config import AgentConfig
from extraction_pipeline.core.operations.lifecycle import contiguous_batches
from extraction_pipeline.defs.jobs import intake_job
from extraction_pipeline.instance.batches import BatchEntry, batch_entries, find_batch
from extraction_pipeline.instance.document_runs import DocumentsRun
from extraction_pipeline.instance.facts import all_document_keys, never_attempted
from extraction_pipeline.instance.names import MODE_TAG, TRIGGER_TAG
from extraction_pipeline.instance.runs import RetryChain, follow_retries
from extraction_pipeline.instance.stores import open_store

# How long `submit` waits for its runs (they only upload and submit).
SUBMIT_TIMEOUT_SECONDS = 600


def main(args: argparse.Namespace) -> int:
    if args.batch_command == "submit":
        return submit(args.paths, args.pending, args.json)
    with local_instance(dict(os.environ)) as (instance, environment):
        if args.batch_command == "list":
            return _list(batch_entries(instance), args.json)
        entry = find_batch(instance, args.batch_id)
        if entry is None:
            which = args.batch_id or "submitted yet"
            print(f"no batch {which}", file=sys.stderr)
            return 2
        if args.batch_command == "status":
            return _status(entry, environment, args.json)
        if args.batch_command == "cancel":
            return _cancel(entry, environment, args.json)
        return _retrieve(entry, environment, args.out, args.json)


def submit(paths: list[str], pending: bool, as_json: bool) -> int:
    """Register the PDFs under `paths` (or take every document never attempted), queue their
    runs in batch mode on `dev`'s daemon, wait for those runs (they submit and end at once) and
    print the batch ids."""
    if bool(paths) == pending:
        print("give PDF paths or --pending (not both)", file=sys.stderr)
        return 2
    files: list[Path] = []
    missing: list[str] = []
    if paths:
        found = pdfs_to_take(paths)
        if found is None:
            return 2
        files, missing = found
    webserver = running_dev()
    if webserver is None:
        return 2
    tags = {TRIGGER_TAG: "batch-submit", MODE_TAG: "batch"}
    with local_instance(dict(os.environ)) as (instance, environment):
        per_run = environment.settings.documents_per_run
        if pending:
            ordered = all_document_keys(instance)
            groups = contiguous_batches(ordered, never_attempted(instance, ordered), per_run)
            runs = [DocumentsRun(intake_job.name, keys, tags) for keys in groups]
        else:
            # As few runs (so batches) as can be: each run submits its documents together.
            plan = plan_ingest(instance, environment.settings, files, tags, per_run)
            runs = plan.runs
        queued, refusal = queue_runs(webserver, instance, runs)
        chains = _wait_for(instance, [run_id for _, run_id in queued])
        run_ids = {r.dagster_run.run_id for chain in chains for r in chain.runs}
        entries = [entry for entry in batch_entries(instance) if entry.run_id in run_ids]
    if refusal is not None:
        print(refusal, file=sys.stderr)
    unsettled = [c.runs[0].dagster_run.run_id for c in chains if not c.settled]
    failed = [c.runs[0].dagster_run.run_id for c in chains if c.settled and not c.succeeded]
    for run_id in unsettled:
        print(f"run {run_id} has not ended yet (`runs wait {run_id}`)", file=sys.stderr)
    for run_id in failed:
        print(f"run {run_id} failed (`runs status {run_id}`)", file=sys.stderr)
    if as_json:
        print(json.dumps({"batches": [e.to_json() for e in entries]}, indent=2))
    else:
        for entry in entries:
            print(entry.batch_id)
        documents = sum(len(entry.documents) for entry in entries)
        print(
            f"{len(entries)} batches, {documents} documents; the answers are recorded when "
            "each batch ends (`extraction-pipeline batch status`)",
            file=sys.stderr,
        )
    if unsettled:
        return 3
    return 1 if missing or refusal is not None or failed else 0


def _wait_for(instance: dg.DagsterInstance, run_ids: list[str]) -> list[RetryChain]:
    """The submitting runs with their run retries, once ended (or SUBMIT_TIMEOUT_SECONDS)."""
    deadline = time.monotonic() + SUBMIT_TIMEOUT_SECONDS
    chains = []
    for run_id in run_ids:
        while (chain := follow_retries(instance, run_id)) is not None and not chain.settled:
            if time.monotonic() > deadline:
                break
            time.sleep(POLL_SECONDS)
        if chain is not None:
            chains.append(chain)
    return chains


def _list(entries: list[BatchEntry], as_json: bool) -> int:
    if as_json:
        print(json.dumps([entry.to_json() for entry in entries], indent=2))
        return 0
    if not entries:
        print("no batch submitted yet")
    for entry in entries:
        state = entry.status if entry.has_ended else "open"
        state += " (being recorded)" if entry.has_ended and entry.is_open else ""
        print(
            f"{entry.batch_id}  {_when(entry.submitted_at)}  {len(entry.documents):>6} documents"
            f"  attempt {entry.attempt}  {state}"
        )
    return 0


def _status(entry: BatchEntry, environment: Environment, as_json: bool) -> int:
    live, problem = _live_state(entry, environment) if not entry.has_ended else (None, None)
    report = {**entry.to_json(), "provider": _state_json(live) if live else problem}
    if as_json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"batch {entry.batch_id}: {len(entry.documents)} documents, attempt {entry.attempt}")
    print(f"  submitted  {_when(entry.submitted_at)} (run {entry.run_id[:8]})")
    if not entry.has_ended:
        if live is None:
            print(f"  open; the provider cannot be asked from here ({problem})")
        else:
            print(f"  {live.status}: {live.completed} answered, {live.failed} failed so far")
        return 0
    print(f"  ended      {_when(entry.ended_at or 0)}: {entry.status}")
    print(f"  {entry.completed} answered, {entry.failed} failed lines")
    if entry.is_open:
        done = len(entry.documents) - len(entry.uncollected)
        print(f"  being recorded: {done} of {len(entry.documents)} documents so far")
    return 0


def _cancel(entry: BatchEntry, environment: Environment, as_json: bool) -> int:
    if entry.has_ended:
        print(f"batch {entry.batch_id} already ended ({entry.status})", file=sys.stderr)
        return 1
    try:
        with BatchApi(_agent_config(environment)) as api:
            state = api.cancel(entry.batch_id)
    except openai.OpenAIError as error:
        print(f"batch {entry.batch_id}: the provider refused to cancel: {error}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(_state_json(state), indent=2))
    else:
        print(
            f"batch {entry.batch_id}: {state.status}. What it answered is kept; the rest is "
            "submitted again when it has stopped."
        )
    return 0


def _retrieve(entry: BatchEntry, environment: Environment, out: str | None, as_json: bool) -> int:
    if entry.is_open:
        said = "has not ended yet" if not entry.has_ended else "is still being recorded"
        print(f"batch {entry.batch_id} {said}: nothing to retrieve yet", file=sys.stderr)
        return 1
    folder = Path(out or f"batch-{entry.batch_id}").absolute()
    folder.mkdir(parents=True, exist_ok=True)
    records = RecordStore(open_store(environment.settings.data_dir))
    written: list[str] = []
    elsewhere: dict[str, str] = {}
    for key in entry.documents:
        outcome = records.load(key)
        if outcome is None or outcome.record is None or outcome.batch_id != entry.batch_id:
            state = "no answer" if outcome is None else (outcome.error_kind or outcome.status)
            elsewhere[key] = f"{state} (batch {outcome.batch_id})" if outcome else state
            continue
        (folder / f"{key}.json").write_text(json.dumps(outcome.record, indent=2) + "\n")
        written.append(key)
    if as_json:
        print(json.dumps({"folder": str(folder), "written": written, "not": elsewhere}, indent=2))
    else:
        print(f"{len(written)} records of batch {entry.batch_id} written to {folder}")
        for key, reason in elsewhere.items():
            print(f"  {key}: {reason}")
    return 0


def _live_state(entry: BatchEntry, environment: Environment) -> tuple[BatchState | None, str]:
    """What the provider says now; or, when it cannot be asked (no endpoint or key, provider
    down), why: the recorded state still stands."""
    try:
        with BatchApi(_agent_config(environment)) as api:
            return api.state(entry.batch_id), ""
    except openai.OpenAIError as error:
        return None, type(error).__name__


def _agent_config(environment: Environment) -> AgentConfig:
    env = model_endpoint_env(environment, dict(os.environ))
    settings = environment.settings.extraction
    if env.get("OPENAI_BASE_URL"):
        settings = settings.model_copy(update={"base_url": env["OPENAI_BASE_URL"]})
    return settings.agent_config(api_key=env.get("OPENAI_API_KEY"))


def _state_json(state: BatchState) -> dict[str, Any]:
    return {
        "status": state.status,
        "total": state.total,
        "completed": state.completed,
        "failed": state.failed,
        "errors": list(state.errors),
    }


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
