"""The real adapter over the ctypes-level fake library (see fake_nvml_lib)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from nos.gpu.nvml import PynvmlNvml
from nos.gpu.simulated import SimulatedNvml
from tests.gpu.fake_nvml_lib import FakeNvmlLib, installed


@dataclass
class Rig:
    nvml: PynvmlNvml
    sim: SimulatedNvml
    lib: FakeNvmlLib


@pytest.fixture
def rig() -> Iterator[Rig]:
    """Two A100-80GB with MIG enabled and one with MIG disabled (its enable pending)."""
    sim = SimulatedNvml.new("A100-80GB", 2)
    sim.add_gpu("A100-80GB", mig_enabled=False, mig_pending=True)
    with installed(FakeNvmlLib(sim)) as lib:
        nvml = PynvmlNvml()
        yield Rig(nvml, sim, lib)
        nvml.close()
