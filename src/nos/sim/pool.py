"""GPUs as pools of compute and memory slices: the capacity model of the ``ideal`` and ``whole-gpu``
reference policies.

* ``ideal``: a pod takes its profile's compute slices and memory slots from any GPU that still has
  them, wherever they sit: no placement rules, no batch window, no device-plugin restart. No MIG
  partitioner can do better on the same arrivals and scheduling order, because every layout it can
  reach is one such allocation.
* ``whole-gpu``: MIG off; a pod takes a whole GPU whatever its profile asks for.

Among the GPUs that can host a pod the tightest one wins (fewest compute slices left, then fewest
memory slots, then the lowest index), which keeps whole GPUs free for large pods, as nos' planner
does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nos.mig.catalog import GpuModel


@dataclass(frozen=True)
class Demand:
    compute: int
    slots: int


def demand(model: GpuModel, profile: str, whole_gpu: bool) -> Demand:
    """What one pod of ``profile`` takes from a GPU of ``model``."""
    if whole_gpu:
        return Demand(model.compute_slices, model.memory_slots)
    p = model.profile(profile)
    return Demand(p.compute, p.slots)


@dataclass
class NodePool:
    model: GpuModel
    gpus: int
    whole_gpu: bool
    free_compute: list[int] = field(default_factory=list)
    free_slots: list[int] = field(default_factory=list)
    held: dict[str, tuple[int, Demand]] = field(default_factory=dict)
    """Pod key -> (GPU index, what it holds)."""

    def __post_init__(self) -> None:
        self.free_compute = [self.model.compute_slices] * self.gpus
        self.free_slots = [self.model.memory_slots] * self.gpus

    def offers(self, profile: str) -> bool:
        return profile in self.model.profiles

    def _best(self, d: Demand) -> int | None:
        best: tuple[int, int, int] | None = None
        for i in range(self.gpus):
            c, s = self.free_compute[i], self.free_slots[i]
            if c >= d.compute and s >= d.slots and (best is None or (c, s, i) < best):
                best = (c, s, i)
        return None if best is None else best[2]

    def fits(self, profile: str) -> bool:
        return self.offers(profile) and self._best(demand(self.model, profile, self.whole_gpu)) is not None

    def allocate(self, pod: str, profile: str) -> int | None:
        """The GPU the pod gets (tightest fit), or None."""
        if not self.offers(profile):
            return None
        d = demand(self.model, profile, self.whole_gpu)
        gpu = self._best(d)
        if gpu is None:
            return None
        self.free_compute[gpu] -= d.compute
        self.free_slots[gpu] -= d.slots
        self.held[pod] = (gpu, d)
        return gpu

    def release(self, pod: str) -> None:
        gpu, d = self.held.pop(pod)
        self.free_compute[gpu] += d.compute
        self.free_slots[gpu] += d.slots
