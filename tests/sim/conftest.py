"""Simulated GPUs for the simulator tests: the project's ``SimulatedNvml``, the same one ``nos simulate`` uses."""

from __future__ import annotations

import pytest

from nos.sim.nodes import NvmlFactory, simulated_nvml


@pytest.fixture
def nvml_factory() -> NvmlFactory:
    return simulated_nvml
