"""Simulated GPU nodes: one simulated NVML per node, and the Node object kubelet and GFD would publish."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nos.contract.annotations import (
    COUNT_LABEL,
    MEMORY_LABEL,
    PARTITIONING_LABELS,
    PARTITIONING_MIG,
    PRODUCT_LABEL,
    encode_spec,
)
from nos.gpu.port import Nvml
from nos.gpu.simulated import SimulatedNvml
from nos.mig.catalog import MIG_RESOURCE_PREFIX, GpuModel
from nos.mig.layout import Instance
from nos.mig.packing import Packer
from nos.sim.pool import NodePool

NvmlFactory = Callable[[GpuModel, int], Nvml]
"""(GPU model, GPU count) -> a fresh simulated NVML for one node, no MIG instances yet."""

POD_CAPACITY = 110


def simulated_nvml(model: GpuModel, gpus: int) -> Nvml:
    """The project's simulated NVML (``nos.gpu.simulated``) for ``gpus`` GPUs of ``model``, MIG enabled."""
    nvml: Nvml = SimulatedNvml.new(model.name, gpus)
    return nvml


def arrange(model: GpuModel, counts: Mapping[str, int]) -> tuple[Instance, ...]:
    """Placements for a layout given as profile counts (the planner's packing search)."""
    wanted = tuple(sorted(p for p, n in counts.items() for _ in range(n)))
    layout = Packer().materialize(model, (), wanted, fill=False)
    if layout is None:
        raise ValueError(f"layout {dict(counts)} does not fit on one {model.name} GPU")
    return layout


@dataclass(eq=False)
class SimNode:
    name: str
    model: GpuModel
    gpus: int
    nvml: Nvml
    cpu_m: int
    memory_b: int
    used_cpu_m: int = 0
    used_memory_b: int = 0
    used_pods: int = 0
    used_mig: Counter[str] = field(default_factory=Counter)
    """MIG resources requested by the pods running here (scheduler accounting)."""
    advertised: dict[str, int] = field(default_factory=dict)
    """``nvidia.com/mig-*`` counts in the node's allocatable (what the device plugin published)."""
    advertised_devices: set[str] = field(default_factory=set)
    allocated: dict[str, str] = field(default_factory=dict)
    """Device UUID -> pod key: kubelet's device allocation (what PodResources reports)."""
    plugin_up: bool = True
    plugin_generation: int = 0
    pool: NodePool | None = None
    """Set for the ``ideal`` and ``whole-gpu`` policies: GPUs are pools of slices, no MIG devices."""

    def create_layouts(self, layouts: Sequence[tuple[Instance, ...]]) -> None:
        """Provision GPU ``i`` with ``layouts[i]`` through the NVML port (as an admin would before nos)."""
        for gpu, layout in enumerate(layouts):
            for inst in layout:
                gi = self.nvml.create_gpu_instance(gpu, inst.profile, inst.start)
                self.nvml.create_compute_instance(gpu, gi.gi_id)

    def manifest(self, layouts: Sequence[tuple[Instance, ...]]) -> dict[str, Any]:
        """The Node: opted in, GFD labels, spec annotations matching the provisioned layouts."""
        annotations = encode_spec(dict(enumerate(layouts)), "0") if any(layouts) else {}
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": {
                    PARTITIONING_LABELS[0]: PARTITIONING_MIG,
                    PRODUCT_LABEL: self.model.products[0],
                    COUNT_LABEL: str(self.gpus),
                    MEMORY_LABEL: str(self.model.memory_gb * 1024),
                    "kubernetes.io/hostname": self.name,
                },
                "annotations": annotations,
            },
            "spec": {},
            "status": {"allocatable": self.allocatable(), "capacity": self.allocatable()},
        }

    def allocatable(self) -> dict[str, str]:
        out = {"cpu": f"{self.cpu_m}m", "memory": str(self.memory_b), "pods": str(POD_CAPACITY)}
        out.update({r: str(n) for r, n in sorted(self.advertised.items())})
        return out

    def gpu_room(self, resource: str) -> bool:
        """Allocatable ``resource`` (as the device plugin published it) minus the pods' requests is at
        least 1; under the pool policies, a GPU has room for the profile."""
        if self.pool is not None:
            return self.pool.fits(resource.removeprefix(MIG_RESOURCE_PREFIX))
        return self.advertised.get(resource, 0) - self.used_mig[resource] >= 1

    def fits(self, cpu_m: int, memory_b: int, resource: str) -> bool:
        """kube-scheduler's NodeResourcesFit for the resources a simulated pod requests."""
        return (
            self.gpu_room(resource)
            and self.cpu_m - self.used_cpu_m >= cpu_m
            and self.memory_b - self.used_memory_b >= memory_b
            and self.used_pods < POD_CAPACITY
        )

    def least_allocated_score(self, cpu_m: int, memory_b: int) -> float:
        """kube-scheduler's default scoring (LeastAllocated): the mean free share of cpu and memory."""
        cpu = (self.cpu_m - self.used_cpu_m - cpu_m) / self.cpu_m
        mem = (self.memory_b - self.used_memory_b - memory_b) / self.memory_b
        return (cpu + mem) / 2
