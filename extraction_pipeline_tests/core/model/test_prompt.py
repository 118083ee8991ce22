"""The schema fingerprint: part of every cache key, so it must change with what the model sees."""

from pydantic import BaseModel, Field

from extraction_pipeline.core.extraction.schemas import Invoice
from extraction_pipeline.core.model.prompt import schema_fingerprint


class PurchaseOrder(BaseModel):
    po_number: str | None = None


def test_fingerprint_is_stable_and_short() -> None:
    assert schema_fingerprint(Invoice) == schema_fingerprint(Invoice)
    assert len(schema_fingerprint(Invoice)) == 16
    assert schema_fingerprint(Invoice) != schema_fingerprint(PurchaseOrder)


def test_fingerprint_changes_when_a_description_changes() -> None:
    class A(BaseModel):
        total: float | None = Field(default=None, description="Amount due.")

    first = schema_fingerprint(A)

    class A(BaseModel):  # type: ignore[no-redef]
        total: float | None = Field(default=None, description="Amount due incl. tax.")

    assert schema_fingerprint(A) != first
