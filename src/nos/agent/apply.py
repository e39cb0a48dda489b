"""Runs reconcile operations through an ``Nvml``: one apply at a time, every step logged.

Safety rules enforced here (not only in the planner, because the world moves between planning and
applying):

* right before every destroy the instance is looked up again and must still be the one planned: same
  GPU instance id, same placement and the same MIG device UUIDs (the driver gives an instance
  re-created at the same place the same id again, so only the UUID tells it apart); then the in-use
  check is asked again; an instance that changed or became busy is left alone and the destroy is
  reported as failed;
* NVML's busy-process list is a safety net beside kubelet's PodResources: when the driver denies it
  (no MIG monitor capability) or lacks it, ``BusyProcesses`` answers "none" and says why once, so
  the agent warns instead of aborting every reconcile;
* an NVML error fails only its op; ops that depend on it (a create over slots a failed destroy
  should have freed) are skipped, all others still run;
* a create is two NVML calls (GPU instance, then compute instance). A crash between them leaves a
  GPU instance without compute instance, which the next reconcile destroys, or completes when it
  is wanted exactly there; nothing here needs to survive a restart.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from nos.agent.reconcile import Op
from nos.gpu.port import Nvml, NvmlError, NvmlFunctionNotFound, NvmlNoPermission

log = logging.getLogger(__name__)

InUseCheck = Callable[[int, int], bool]
"""(gpu, gi_id) -> whether that GPU instance is in use right now."""


@dataclass(frozen=True)
class OpResult:
    op: Op
    ok: bool
    error: str | None = None


@dataclass
class ApplyResult:
    results: list[OpResult] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Some op changed the GPUs (the device plugin must re-advertise)."""
        return any(r.ok for r in self.results)

    @property
    def failures(self) -> list[OpResult]:
        return [r for r in self.results if not r.ok]


class BusyProcesses:
    """``nvml.busy_gpu_instances`` degraded, not fatal: a denied (NO_PERMISSION) or missing
    (FUNCTION_NOT_FOUND) process query counts as "no busy instance", and ``unavailable`` says why
    (kubelet's PodResources and the driver's own IN_USE refusal still guard every destroy)."""

    def __init__(self, nvml: Nvml) -> None:
        self._nvml = nvml
        self.unavailable: str | None = None
        """Why the last query could not be answered; None while it works."""

    def __call__(self, gpu: int) -> set[int]:
        try:
            busy = self._nvml.busy_gpu_instances(gpu)
        except (NvmlNoPermission, NvmlFunctionNotFound) as e:
            if self.unavailable is None:
                log.warning("busy-process check unavailable, relying on PodResources: %s", e)
            self.unavailable = f"{e.nvml_name}: {e}"
            return set()
        self.unavailable = None
        return busy


class Applier:
    """Executes ops; ``in_use`` is asked again before each destroy (``busy`` always is)."""

    def __init__(self, nvml: Nvml, in_use: InUseCheck | None = None, busy: BusyProcesses | None = None) -> None:
        self._nvml = nvml
        self._in_use = in_use
        self._busy = busy or BusyProcesses(nvml)
        self._lock = threading.Lock()

    def apply(self, ops: Sequence[Op]) -> ApplyResult:
        with self._lock:
            result = ApplyResult()
            failed: list[Op] = []
            for op in ops:
                blocker = next((f for f in failed if _depends(op, f)), None)
                if blocker is not None:
                    msg = f"skipped: depends on failed {blocker.kind} {blocker.profile}@{blocker.start}"
                    log.warning("%s: %s", op, msg)
                    result.results.append(OpResult(op, False, msg))
                    failed.append(op)
                    continue
                error = self._run(op)
                if error is None:
                    log.info("%s: done", op)
                    result.results.append(OpResult(op, True))
                else:
                    log.error("%s: failed: %s", op, error)
                    result.results.append(OpResult(op, False, error))
                    failed.append(op)
            return result

    def _run(self, op: Op) -> str | None:
        try:
            if op.kind == "destroy":
                return self._destroy(op)
            if op.kind == "complete":
                assert op.gi_id is not None
                self._nvml.create_compute_instance(op.gpu, op.gi_id)
                return None
            gi = self._nvml.create_gpu_instance(op.gpu, op.profile, op.start)
            log.info("%s: GPU instance %d created", op, gi.gi_id)
            self._nvml.create_compute_instance(op.gpu, gi.gi_id)
            return None
        except NvmlError as e:
            return f"{e.nvml_name}: {e}"

    def _destroy(self, op: Op) -> str | None:
        assert op.gi_id is not None
        current = next((g for g in self._nvml.gpu_instances(op.gpu) if g.gi_id == op.gi_id), None)
        if current is None:
            return "the instance is gone since planning"
        if (current.profile, current.start, current.size) != (op.profile, op.start, op.size):
            return f"the instance changed since planning (now {current.profile}@{current.start})"
        if current.device_uuids != op.device_uuids:
            return "the instance was re-created since planning (other MIG device UUID)"
        if op.gi_id in self._busy(op.gpu) or (self._in_use is not None and self._in_use(op.gpu, op.gi_id)):
            return "in use now; not destroyed"
        self._nvml.destroy_gpu_instance(op.gpu, op.gi_id)
        return None


def _depends(op: Op, failed: Op) -> bool:
    """A create/complete needs the slots that earlier failed destroys on the same GPU should free."""
    return (
        op.kind != "destroy"
        and failed.gpu == op.gpu
        and failed.kind == "destroy"
        and bool(op.slot_mask & failed.slot_mask)
    )
