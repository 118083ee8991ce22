"""The model simulator as pytest fixtures, and helpers that make sample invoice PDFs.

`model_simulator_server` (session) serves one simulator on a free loopback port for the whole
run; `model_simulator` (function) resets it before each test and yields its `SimulatorControl`
(`.base_url`, `.set_faults(...)`, `.configure(...)`, `.requests()`, `.reset()`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fpdf import FPDF

from extraction_pipeline.simulator import SimulatorConfig, SimulatorControl, SimulatorServer

TEST_API_KEY = "sk-simulator-test"


@pytest.fixture(scope="session")
def model_simulator_server() -> Iterator[SimulatorServer]:
    """One simulator for the session (fast batch phases for tests)."""
    with SimulatorServer(SimulatorConfig(batch_phase_seconds=0.1)) as server:
        yield server


@pytest.fixture
def model_simulator(model_simulator_server: SimulatorServer) -> Iterator[SimulatorControl]:
    """The session simulator, reset (no faults, no latency, empty log) for this test."""
    control = model_simulator_server.control()
    control.reset()
    yield control
    control.reset()


def invoice_text(
    number: str = "INV-0001",
    *,
    total: str = "119.00",
    extra_lines: tuple[str, ...] = (),
) -> str:
    """Invoice text in the format the simulator's reader understands."""
    lines = [
        f"Invoice number: {number}",
        "Invoice date: 2026-01-31",
        "Due date: 2026-02-28",
        "Vendor: Acme Supplies GmbH",
        "Bill to: Globex Corporation",
        "Currency: EUR",
        "Item: Widget, large | 2 | 25.00 | 50.00",
        "Item: Service hour | 1 | 50.00 | 50.00",
        "Subtotal: 100.00",
        "Tax: 19.00",
        f"Total: {total}",
        *extra_lines,
    ]
    return "\n".join(lines)


def text_pdf(text: str) -> bytes:
    """A one-page PDF with `text` as its text layer, one line per line."""
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=11)
    for line in text.splitlines():
        pdf.cell(0, 7, line, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
