"""Pods as the simulator tracks them, and their Kubernetes objects."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from nos.mig.catalog import MIG_RESOURCE_PREFIX
from nos.sim.scenario import PodSpec

NAMESPACE = "workload"
PodState = Literal["pending", "running", "done"]


@dataclass(eq=False)
class SimPod:
    """A pod of the workload; what it asks for is worked out once (the scheduler asks it of
    thousands of pending pods on every pass)."""

    spec: PodSpec
    compute: int
    """Compute slices of the requested profile (for the allocation metric)."""
    state: PodState = "pending"
    node: str | None = None
    device: str | None = None
    """The MIG device (UUID) the device plugin allocated to it while running."""
    bound_at: float | None = None
    device_at: float | None = None
    """When the device it got was first advertised (its bind time under the ideal policy)."""
    finished_at: float | None = None
    marked_unschedulable: bool = False

    @cached_property
    def name(self) -> str:
        assert self.spec.name is not None
        return self.spec.name

    @cached_property
    def key(self) -> str:
        return f"{NAMESPACE}/{self.name}"

    @cached_property
    def resource(self) -> str:
        return MIG_RESOURCE_PREFIX + self.spec.profile

    @cached_property
    def cpu_m(self) -> int:
        return round(self.spec.cpu * 1000)

    @cached_property
    def memory_b(self) -> int:
        return round(self.spec.memory_gib * 2**30)

    def manifest(self) -> dict[str, Any]:
        """The Pod as a user would submit it: one container asking for one MIG device."""
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": self.name, "namespace": NAMESPACE, "labels": {"app": "sim-workload"}},
            "spec": {
                "priority": self.spec.priority,
                "schedulerName": "default-scheduler",
                "containers": [
                    {
                        "name": "main",
                        "resources": {
                            "requests": {"cpu": f"{self.cpu_m}m", "memory": str(self.memory_b)},
                            "limits": {self.resource: "1"},
                        },
                    }
                ],
            },
            "status": {"phase": "Pending"},
        }
