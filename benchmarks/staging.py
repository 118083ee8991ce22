"""Fast staging for the scale benchmark: the dynamic partitions and the event history of a
deployment written with PostgreSQL COPY, leaving the rows Dagster's own writes leave.

Written one event at a time (`store_event`: an INSERT and an `asset_keys` upsert each, a few
hundred events/s), the history of a million documents takes hours. Here the same `event_logs`
rows (ids from the table's sequence, in order; the columns of Dagster's own `_event_to_row`) go
in by COPY, and what the per-event path updates per asset (`asset_keys`: last_materialization,
last_run_id, last_materialization_timestamp) is written once at the end by Dagster's own
`store_asset_event` for the last event of each kind, which leaves each column as the last event
that set it did.
`asset_event_tags` gets the rows of events carrying indexed tags (Dagster's own
`store_asset_event_tags`). `asset_keys.cached_status_data` is left as the per-event path leaves
it: untouched (null on a fresh instance), so the first status query builds it from the events.

- `copy_event_history(instance, runs)`: any runs of `EventLogEntry`s, each serialised with
  Dagster's `serialize_value` (as store_event does).
- `copy_document_history(instance, keys, history)`: the benchmark's history of `keys` without
  building an entry per event: one entry per event kind is serialised with placeholders for the
  document key, run id and timestamp, and each document's events are the template with those
  substituted. JSON escapes a string character by character and writes a float as its repr, so
  the substitution is the text serialize_value gives; `verify_every` rebuilds and serialises a
  document's real entries now and then (and the first of each kind) and fails on any difference.
- `copy_dynamic_partitions(instance, name, keys)`: `instance.add_dynamic_partitions`, in bulk.
- `settle(instance)`: VACUUM (ANALYZE) of those tables, as a long-lived deployment's would be.
- `check_equivalence(instance_a, instance_b, keys)`: the rows and the product's answers of two
  instances staged from the same history, one of them the per-event way; run as a script
  (`.venv/bin/python benchmarks/staging.py -n 3000`) it stages one history all three ways into
  fresh databases, prints the rates and fails on any difference.
"""

from __future__ import annotations

import collections
import io
import itertools
import json
import re
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import dagster as dg
import psycopg2
from dagster._core.events import (
    ASSET_EVENTS,
    AssetMaterializationPlannedData,
    AssetObservationData,
    DagsterEvent,
    DagsterEventType,
    StepMaterializationData,
)
from dagster._core.events.log import EventLogEntry
from dagster._serdes import deserialize_value
from dagster_postgres import PostgresEventLogStorage

from extraction_pipeline.core.extraction.records import CallSummary, ExtractionRecord
from extraction_pipeline.instance.outcomes import outcome_metadata, outcome_tags
from extraction_pipeline.instance.postgres import libpq_dsn

COPY_CHUNK_EVENTS = 10_000
_COLUMNS = (
    "run_id",
    "event",
    "dagster_event_type",
    "timestamp",
    "step_key",
    "asset_key",
    "partition",
)
_ASSETS = ("source_document", "extraction")
_KEY = "@@document-key@@"
_RUN = "@@run-id@@"
_WHEN = 4102444800.123457  # 2100-01-01: a float whose repr occurs nowhere else in an event


# --- the history ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DocumentHistory:
    """The event log a deployment holds for its documents: per document the two planned events
    of its run, the `source_document` materialisation and the `extraction` outcome with the
    product's metadata. Every round(1 / failed_share)-th document failed first (a retryable
    failure observation per attempt, 1-3 attempts, each attempt after the first a run of its
    own); half of those are still failed, the others were extracted by a later attempt. Runs hold
    `run_documents` adjacent documents. `clock` stamps each event, in order."""

    invoice: dict[str, Any]
    call: CallSummary
    failed_share: float
    run_documents: int
    now: datetime
    clock: Callable[[], float] = field(default=time.time, compare=False)

    def runs(self, keys: Sequence[str]) -> Iterator[list[EventLogEntry]]:
        """The entries of each run, for store_event or copy_event_history."""
        for start, run_id, chunk in self._runs(keys):
            yield [
                entry
                for index, key in enumerate(chunk, start)
                for entry in self.events(key, run_id, *self.shape(index), self.clock)
            ]

    def shape(self, index: int) -> tuple[int, bool]:
        """Failed attempts of the index-th document, and whether it is still failed."""
        every = round(1 / self.failed_share)
        if index % every:
            return 0, False
        return (index // every) % 3 + 1, (index // every) % 2 == 0

    def events(
        self, key: str, run_id: str, failed: int, still_failed: bool, clock: Callable[[], float]
    ) -> list[EventLogEntry]:
        """One document's entries, `clock` called once per entry in order. A function of its
        arguments alone (and of the history's fields): what lets copy_document_history
        serialise one document of each shape and substitute key, run id and timestamps.

        Its first run (`run_id`, the intake job) plans both assets, stores the original and
        records the first outcome; each later attempt is a run of its own (`<run_id>-r<n>`, as
        the retry schedule's extraction runs) that plans `extraction` and records an outcome."""

        def entry(event_type: DagsterEventType, data: Any, run: str = run_id) -> EventLogEntry:
            job = "intake_job" if run == run_id else "extraction_job"
            return EventLogEntry(
                user_message="",
                level=20,
                job_name=job,
                run_id=run,
                error_info=None,
                timestamp=clock(),
                dagster_event=DagsterEvent(
                    event_type_value=event_type.value,
                    event_specific_data=data,
                    job_name=job,
                ),
            )

        planned = DagsterEventType.ASSET_MATERIALIZATION_PLANNED
        events = [
            entry(planned, AssetMaterializationPlannedData(dg.AssetKey(asset), partition=key))
            for asset in _ASSETS
        ]
        source = dg.AssetMaterialization("source_document", partition=key, metadata={"pages": 1})
        events.append(
            entry(DagsterEventType.ASSET_MATERIALIZATION, StepMaterializationData(source))
        )
        base = {"document_key": key, "file_name": f"{key}.pdf", "sha256": "0" * 64}
        attempts = failed if still_failed else failed + 1
        for attempt in range(attempts):
            run = run_id if attempt == 0 else f"{run_id}-r{attempt}"
            if attempt:
                plan = AssetMaterializationPlannedData(dg.AssetKey("extraction"), partition=key)
                events.append(entry(planned, plan, run))
            if attempt < failed:
                failure = ExtractionRecord(
                    **base,
                    pages=1,
                    status="failed",
                    call=self.call,
                    error_kind="server_error",
                    error_message="server_error: 503 from the model",
                    retryable=True,
                    extracted_at=self.now,
                    run_id=run,
                )
                observation = dg.AssetObservation(
                    "extraction",
                    partition=key,
                    metadata=outcome_metadata(failure),
                    tags=outcome_tags(failure),
                )
                events.append(
                    entry(
                        DagsterEventType.ASSET_OBSERVATION, AssetObservationData(observation), run
                    )
                )
                continue
            success = ExtractionRecord(
                **base,
                pages=1,
                status="extracted",
                record=self.invoice,
                call=self.call,
                extracted_at=self.now,
            )
            extraction = dg.AssetMaterialization(
                "extraction", partition=key, metadata=outcome_metadata(success)
            )
            events.append(
                entry(
                    DagsterEventType.ASSET_MATERIALIZATION, StepMaterializationData(extraction), run
                )
            )
        return events

    def _runs(self, keys: Sequence[str]) -> Iterator[tuple[int, str, Sequence[str]]]:
        for start in range(0, len(keys), self.run_documents):
            run_id = f"scale-run-{start // self.run_documents:06d}"
            yield start, run_id, keys[start : start + self.run_documents]


# --- writing --------------------------------------------------------------------------------


def copy_event_history(
    instance: dg.DagsterInstance, entries_by_run: Iterable[Sequence[EventLogEntry]]
) -> int:
    """Write the entries as `store_event` of each would, one by one; returns how many."""
    storage = _storage(instance)
    with _EventLogCopy(storage) as copy:
        for entries in entries_by_run:
            for entry in entries:
                if entry.get_dagster_event().is_asset_failed_to_materialize:
                    continue  # as the per-event reference in `main` skips them
                row = storage._event_to_row(entry)
                tagged = bool(storage._tags_for_asset_event(entry))
                copy.add(_Row(_copy_text(row), row["asset_key"], row["dagster_event_type"], tagged))
    return copy.written


def copy_document_history(
    instance: dg.DagsterInstance,
    keys: Sequence[str],
    history: DocumentHistory,
    verify_every: int = 1_000,
) -> int:
    """Write `history.runs(keys)` as copy_event_history would, from one serialised template per
    kind of event; the first document of each shape and every `verify_every`-th one after it
    are also built and serialised for real and must come out the same. Returns the number of
    events."""
    storage = _storage(instance)
    templates: dict[tuple[int, bool], list[_Template]] = {}
    seen: collections.Counter[tuple[int, bool]] = collections.Counter()
    with _EventLogCopy(storage) as copy:
        for start, run_id, chunk in history._runs(keys):
            run = {"run": _escape(run_id), "run_json": _escape(json.dumps(run_id)[1:-1])}
            for index, key in enumerate(chunk, start):
                shape = history.shape(index)
                verify = seen[shape] % verify_every == 0
                seen[shape] += 1
                if shape not in templates:
                    templates[shape] = _templates(storage, history, shape)
                values = {"key": _escape(key), "key_json": _escape(json.dumps(key)[1:-1]), **run}
                stamps = []
                rows = []
                for template in templates[shape]:
                    stamps.append(history.clock())
                    values["when"] = repr(stamps[-1])
                    values["when_column"] = _storage_timestamp(stamps[-1]).isoformat(" ")
                    rows.append(template.row(values))
                if verify:
                    _verify(storage, history, (key, run_id, shape, stamps), rows)
                for row in rows:
                    copy.add(row)
    return copy.written


def copy_dynamic_partitions(instance: dg.DagsterInstance, name: str, keys: Sequence[str]) -> int:
    """`instance.add_dynamic_partitions(name, keys)` in one COPY: keys already there are kept
    as they are, the new ones added in order. Returns how many were added."""
    connection = _connect(_storage(instance))
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute("CREATE TEMP TABLE staged_keys (n bigserial, key text) ON COMMIT DROP")
            text = "".join(f"{_escape(key)}\n" for key in keys).encode()
            cursor.copy_expert("COPY staged_keys (key) FROM STDIN", io.BytesIO(text))
            cursor.execute(
                "INSERT INTO dynamic_partitions (partitions_def_name, partition) "
                "SELECT %s, key FROM staged_keys ORDER BY n ON CONFLICT DO NOTHING",
                (name,),
            )
            return cursor.rowcount
    finally:
        connection.close()


def settle(instance: dg.DagsterInstance) -> None:
    """VACUUM (ANALYZE) the tables staged here, as autovacuum would have long since done in a
    deployment that wrote this history over weeks: planner statistics, visibility map and hint
    bits in place, so the first queries measured are not a fresh bulk load's (at 1,000,000
    documents get_materialized_partitions took 12 s before, 3 s after; the VACUUM 4 s)."""
    connection = _connect(_storage(instance))
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(
                "VACUUM (ANALYZE) event_logs, asset_keys, asset_event_tags, dynamic_partitions"
            )
    finally:
        connection.close()


def _storage_timestamp(timestamp: float) -> datetime:
    """The `timestamp` column of an event (SqlEventLogStorage._event_insert_timestamp)."""
    return datetime.fromtimestamp(timestamp, UTC).replace(tzinfo=None)


def _storage(instance: dg.DagsterInstance) -> PostgresEventLogStorage:
    storage = instance.event_log_storage
    if not isinstance(storage, PostgresEventLogStorage):
        raise TypeError(f"COPY staging needs a Postgres event log, not {type(storage).__name__}")
    return storage


def _connect(storage: PostgresEventLogStorage) -> Any:
    """A connection of its own to the event log's database; COPY text is sent as UTF-8."""
    connection = psycopg2.connect(libpq_dsn(storage.postgres_url))
    connection.set_client_encoding("UTF8")
    return connection


class _Row(NamedTuple):
    """An `event_logs` row as COPY text without its id, and what the per-asset updates need."""

    text: str
    asset_key: str | None
    event_type: str | None
    tagged: bool

    @property
    def event(self) -> str:
        return _unescape(self.text.split("\t")[_COLUMNS.index("event")])


class _EventLogCopy:
    """Rows for `event_logs` copied in chunks, with ids taken from the table's sequence in
    order; on exit, what store_event updates per asset, from the last events."""

    def __init__(self, storage: PostgresEventLogStorage) -> None:
        self.storage = storage
        self.connection = _connect(storage)
        self.pending: list[_Row] = []
        self.written = 0
        # (asset key, event type) -> (storage id, row), in order of first appearance
        self.last: dict[tuple[str, str], tuple[int, _Row]] = {}
        self.tagged: list[tuple[int, _Row]] = []
        self.asset_events = 0

    def __enter__(self) -> _EventLogCopy:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self._flush()
                self._finish_assets()
        finally:
            self.connection.close()

    def add(self, row: _Row) -> None:
        self.pending.append(row)
        if len(self.pending) >= COPY_CHUNK_EVENTS:
            self._flush()

    def _flush(self) -> None:
        rows, self.pending = self.pending, []
        if not rows:
            return
        with self.connection, self.connection.cursor() as cursor:
            cursor.execute(
                "SELECT nextval(pg_get_serial_sequence('event_logs', 'id')) "
                "FROM generate_series(1, %s)",
                (len(rows),),
            )
            ids = sorted(r[0] for r in cursor.fetchall())
            lines = []
            for event_id, row in zip(ids, rows, strict=True):
                lines.append(f"{event_id}\t{row.text}\n")
                if row.asset_key is not None and row.event_type in _ASSET_TYPES:
                    self.asset_events += 1
                    self.last[(row.asset_key, row.event_type)] = (event_id, row)
                    if row.tagged:
                        self.tagged.append((event_id, row))
            columns = ", ".join(("id", *_COLUMNS))
            text = "".join(lines).encode()
            del lines
            cursor.copy_expert(f"COPY event_logs ({columns}) FROM STDIN", io.BytesIO(text))
        self.written += len(rows)

    def _finish_assets(self) -> None:
        """What store_event leaves in asset_keys: its upsert for the last event of each kind,
        in the order they were stored (each column ends as the last event that set it left
        it). Each asset's first upsert goes in the order the assets first appeared, so their
        rows are created in the order (with the ids) the per-event path gives them."""
        by_asset: dict[str, list[tuple[int, _Row]]] = {}
        for (asset_key, _), last in self.last.items():
            by_asset.setdefault(asset_key, []).append(last)
        upserts = 0
        for round_ in itertools.zip_longest(*(sorted(lasts) for lasts in by_asset.values())):
            for event_id, row in filter(None, round_):
                self.storage.store_asset_event(_entry_of(row), event_id)
                upserts += 1
        # Each upsert takes a value of asset_keys' id sequence, conflicting or not: take as many
        # as the per-event path's upserts would have, so the next new asset key gets its id.
        if self.asset_events > upserts:
            with self.connection, self.connection.cursor() as cursor:
                cursor.execute(
                    "SELECT setval(pg_get_serial_sequence('asset_keys', 'id'), "
                    "nextval(pg_get_serial_sequence('asset_keys', 'id')) + %s)",
                    (self.asset_events - upserts - 1,),
                )
        if self.tagged:
            ids = [event_id for event_id, _ in self.tagged]
            self.storage.store_asset_event_tags([_entry_of(r) for _, r in self.tagged], ids)


_ASSET_TYPES = frozenset(t.value for t in ASSET_EVENTS)


def _entry_of(row: _Row) -> EventLogEntry:
    return deserialize_value(row.event, EventLogEntry)


def _copy_text(row: Mapping[str, Any]) -> str:
    """The columns of an `event_logs` row (but its id) in COPY's text format."""
    values = []
    for column in _COLUMNS:
        value = row[column]
        if value is None:
            values.append("\\N")
        elif isinstance(value, datetime):
            values.append(value.isoformat(" "))
        else:
            values.append(_escape(value))
    return "\t".join(values)


def _escape(text: str) -> str:
    """COPY's text format: backslash, tab, newline and carriage return escaped."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


_UNESCAPED = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: _UNESCAPED[m.group(1)], text)


# --- templates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Template:
    """One event of a document shape as COPY text, cut at the placeholders: `slots` name what
    goes between consecutive `parts` (the document key, run id and timestamp, JSON-escaped in
    the serialised event, raw in the other columns; COPY-escaped everywhere)."""

    parts: tuple[str, ...]
    slots: tuple[str, ...]
    asset_key: str | None
    event_type: str | None
    tagged: bool

    def row(self, values: Mapping[str, str]) -> _Row:
        pieces = [self.parts[0]]
        for slot, part in zip(self.slots, self.parts[1:], strict=True):
            pieces += (values[slot], part)
        return _Row("".join(pieces), self.asset_key, self.event_type, self.tagged)


def _templates(
    storage: PostgresEventLogStorage, history: DocumentHistory, shape: tuple[int, bool]
) -> list[_Template]:
    templates = []
    for entry in history.events(_KEY, _RUN, *shape, lambda: _WHEN):
        row = storage._event_to_row(entry)
        if row["event"].count(repr(_WHEN)) != 1 or row["event"].count(_RUN) != 1:
            raise ValueError("the placeholders are not where a template needs them")
        if row["timestamp"] != _storage_timestamp(_WHEN):
            raise ValueError("the template's timestamp column is not its event's")
        parts: list[str] = [""]
        slots: list[str] = []
        for number, column in enumerate(_copy_text(row).split("\t")):
            in_event = _COLUMNS[number] == "event"
            tokens = _EVENT_TOKENS if in_event else _COLUMN_TOKENS
            pieces = re.split(f"({'|'.join(map(re.escape, tokens))})", column)
            parts[-1] += ("\t" if number else "") + pieces[0]
            for token, piece in zip(pieces[1::2], pieces[2::2], strict=True):
                slots.append(tokens[token])
                parts.append(piece)
        tagged = bool(storage._tags_for_asset_event(entry))
        templates.append(
            _Template(
                tuple(parts), tuple(slots), row["asset_key"], row["dagster_event_type"], tagged
            )
        )
    return templates


_EVENT_TOKENS = {_KEY: "key_json", _RUN: "run_json", repr(_WHEN): "when"}
_COLUMN_TOKENS = {
    _KEY: "key",
    _RUN: "run",
    _storage_timestamp(_WHEN).isoformat(" "): "when_column",
}


def _verify(
    storage: PostgresEventLogStorage,
    history: DocumentHistory,
    document: tuple[str, str, tuple[int, bool], list[float]],
    rows: list[_Row],
) -> None:
    """The document's real entries, stamped as its templated rows were, give the same rows."""
    key, run_id, shape, stamps = document
    entries = history.events(key, run_id, *shape, iter(stamps).__next__)
    real = [_copy_text(storage._event_to_row(e)) for e in entries]
    if real != [r.text for r in rows]:
        raise AssertionError(f"templated events of {key!r} differ from serialize_value's")


# --- equivalence ----------------------------------------------------------------------------

# Per table, the columns compared (in id order): all but those the server fills from its clock.
_TABLES = {
    "event_logs": "id, run_id, event, dagster_event_type, timestamp, step_key, asset_key, "
    "partition",
    "asset_keys": "id, asset_key, last_materialization, last_run_id, asset_details, "
    "wipe_timestamp, last_materialization_timestamp, tags, cached_status_data",
    "asset_event_tags": "id, event_id, asset_key, key, value, event_timestamp",
    "dynamic_partitions": "id, partitions_def_name, partition",
}


def check_equivalence(
    instance_a: dg.DagsterInstance, instance_b: dg.DagsterInstance, keys: Sequence[str]
) -> list[str]:
    """How two instances staged from the same history (one through store_event and
    add_dynamic_partitions, one through this module) differ: the rows of the tables Dagster's
    writes touch, the row count of every table, then the answers of the queries the product asks
    of the event log about `keys`, then the status cache those queries built. Empty when the two
    are the same."""
    differences = _compare_tables(instance_a, instance_b)
    with warnings.catch_warnings():  # the product's (and these) get_event_records calls
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message="Use fetch_observations instead")
        warnings.filterwarnings("ignore", message="Asset materialization planned events with")
        answers_a, answers_b = _answers(instance_a, keys), _answers(instance_b, keys)
    for name, answer in answers_a.items():
        if answer != answers_b[name]:
            differences.append(f"{name}: {_brief(answer)} != {_brief(answers_b[name])}")
    differences += _compare_tables(instance_a, instance_b, only="asset_keys")
    return differences


def _compare_tables(
    instance_a: dg.DagsterInstance, instance_b: dg.DagsterInstance, only: str | None = None
) -> list[str]:
    urls = [libpq_dsn(_storage(i).postgres_url) for i in (instance_a, instance_b)]
    tables = {only: _TABLES[only]} if only else _TABLES
    found_a, found_b = (_table_rows(url, tables, counts=only is None) for url in urls)
    differences = []
    for name in sorted(found_a.keys() | found_b.keys()):
        a, b = found_a.get(name), found_b.get(name)
        if a == b:
            continue
        if not isinstance(a, list) or not isinstance(b, list) or len(a) != len(b):
            differences.append(f"{name}: {_brief(a)} != {_brief(b)}")
            continue
        row = next(n for n, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
        columns = [c.strip() for c in tables[name].split(",")]
        unlike = [c for c, x, y in zip(columns, a[row], b[row], strict=True) if x != y]
        differences.append(f"table {name}: row {row} differs in {', '.join(unlike)}")
    return differences


def _table_rows(url: str, tables: dict[str, str], counts: bool) -> dict[str, Any]:
    connection = psycopg2.connect(url)
    try:
        with connection.cursor() as cursor:
            found: dict[str, Any] = {}
            for table, columns in tables.items():
                cursor.execute(f"SELECT {columns} FROM {table} ORDER BY id")
                found[table] = cursor.fetchall()
            if counts:
                cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                for (table,) in cursor.fetchall():
                    cursor.execute(f"SELECT count(*) FROM {table}")
                    found[f"{table} (rows)"] = cursor.fetchone()[0]
                cursor.execute("SELECT sequencename, last_value FROM pg_sequences")
                found.update({f"{name} (last value)": value for name, value in cursor.fetchall()})
            return found
    finally:
        connection.close()


def _answers(instance: dg.DagsterInstance, keys: Sequence[str]) -> dict[str, Any]:
    """What the product reads from the event log about `keys` (instance.facts, the schedules,
    the status cache), and what Dagster's UI reads of an asset."""
    from extraction_pipeline.core.operations.lifecycle import RetryPolicy
    from extraction_pipeline.defs.schedules import failed_document_facts
    from extraction_pipeline.instance.facts import document_facts, never_attempted
    from extraction_pipeline.instance.names import documents_partitions

    assets = [dg.AssetKey(a) for a in _ASSETS]
    storage = instance.event_log_storage
    answers: dict[str, Any] = {
        "get_asset_records": instance.get_asset_records(assets),
        "never_attempted": never_attempted(instance, keys),
        "failed_document_facts": failed_document_facts(instance, keys, RetryPolicy()),
        "document_facts": document_facts(instance, keys),
        "get_dynamic_partitions": instance.get_dynamic_partitions("documents"),
    }
    for asset in assets:
        name = asset.to_user_string()
        answers[f"get_materialized_partitions({name})"] = instance.get_materialized_partitions(
            asset
        )
        answers[f"get_status_by_partition({name})"] = instance.get_status_by_partition(
            asset, keys, documents_partitions
        )
        answers[f"fetch_materializations({name}, limit=1)"] = instance.fetch_materializations(
            asset, limit=1
        ).records
        answers[f"fetch_observations({name}, limit=1)"] = instance.fetch_observations(
            asset, limit=1
        ).records
        for kind in (DagsterEventType.ASSET_MATERIALIZATION, DagsterEventType.ASSET_OBSERVATION):
            answers[f"get_latest_storage_id_by_partition({name}, {kind.value})"] = (
                storage.get_latest_storage_id_by_partition(asset, kind, partitions=set(keys))
            )
        answers[f"planned events of {name} by partition"] = [
            (r.storage_id, r.run_id, r.partition_key)
            for start in range(0, len(keys), 1000)
            for r in instance.get_event_records(
                dg.EventRecordsFilter(
                    event_type=DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
                    asset_key=asset,
                    asset_partitions=list(keys[start : start + 1000]),
                ),
                ascending=False,
            )
        ]
    return answers


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else f"{text[:200]}... ({len(text)} characters)"


# --- the check as a script ------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Stage the same history into three fresh databases: per event (add_dynamic_partitions in
    chunks of 1,000, store_event per event, as scale.py did), by copy_document_history and
    by copy_event_history; print the rates and every difference (exit status 1 if any)."""
    import argparse
    import contextlib
    from dataclasses import replace

    import yaml
    from common import fresh_database, pg_server, scratch_dir, shipped_storage
    from scale import FAILED_SHARE, INVOICE, RUN_DOCUMENTS, _call_summary

    from extraction_pipeline.cli.launcher import INSTANCE_TEMPLATE

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("-n", "--documents", type=int, default=3_000)
    parser.add_argument("--pg-url", default=None)
    args = parser.parse_args(argv)
    keys = [f"scan-{i:06d}-{i * 7919:012x}" for i in range(args.documents)]
    keys[7] = 'odd "key" \\ with \u00e9 and \u2603'  # escaping, in JSON and in COPY text
    staged = keys[: args.documents * 5 // 6]  # the rest never attempted
    history = DocumentHistory(
        INVOICE, _call_summary(), FAILED_SHARE, RUN_DOCUMENTS, datetime.now(UTC)
    )

    def steady_clock() -> Callable[[], float]:
        ticks = itertools.count()
        return lambda: 1796000000.0 + next(ticks) * 0.000731

    failed = False
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(scratch_dir())
        server_url, _ = stack.enter_context(pg_server(args.pg_url, workdir))
        instances = {}
        for name in ("per_event", "templates", "entries"):
            url = stack.enter_context(fresh_database(server_url, f"staging_{name}"))
            config = {**yaml.safe_load(INSTANCE_TEMPLATE.read_text()), **shipped_storage(url)}
            (workdir / name).mkdir()
            (workdir / name / "dagster.yaml").write_text(yaml.safe_dump(config))
            instance = dg.DagsterInstance.from_config(str(workdir / name))
            instances[name] = stack.enter_context(instance)
        reference = instances["per_event"]
        for start in range(0, len(keys), 1000):
            reference.add_dynamic_partitions("documents", keys[start : start + 1000])
        began, written = time.perf_counter(), 0
        for entries in replace(history, clock=steady_clock()).runs(staged):
            # One by one: the project's storage writes a batch's summary rows once per asset,
            # which leaves fewer asset_keys sequence values taken than the per-event path.
            for entry in entries:
                if not entry.get_dagster_event().is_asset_failed_to_materialize:
                    reference.event_log_storage.store_event(entry)
                    written += 1
        _print_rate("store_event", written, time.perf_counter() - began)
        for name, stage in (
            ("templates", lambda i, h: copy_document_history(i, staged, h, verify_every=100)),
            ("entries", lambda i, h: copy_event_history(i, h.runs(staged))),
        ):
            copy_dynamic_partitions(instances[name], "documents", keys)
            began = time.perf_counter()
            written = stage(instances[name], replace(history, clock=steady_clock()))
            _print_rate(f"copy ({name})", written, time.perf_counter() - began)
        for name in ("templates", "entries"):
            # the last check's status queries built the reference's status cache: drop it
            reference.wipe_asset_cached_status([dg.AssetKey(a) for a in _ASSETS])
            differences = check_equivalence(reference, instances[name], keys)
            print(f"per event vs copy ({name}): {len(differences)} differences")
            for difference in differences:
                print(f"  {difference}")
            failed = failed or bool(differences)
    return 1 if failed else 0


def _print_rate(label: str, events: int, seconds: float) -> None:
    print(f"{label}: {events:,} events in {seconds:.2f} s, {events / seconds:,.0f} events/s")


if __name__ == "__main__":
    import sys

    sys.exit(main())
