"""`ingest --background`, `runs status`, `runs wait`: runs queued on the daemon of a running `dev`,
followed from any process (their state is in Dagster's run storage, so the caller may exit,
restart, or be another process; `dev` may restart too).

`ingest --background` registers the PDFs exactly as `ingest` does (`cli.ingest.plan_ingest`) and
submits the planned runs through Dagster's GraphQL API to the webserver of `dev`, whose run queue
and daemon launch them. `runs status` and `runs wait` read the runs back with
`instance.runs`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from extraction_pipeline.cli.ingest import IngestPlan, pdfs_to_take, plan_ingest
from extraction_pipeline.cli.launcher import local_instance
from extraction_pipeline.core.settings import SettingsError
from extraction_pipeline.instance.document_runs import DocumentsRun
from extraction_pipeline.instance.names import TRIGGER_TAG
from extraction_pipeline.instance.runs import (
    NO_OUTCOME,
    DocumentOutcome,
    RetryChain,
    RunReport,
    document_order,
    document_outcomes,
    follow_retries,
    run_report,
)

if TYPE_CHECKING:
    import dagster as dg

BACKGROUND_TRIGGER = "ingest-background"
NO_DEV = "start `extraction-pipeline dev` first: background runs are queued on its daemon"
POLL_SECONDS = 1.0
# Where `dev` serves the UI unless told otherwise (the defaults of `dev --host/--port`).
DEFAULT_UI_HOST, DEFAULT_UI_PORT = "127.0.0.1", "3000"
# The code location of workspace.yaml, and Dagster's name for the repository of a Definitions.
CODE_LOCATION, REPOSITORY = "extraction_pipeline", "__repository__"


class DevWebserver:
    """The Dagster webserver of a running `dev` (EXTRACTION_UI_HOST, EXTRACTION_UI_PORT): runs
    submitted to it wait in the run queue until its daemon launches them."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.url = f"http://{host}:{port}"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DevWebserver:
        host = env.get("EXTRACTION_UI_HOST") or DEFAULT_UI_HOST
        return cls(host, int(env.get("EXTRACTION_UI_PORT") or DEFAULT_UI_PORT))

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/server_info", timeout=5) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def submit(self, run: DocumentsRun) -> str:
        """Queue `run`; its id. Raises `DagsterGraphQLClientError` when the webserver refuses."""
        from dagster_graphql import DagsterGraphQLClient

        client = DagsterGraphQLClient(self.host, port_number=self.port, timeout=60)
        return client.submit_job_execution(
            run.job_name,
            repository_location_name=CODE_LOCATION,
            repository_name=REPOSITORY,
            run_config={},
            tags=run.submission_tags,
        )


def running_dev() -> DevWebserver | None:
    """The webserver of the running `dev` (EXTRACTION_UI_HOST/PORT); None, said on stderr,
    when nothing answers there."""
    webserver = DevWebserver.from_env(os.environ)
    if not webserver.answers():
        print(f"{NO_DEV} (nothing answers at {webserver.url})", file=sys.stderr)
        return None
    return webserver


def ingest_in_background(paths: list[str], as_json: bool) -> int:
    """Register the PDFs under `paths` and queue their runs on `dev`'s daemon; print the run ids
    at once. Exit 0, 1 when a path is missing or a run could not be queued, 2 when no PDF was
    found or no `dev` answers (then nothing is registered)."""
    found = pdfs_to_take(paths)
    if found is None:
        return 2
    files, missing = found
    webserver = running_dev()
    if webserver is None:
        return 2
    with local_instance(dict(os.environ)) as (instance, environment):
        tags = {TRIGGER_TAG: BACKGROUND_TRIGGER}
        plan = plan_ingest(instance, environment.settings, files, tags)
        queued, refusal = queue_runs(webserver, instance, plan.runs)
    if refusal is not None:
        print(refusal, file=sys.stderr)
    _print_queued(plan, queued, missing, webserver, as_json)
    return 1 if missing or refusal is not None else 0


def queue_runs(
    webserver: DevWebserver, instance: dg.DagsterInstance, runs: Sequence[DocumentsRun]
) -> tuple[list[tuple[DocumentsRun, str]], str | None]:
    """Submit `runs` in order to `dev`: those queued, with their run ids, and why the next one
    was not (None when all were). Raises `SettingsError` when `dev` keeps its runs in another
    database than `instance` (another DAGSTER_HOME or EXTRACTION_PG_URL)."""
    from dagster_graphql import DagsterGraphQLClientError

    queued: list[tuple[DocumentsRun, str]] = []
    for run in runs:
        try:
            run_id = webserver.submit(run)
        except DagsterGraphQLClientError as error:
            return queued, f"could not queue a {run.job_name} run: {error}"
        if not queued and instance.get_run_by_id(run_id) is None:
            raise SettingsError(
                f"the `dev` at {webserver.url} keeps its runs in another database (run "
                f"{run_id} was queued there): use its DAGSTER_HOME and EXTRACTION_PG_URL"
            )
        queued.append((run, run_id))
    return queued, None


def _print_queued(
    plan: IngestPlan,
    queued: Sequence[tuple[DocumentsRun, str]],
    missing: Sequence[str],
    webserver: DevWebserver,
    as_json: bool,
) -> None:
    if as_json:
        payload = {
            "run_ids": [run_id for _, run_id in queued],
            "runs": [
                {"run_id": run_id, "job": run.job_name, "documents": list(run.keys)}
                for run, run_id in queued
            ],
            "documents": plan.documents,
            "duplicates": plan.duplicates,
            "unreadable": plan.unreadable,
            "missing": list(missing),
            "webserver": webserver.url,
        }
        print(json.dumps(payload, indent=2))
        return
    for _, run_id in queued:
        print(run_id)
    documents = len(set(plan.documents.values()))
    print(
        f"queued {_count(len(queued), 'run')} for {_count(documents, 'document')} on the daemon "
        f"of {webserver.url} ({_count(len(plan.duplicates), 'duplicate')}, "
        f"{len(plan.unreadable)} unreadable); follow them with "
        "`extraction-pipeline runs status|wait RUN_ID`",
        file=sys.stderr,
    )


def main(args: argparse.Namespace) -> int:
    """`runs status RUN_ID...` or `runs wait RUN_ID... [--timeout S]`."""
    run_ids = list(dict.fromkeys(args.run_ids))
    if args.runs_command == "status":
        return status(run_ids, args.json)
    return wait(run_ids, args.timeout, args.json)


def status(run_ids: Sequence[str], as_json: bool) -> int:
    """Print each run: status, job, trigger, times, retries, its documents' outcomes. Exit 0, or
    2 when an id is unknown."""
    with local_instance(dict(os.environ)) as (instance, _):
        order = document_order(instance)
        reports = {run_id: run_report(instance, run_id, order) for run_id in run_ids}
    found = [report for report in reports.values() if report is not None]
    unknown = [run_id for run_id, report in reports.items() if report is None]
    if as_json:
        runs = [report.to_json() for report in found]
        print(json.dumps({"runs": runs, "unknown": unknown}, indent=2))
    else:
        print("\n".join(format_report(report) for report in found))
    _say_unknown(unknown)
    return 2 if unknown else 0


def wait(run_ids: Sequence[str], timeout: float | None, as_json: bool) -> int:
    """Wait until each run, and the run retries that followed it, has finished; print each
    run's final status as it settles. Exit 0 if all succeeded, 1 if any failed or was canceled,
    3 on timeout, 2 for an unknown id."""
    with local_instance(dict(os.environ)) as (instance, _):
        found = {run_id: follow_retries(instance, run_id) for run_id in run_ids}
        unknown = [run_id for run_id, chain in found.items() if chain is None]
        if unknown:
            _say_unknown(unknown)
            return 2
        order = document_order(instance)

        def show(run_id: str, chain: RetryChain) -> None:
            if not as_json:
                print(format_final(run_id, chain, _outcomes(instance, chain, order)), flush=True)

        started = {run_id: chain for run_id, chain in found.items() if chain is not None}
        chains = _poll_until_settled(instance, started, timeout, show)
        pending = [run_id for run_id, chain in chains.items() if not chain.settled]
        for run_id in pending:
            show(run_id, chains[run_id])
        if as_json:
            runs = [_final_json(k, c, _outcomes(instance, c, order)) for k, c in chains.items()]
            print(json.dumps({"runs": runs, "timed_out": bool(pending)}, indent=2))
    if pending:
        return 3
    return 0 if all(chain.succeeded for chain in chains.values()) else 1


def _poll_until_settled(
    instance: dg.DagsterInstance,
    chains: Mapping[str, RetryChain],
    timeout: float | None,
    on_settled: Callable[[str, RetryChain], None],
) -> dict[str, RetryChain]:
    """Follow the unsettled chains every POLL_SECONDS until all have settled or `timeout`
    seconds have passed; `on_settled` is called once per chain, as it settles."""
    deadline = None if timeout is None else time.monotonic() + timeout
    chains = dict(chains)
    announced: set[str] = set()
    while True:
        for run_id, chain in chains.items():
            if chain.settled and run_id not in announced:
                on_settled(run_id, chain)
                announced.add(run_id)
        pending = [run_id for run_id, chain in chains.items() if not chain.settled]
        left = None if deadline is None else deadline - time.monotonic()
        if not pending or (left is not None and left <= 0):
            return chains
        time.sleep(POLL_SECONDS if left is None else min(POLL_SECONDS, left))
        for run_id in pending:
            chains[run_id] = follow_retries(instance, run_id) or chains[run_id]


def format_report(report: RunReport) -> str:
    """`runs status` of one run, a few lines."""
    lines = [f"{report.run_id}  {report.status}  {report.job}  [{report.trigger}]"]
    times = f"  created {report.created_at:%Y-%m-%d %H:%M:%S} UTC"
    if report.started_at is not None:
        times += f", started {report.started_at:%H:%M:%S}"
    if report.ended_at is not None:
        times += f", ended {report.ended_at:%H:%M:%S}"
    if report.started_at is not None and report.ended_at is not None:
        times += f" ({(report.ended_at - report.started_at).total_seconds():.1f} s)"
    lines.append(times)
    if report.parent_run_id:
        lines.append(f"  a run retry of {report.parent_run_id}")
    if report.retry_run_id:
        lines.append(f"  retried by run {report.retry_run_id}")
    elif report.retry_pending:
        lines.append("  run retries will launch it again (once the daemon runs)")
    lines.append(f"  {_documents(report.documents)}")
    yet = "" if report.finished else " yet"
    lines += [f"    {_document_line(document, yet)}" for document in report.documents]
    return "\n".join(lines)


def format_final(run_id: str, chain: RetryChain, documents: Sequence[DocumentOutcome]) -> str:
    """`runs wait`'s line for one run: the status its chain of run retries ended in."""
    final = chain.final
    line = f"{run_id}  {final.status.value if chain.settled else 'still ' + final.status.value}"
    retries = len(chain.runs) - 1
    if retries:
        line += f"  after {retries} run retr{'y' if retries == 1 else 'ies'} (run {final.run_id})"
    return f"{line}  {final.job_name}  {_documents(documents)}"


def _final_json(
    run_id: str, chain: RetryChain, documents: Sequence[DocumentOutcome]
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "status": chain.final.status.value,
        "settled": chain.settled,
        "final_run_id": chain.final.run_id,
        "run_ids": [record.dagster_run.run_id for record in chain.runs],
        "job": chain.final.job_name,
        "documents": [asdict(document) for document in documents],
    }


def _outcomes(
    instance: dg.DagsterInstance, chain: RetryChain, order: Sequence[str]
) -> list[DocumentOutcome]:
    return document_outcomes(instance, [r.dagster_run for r in chain.runs], order)


def _document_line(document: DocumentOutcome, yet: str) -> str:
    if document.outcome == NO_OUTCOME:
        return f"{document.document_key}  no outcome{yet}"
    if document.outcome == "failed":
        return f"{document.document_key}  failed ({document.error_kind}): {document.error}"
    return f"{document.document_key}  {document.outcome}"


def _documents(documents: Sequence[DocumentOutcome]) -> str:
    """`3 documents: 2 extracted, 1 failed`."""
    counts = Counter(document.outcome.replace("_", " ") for document in documents)
    parts = ", ".join(f"{n} {outcome}" for outcome, n in counts.most_common()) or "none"
    return f"{_count(len(documents), 'document')}: {parts}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _say_unknown(run_ids: Iterable[str]) -> None:
    for run_id in run_ids:
        print(f"no run with id {run_id}", file=sys.stderr)
