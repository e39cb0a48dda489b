"""Simulated GPUs for the simulator tests: the project's ``SimulatedNvml`` when it is installed,
otherwise the agent tests' ``FakeNvml`` (same port, same physics from the catalog)."""

from __future__ import annotations

import importlib.util

import pytest

from nos.gpu.port import Nvml
from nos.mig.catalog import GpuModel
from nos.sim.nodes import NvmlFactory, simulated_nvml


def _fake(model: GpuModel, gpus: int) -> Nvml:
    from tests.agent.agent_fakes import FakeNvml

    return FakeNvml(model.name, gpus)


@pytest.fixture
def nvml_factory() -> NvmlFactory:
    return simulated_nvml if importlib.util.find_spec("nos.gpu.simulated") else _fake
