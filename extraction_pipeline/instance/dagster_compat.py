"""The few Dagster names this project needs that Dagster does not export publicly.

Each is used where Dagster offers no public way: a run launcher's health-check result types
(run monitoring asks launchers for them) and the run tag where the default launcher records the
code server it used. `extraction_pipeline_tests/test_dagster_compat.py` fails loudly if an
upgrade moves or changes them.
"""

from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus
from dagster._core.storage.tags import GRPC_INFO_TAG

__all__ = ["GRPC_INFO_TAG", "CheckRunHealthResult", "WorkerStatus"]
