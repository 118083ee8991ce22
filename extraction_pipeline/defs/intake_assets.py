"""The `source_document` asset: each registered PDF, checked readable, facts as metadata."""

from collections.abc import Iterator

import dagster as dg

from extraction_pipeline.core.pdf import UnreadablePdf, read_pdf
from extraction_pipeline.defs.partitions import documents_partitions
from extraction_pipeline.defs.resources import DocumentStoreResource

# Ranged runs amortise the cost of a run (a process, ~30 event rows) over many documents.
INTAKE_BACKFILL_POLICY = dg.BackfillPolicy.multi_run(max_partitions_per_run=100)


class DocumentNotRegistered(Exception):
    """A partition exists but the data dir has no registration for it (wrong data dir?)."""


@dg.asset(
    partitions_def=documents_partitions,
    backfill_policy=INTAKE_BACKFILL_POLICY,
    group_name="intake",
    kinds={"pdf"},
    output_required=False,
    code_version="1",
)
def source_document(
    context: dg.AssetExecutionContext, document_store: DocumentStoreResource
) -> Iterator[dg.AssetMaterialization]:
    """The original PDF of each document, stored content-addressed under the data dir.

    Materialised per document with its file name, SHA-256, size, page count and whether it has a
    text layer. An unreadable PDF (empty, not a PDF, truncated or corrupt, encrypted, over the
    page or byte limit) fails its own partition with the specific reason and never its neighbours.
    """
    registry = document_store.registry()
    limits = document_store.pdf_limits()
    failures: dict[str, str] = {}
    for key in context.partition_keys:
        record = registry.get(key)
        if record is None:
            failures[key] = f"{DocumentNotRegistered.__name__}: no registration for {key!r}"
            continue
        try:
            info = read_pdf(registry.original(record), limits)
        except UnreadablePdf as error:
            failures[key] = f"{type(error).__name__}: {record.file_name}: {error}"
            context.log.error(f"{key}: {failures[key]}")
            continue
        yield dg.AssetMaterialization(
            asset_key=context.asset_key,
            partition=key,
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
    if failures:
        raise dg.Failure(
            description=_failure_description(failures, len(context.partition_keys)),
            metadata={"failed_documents": dg.MetadataValue.json(failures)},
            allow_retries=False,
        )


def _failure_description(failures: dict[str, str], total: int) -> str:
    lines = [f"{len(failures)} of {total} documents are unreadable:"]
    lines += [f"- {key}: {reason}" for key, reason in failures.items()]
    return "\n".join(lines)
