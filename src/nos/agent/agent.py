"""The MIG agent: make this node's GPUs match the spec annotations, then report what exists.

One ``reconcile_once`` reads the Node, plans every GPU (``reconcile``), applies the ops through NVML
(``apply``), restarts the device plugin when something changed (``device_plugin``) and patches the
status annotations (``report``). Safety rules, in the order they are checked:

* a node without the opt-in label is never touched; GPUs of different models on one node stop
  everything (Warning Event, each GPU reported unreadable) because the partitioner plans per node model;
* GPUs of a model the catalog does not know, or without MIG mode, are skipped (one Warning Event per
  GPU and process);
* malformed spec annotations of a GPU leave that GPU alone (Event); a problem not tied to one GPU
  leaves all GPUs alone;
* no spec at all (a node the partitioner has not planned yet) changes nothing;
* when kubelet's PodResources cannot be read, or it reports an allocated MIG device id that matches
  no MIG device UUID (``--device-id-strategy=index``, a device on a GPU NVML cannot read), every
  existing instance counts as in use (Warning Event naming the likely cause);
* a GPU NVML cannot read (an error, or a call past its deadline) is left alone and reported as
  unreadable (``status-error-gpu-<i>``, its old layout removed); the other GPUs go on.

NVML and PodResources calls are blocking; they run on one worker thread, which also serialises them,
and every NVML call has a deadline (``DeadlineNvml``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from nos.agent.apply import Applier, ApplyResult, BusyProcesses
from nos.agent.device_plugin import DevicePluginRestarter, Sleep, advertises, mig_allocatable
from nos.agent.nvml_deadline import DeadlineNvml
from nos.agent.podresources import PodResourcesError, PodResourcesSource
from nos.agent.reconcile import (
    Desired,
    GpuOps,
    Op,
    Skipped,
    allocated_ids,
    in_use_gi_ids,
    plan_gpu,
    unmatched_mig_ids,
)
from nos.agent.report import Reporter, advertised_instances, status_annotations, status_instances
from nos.config import AgentConfig
from nos.contract.annotations import GpuAnnotations, decode_spec, decode_status, is_mig_partitioned, is_spec_key
from nos.gpu.port import GpuInfo, GpuInstanceInfo, Nvml, NvmlError
from nos.kube.port import Event, Kube, ObjectRef
from nos.mig.catalog import Catalog, GpuModel, default_catalog, resource_for
from nos.mig.layout import Instance
from nos.runtime.events import EventRecorder

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class ReconcileResult:
    plan_id: str | None = None
    plans: list[GpuOps] = field(default_factory=list)
    applied: ApplyResult | None = None
    status: dict[str, str] = field(default_factory=dict)
    """The status annotations for the state after this reconcile."""
    patch: dict[str, str | None] = field(default_factory=dict)
    device_plugin_restarted: bool | None = None
    allocatable_ready: bool | None = None
    """After a restart: the node's allocatable showed the MIG devices in time (None: not checked)."""
    notes: list[str] = field(default_factory=list)
    """Why something was not done (also sent as Events)."""
    settled: bool = False
    """Nothing was applied, written, restarted or told (no Event), and no restart of ours is still
    settling: a fixed point. The agent's own state after it depends on its inputs alone (the Node,
    NVML, kubelet's allocations), so another reconcile on the same inputs does exactly the same
    nothing; a caller that can prove its inputs unchanged may skip it (``nos simulate`` does)."""

    @property
    def ops(self) -> list[Op]:
        return [op for p in self.plans for op in p.ops]

    @property
    def skipped(self) -> list[Skipped]:
        return [s for p in self.plans for s in p.skipped]


def expected_mig_resources(gpus: Iterable[Iterable[Instance]]) -> dict[str, int]:
    """``nvidia.com/mig-<profile>`` counts the device plugin should advertise for these instances."""
    counts: Counter[str] = Counter(resource_for(i.profile) for gpu in gpus for i in gpu)
    return dict(counts)


class Observed(NamedTuple):
    """What one GPU holds, as read through NVML and kubelet."""

    instances: list[GpuInstanceInfo]
    """The GPU instances NVML reports (half-created ones included)."""
    in_use: set[int]
    """GI ids allocated to pods or busy (all of them when kubelet cannot tell)."""
    profiles: set[str]
    """The profiles the driver offers on this GPU."""


@dataclass
class Observation:
    """What NVML and kubelet say about the managed GPUs of this node."""

    gpus: dict[int, Observed] = field(default_factory=dict)
    unreadable: dict[int, str] = field(default_factory=dict)
    """GPU index -> the NVML error that kept it from being read (not planned, reported as unreadable)."""
    podresources_ok: bool = True
    unmatched: list[str] = field(default_factory=list)
    """Allocated MIG device ids that match no MIG device (then every instance counts as in use)."""
    unmatched_advertised: bool | None = None
    """Whether kubelet's allocatable lists the unmatched ids (the device plugin's own naming)."""


def _expected(observed: Mapping[int, Observed]) -> dict[str, int]:
    return expected_mig_resources(advertised_instances(o.instances) for o in observed.values())


def gpu_model(catalog: Catalog, gpu: GpuInfo) -> GpuModel | None:
    """NVML's product name with ``-`` for spaces is the ``nvidia.com/gpu.product`` label."""
    return catalog.model_for_product(gpu.name.replace(" ", "-"))


class MigAgent:
    def __init__(
        self,
        node_name: str,
        nvml: Nvml,
        kube: Kube,
        podresources: PodResourcesSource | None,
        config: AgentConfig | None = None,
        catalog: Catalog | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        recorder: EventRecorder | None = None,
    ) -> None:
        """``podresources`` None: no kubelet (offline use); only NVML's busy instances count as in use.
        ``recorder``: the process' Event recorder (default: one of its own)."""
        self.config = config or AgentConfig()
        timeout = self.config.nvml_call_timeout_seconds
        self.nvml: Nvml = nvml if timeout is None else DeadlineNvml(nvml, timeout)
        self.node_name, self.kube, self.podresources = node_name, kube, podresources
        self.catalog = catalog or default_catalog()
        self.recorder = recorder or EventRecorder(kube)
        self.reporter = Reporter(kube, node_name)
        self.restarter = DevicePluginRestarter(
            kube, node_name, self.config.device_plugin, clock, sleep, recorder=self.recorder
        )
        self._busy = BusyProcesses(self.nvml)
        self._applier = Applier(self.nvml, self._in_use_now, self._busy)
        self._gpu_indices: list[int] = []
        self._last_problems: tuple[str, ...] = ()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nvml")
        self._lock = asyncio.Lock()
        self._last_skipped: tuple[str, ...] = ()
        self._clock = clock
        self._last_restart: float | None = None
        self.events_told = 0
        """Events this agent has sent (a reconcile that sent one is not ``settled``)."""

    async def _nvml_call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the worker thread; every NVML call in it has its own deadline (``DeadlineNvml``)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @property
    def nvml_hung(self) -> str | None:
        """An NVML call that passed its deadline and has not returned (the agent needs a restart)."""
        return self.nvml.hung if isinstance(self.nvml, DeadlineNvml) else None

    async def _event(self, reason: str, note: str, warning: bool = True, once_key: str | None = None) -> None:
        """Logged, then sent through the recorder (best effort); with ``once_key`` once per process."""
        if once_key is not None and self.recorder.told(once_key):
            return
        log.log(logging.WARNING if warning else logging.INFO, "%s: %s", reason, note)
        self.events_told += 1
        event = Event(ObjectRef("Node", self.node_name), reason, note, "Warning" if warning else "Normal")
        await self.recorder.record(event, subject=once_key)

    def _allocated(self) -> dict[str, set[str]] | None:
        """resource -> allocated device ids; None when kubelet cannot tell (then everything counts as in use)."""
        if self.podresources is None:
            return {}
        try:
            return self.podresources.allocated()
        except PodResourcesError as e:
            log.warning("%s", e)
            return None

    def _in_use_now(self, gpu: int, gi_id: int) -> bool:
        """Fresh in-use check right before a destroy (runs on the NVML thread): allocated, busy, or
        kubelet/NVML cannot tell for sure."""
        allocated = self._allocated()
        if allocated is None:
            return True
        try:
            actual = self.nvml.gpu_instances(gpu)
            busy = self._busy(gpu)
            if unmatched_mig_ids(allocated, ()):  # some MIG device is allocated: is each one known?
                uuids = {u for i in self._gpu_indices for gi in self.nvml.gpu_instances(i) for u in gi.device_uuids}
                if unmatched_mig_ids(allocated, uuids):
                    return True
        except NvmlError as e:
            log.warning("in-use check before destroying gpu %d instance %d: %s; not destroyed", gpu, gi_id, e)
            return True
        return gi_id in in_use_gi_ids(actual, allocated_ids(allocated), busy)

    def _observe(self, gpus: list[int]) -> Observation:
        """What each GPU holds; one GPU NVML cannot read is recorded as unreadable, the others still are."""
        self._gpu_indices = list(gpus)
        allocated = self._allocated()
        obs = Observation(podresources_ok=allocated is not None)
        raw: dict[int, tuple[list[GpuInstanceInfo], set[int], set[str]]] = {}
        for i in gpus:
            try:
                actual = self.nvml.gpu_instances(i)
                raw[i] = (actual, self._busy(i), {p.name for p in self.nvml.profiles(i)})
            except NvmlError as e:
                obs.unreadable[i] = f"{e.nvml_name}: {e}"
        if allocated is not None:
            uuids = {u for actual, _, _ in raw.values() for gi in actual for u in gi.device_uuids}
            obs.unmatched = unmatched_mig_ids(allocated, uuids)
        cannot_tell = allocated is None or bool(obs.unmatched)
        used = allocated_ids(allocated or {})
        for i, (actual, busy, available) in raw.items():
            in_use = {g.gi_id for g in actual} if cannot_tell else in_use_gi_ids(actual, used, busy)
            obs.gpus[i] = Observed(actual, in_use, available)
        if obs.unmatched and self.podresources is not None:
            obs.unmatched_advertised = self._advertised(obs.unmatched)
        return obs

    def _advertised(self, ids: Collection[str]) -> bool | None:
        """Whether kubelet's allocatable lists these ids (the device plugin names devices so), if known."""
        allocatable = getattr(self.podresources, "allocatable", None)
        if allocatable is None:
            return None
        try:
            known = allocated_ids(allocatable())
        except PodResourcesError:
            return None
        return all(i in known for i in ids)

    async def reconcile_once(self) -> ReconcileResult:
        async with self._lock:
            return await self._reconcile()

    async def _reconcile(self) -> ReconcileResult:
        told = self.events_told
        result = ReconcileResult()
        node = await self.kube.get("nodes", self.node_name)
        meta = node.get("metadata", {})
        labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
        if not is_mig_partitioned(labels):
            result.notes.append("node is not labelled for MIG partitioning; nothing done")
            log.info(result.notes[-1])
            return result
        spec = decode_spec(annotations)
        result.plan_id = spec.plan_id
        has_spec = any(is_spec_key(k) for k in annotations)

        try:
            gpus = await self._nvml_call(self.nvml.gpus)
        except NvmlError as e:  # nothing can be read: every GPU the status names is reported unreadable
            note = f"cannot list the GPUs through NVML ({e.nvml_name}: {e}); nothing done"
            await self._event("NvmlUnavailable", note)
            result.notes.append(note)
            known = set(decode_status(annotations).gpus) | set(decode_status(annotations).unreadable)
            await self._report(result, {}, {i: note for i in known}, spec.plan_id)
            return result
        if len({g.name for g in gpus}) > 1:
            note = "GPUs of different models on one node: " + ", ".join(sorted({g.name for g in gpus}))
            await self._event("MixedGpuModels", note + "; nothing done", once_key="mixed")
            result.notes.append(note)
            # the partitioner plans per node model: the layouts are not reported, each GPU says why
            await self._report(result, {}, {g.index: note for g in gpus}, spec.plan_id)
            return result
        managed: dict[int, GpuModel] = {}
        for g in gpus:
            model = gpu_model(self.catalog, g)
            if model is None:
                note = f"GPU {g.index} ({g.name}) is not a MIG model nos knows; left alone"
                await self._event("UnknownGpuModel", note, once_key=f"model-{g.index}")
                result.notes.append(note)
            elif not g.mig_enabled:
                note = f"GPU {g.index} ({g.name}) does not have MIG mode enabled; left alone"
                await self._event("MigDisabled", note, once_key=f"mig-{g.index}")
                result.notes.append(note)
            else:
                managed[g.index] = model

        missing = sorted(set(spec.gpus) - {g.index for g in gpus})
        if has_spec and missing:
            note = f"the spec names GPUs {missing} that this node does not have"
            await self._event("SpecForMissingGpu", note, once_key=f"missing-{missing}")
            result.notes.append(note)
        bad_gpus = spec.problem_gpus()
        problems = tuple(str(p) for p in spec.problems)
        for p in spec.problems:
            result.notes.append(str(p))
            if problems != self._last_problems:  # one Event per change, not one per reconcile
                await self._event(
                    "MalformedSpec", f"{p}; GPU left alone" if p.gpu is not None else f"{p}; node left alone"
                )
        self._last_problems = problems
        if not has_spec:
            result.notes.append("no spec annotations yet; nothing to apply")

        obs = await self._nvml_call(self._observe, sorted(managed))
        await self._note_observation(result, obs)
        for i, model in sorted(managed.items()):
            if i not in obs.gpus:
                continue
            gpu = obs.gpus[i]
            if not has_spec or bad_gpus is None or i in bad_gpus:
                continue
            desired = Desired.from_annotations(spec.gpus.get(i) or GpuAnnotations())
            result.plans.append(plan_gpu(model, i, desired, gpu.instances, gpu.in_use, gpu.profiles or None))
        await self._note_skipped(result.skipped)

        if result.ops and not self.config.dry_run:
            result.applied = await self._nvml_call(self._applier.apply, result.ops)
            for failure in result.applied.failures:
                await self._event("MigOperationFailed", f"{failure.op}: {failure.error}")
            if result.applied.changed:
                obs = await self._nvml_call(self._observe, sorted(managed))
                await self._note_observation(result, obs)
                if self.config.restart_device_plugin:
                    await self._restart_device_plugin(result, obs.gpus)
        elif not obs.unreadable and self._advertisement_stale(node, obs.gpus):
            # e.g. a previous agent process changed the GPUs and died before restarting the plugin
            await self._event(
                "DevicePluginStale", "node allocatable does not show the MIG devices that exist; restarting the plugin"
            )
            await self._restart_device_plugin(result, obs.gpus)

        report: dict[int, tuple[Instance, ...]] = {
            i: status_instances(o.instances, o.in_use) for i, o in obs.gpus.items()
        }
        await self._report(result, report, obs.unreadable, spec.plan_id)
        result.settled = (
            not result.ops
            and result.applied is None
            and not result.patch
            and result.device_plugin_restarted is None
            and self.events_told == told
            and not self._settling()
        )
        return result

    async def _report(
        self,
        result: ReconcileResult,
        report: Mapping[int, tuple[Instance, ...]],
        unreadable: Mapping[int, str],
        plan_id: str | None,
    ) -> None:
        result.status = status_annotations(report, plan_id, unreadable)
        if not self.config.dry_run:
            result.patch = await self.reporter.report(report, plan_id, unreadable=unreadable)

    async def _note_observation(self, result: ReconcileResult, obs: Observation) -> None:
        """Events for what the observation could not tell (each once per change)."""
        if self._busy.unavailable is not None:
            note = f"NVML busy-process check unavailable ({self._busy.unavailable}); only kubelet PodResources "
            note += "guards destroys (grant NVIDIA_MIG_MONITOR_DEVICES=all, see docs/install.md)"
            await self._event("BusyProcessCheckUnavailable", note, once_key="busy-unavailable")
        for i, error in sorted(obs.unreadable.items()):
            note = f"cannot read GPU {i} through NVML ({error}); reported as unreadable, left alone"
            result.notes.append(note)
            await self._event("GpuUnreadable", note, once_key=f"unreadable-{i}-{error}")
        if not obs.podresources_ok:
            await self._event("PodResourcesUnavailable", "cannot read kubelet PodResources; destroying nothing")
            result.notes.append("PodResources unavailable: every existing instance counts as in use")
        if obs.unmatched:
            shown = ", ".join(obs.unmatched[:5]) + (", ..." if len(obs.unmatched) > 5 else "")
            if obs.unreadable:
                cause = f"they may be on GPU(s) {sorted(obs.unreadable)}, which NVML cannot read"
            elif obs.unmatched_advertised:
                cause = (
                    "the NVIDIA device plugin names MIG devices otherwise, most likely "
                    "--device-id-strategy=index (nos needs the default, uuid)"
                )
            else:
                cause = (
                    "the NVIDIA device plugin probably runs with --device-id-strategy=index (nos needs the "
                    "default, uuid), or a MIG device was destroyed behind nos' back"
                )
            note = (
                f"kubelet reports allocated MIG device ids that match no MIG device of this node ({shown}): "
                f"{cause}; every MIG instance of this node counts as in use, nothing is destroyed"
            )
            result.notes.append(note)
            await self._event("UnknownAllocatedDevices", note, once_key=f"unmatched-{obs.unmatched}")

    async def _restart_device_plugin(self, result: ReconcileResult, observed: Mapping[int, Observed]) -> None:
        self._last_restart = self._clock()
        result.device_plugin_restarted = await self.restarter.restart()
        if result.device_plugin_restarted:
            result.allocatable_ready = await self.restarter.wait_allocatable(_expected(observed))

    def _advertisement_stale(self, node: dict[str, Any], observed: Mapping[int, Observed]) -> bool:
        """The node advertises other MIG devices than exist, and no restart of ours may still be settling."""
        if self.config.dry_run or not self.config.restart_device_plugin:
            return False
        if self._settling():
            return False
        return not advertises(mig_allocatable(node), _expected(observed))

    def _settling(self) -> bool:
        """A device plugin restart of ours may still be settling (the advertisement check waits)."""
        settling = self.config.device_plugin.timeout_seconds
        return self._last_restart is not None and self._clock() - self._last_restart < settling

    async def _note_skipped(self, skipped: list[Skipped]) -> None:
        """One Event per change of what cannot be applied (not one per reconcile)."""
        current = tuple(str(s) for s in skipped)
        if current and current != self._last_skipped:
            await self._event("SpecPartlyUnreachable", "; ".join(current)[:1000])
        self._last_skipped = current

    def close(self) -> None:
        self._executor.shutdown(wait=False)
        if isinstance(self.nvml, DeadlineNvml):
            self.nvml.close()
