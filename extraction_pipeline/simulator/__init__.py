"""A deterministic, OpenAI-compatible model simulator for tests, demos and benchmarks."""

from extraction_pipeline.simulator.app import create_app
from extraction_pipeline.simulator.config import SimulatorConfig, SimulatorSettings
from extraction_pipeline.simulator.faults import FAULT_MIXES, FaultRule, fault_mix, parse_fault_spec
from extraction_pipeline.simulator.server import (
    SimulatorControl,
    SimulatorServer,
    main,
    run_simulator,
)

__all__ = [
    "FAULT_MIXES",
    "FaultRule",
    "SimulatorConfig",
    "SimulatorControl",
    "SimulatorServer",
    "SimulatorSettings",
    "create_app",
    "fault_mix",
    "main",
    "parse_fault_spec",
    "run_simulator",
]
