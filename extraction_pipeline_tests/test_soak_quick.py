"""`benchmarks/soak.py --quick`: 20 invoices through a real daemon under the standard fault mix
settle with nothing lost, duplicated, paid twice, paid and not kept, stuck or falsely announced
as a dead letter (about a minute).

Apart from test_benchmarks_quick because its figures that matter are zeros, not positives.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parents[1] / "benchmarks" / "soak.py"


@pytest.mark.benchmark
def test_soak_quick_mode_settles_with_every_invariant_at_zero(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(SOAK), "--quick"],
        env={**os.environ, "BENCHMARK_RESULTS_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    figures = json.loads((tmp_path / "soak.json").read_text())["figures"]
    assert figures["settled"] is True and figures["settle_s"] > 0
    for invariant in (
        "lost",
        "duplicated",
        "paid_twice",
        "paid_not_kept",
        "stuck",
        "false_dead_letters",
    ):
        assert figures[invariant] == 0, (invariant, figures["offenders"])
    assert sum(figures["faults"].values()) > 0
    assert sum(figures["documents_by_state"].values()) == 20
