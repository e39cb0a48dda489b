"""Safety properties checked during every simulated run; a violation stops the run with an error.

1. No in-use instance destroyed: a MIG device allocated to a running pod before an agent reconcile
   still exists after it.
2. No pod bound to a device that does not exist (checked at every bind and after every reconcile).
3. Slot occupancy physically valid: every GPU's instances (half-created ones included) pass
   ``layout_errors`` after every reconcile.
"""

from __future__ import annotations

from collections.abc import Mapping

from nos.gpu.port import Nvml
from nos.mig.catalog import GpuModel
from nos.mig.layout import Instance, layout_errors


class InvariantViolation(RuntimeError):
    """The simulated cluster reached a state the partitioner and agent must never produce."""


def existing_devices(nvml: Nvml) -> dict[str, tuple[int, int]]:
    """MIG device UUID -> (gpu, gi_id) for every device that exists on the node now."""
    out: dict[str, tuple[int, int]] = {}
    for gpu in nvml.gpus():
        for gi in nvml.gpu_instances(gpu.index):
            for uuid in gi.device_uuids:
                out[uuid] = (gpu.index, gi.gi_id)
    return out


def check_in_use_kept(
    node: str, bound_before: Mapping[str, str], still_running: Mapping[str, str], nvml: Nvml, t: float
) -> None:
    """``bound_before``/``still_running``: device UUID -> pod, before the reconcile and after it."""
    existing = existing_devices(nvml)
    for uuid, pod in sorted(bound_before.items()):
        if uuid not in existing and still_running.get(uuid) == pod:
            raise InvariantViolation(
                f"t={t:.0f}s node {node}: MIG device {uuid} in use by running pod {pod} was destroyed"
                " by the agent reconcile"
            )


def check_bound_devices_exist(node: str, running: Mapping[str, str], nvml: Nvml, t: float) -> None:
    existing = existing_devices(nvml)
    for uuid, pod in sorted(running.items()):
        if uuid not in existing:
            raise InvariantViolation(
                f"t={t:.0f}s node {node}: pod {pod} is bound to MIG device {uuid}, which does not exist"
            )


def check_layouts(node: str, model: GpuModel, nvml: Nvml, t: float) -> None:
    for gpu in nvml.gpus():
        instances = [Instance(gi.start, gi.profile) for gi in nvml.gpu_instances(gpu.index)]
        errors = layout_errors(model, instances)
        if errors:
            layout = " ".join(map(str, sorted(instances)))
            raise InvariantViolation(
                f"t={t:.0f}s node {node} GPU {gpu.index}: physically impossible layout {layout}: {errors[0]}"
            )
