"""The MIG agent: make this node's GPUs match the spec annotations, then report what exists.

One ``reconcile_once`` reads the Node, plans every GPU (``reconcile``), applies the ops through NVML
(``apply``), restarts the device plugin when something changed (``device_plugin``) and patches the
status annotations (``report``). Safety rules, in the order they are checked:

* a node without the opt-in label is never touched; GPUs of different models on one node stop
  everything (Warning Event) because the partitioner plans per node model;
* GPUs of a model the catalog does not know, or without MIG mode, are skipped (one Warning Event per
  GPU and process);
* malformed spec annotations of a GPU leave that GPU alone (Event); a problem not tied to one GPU
  leaves all GPUs alone;
* no spec at all (a node the partitioner has not planned yet) changes nothing;
* when kubelet's PodResources cannot be read, every existing instance counts as in use.

NVML and PodResources calls are blocking; they run on one worker thread, which also serialises them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from nos.agent.apply import Applier, ApplyResult
from nos.agent.device_plugin import (
    DevicePluginConfig,
    DevicePluginRestarter,
    Sleep,
    advertises,
    mig_allocatable,
)
from nos.agent.podresources import PodResourcesError, PodResourcesSource, allocated_device_ids
from nos.agent.reconcile import Desired, GpuPlan, Op, Skipped, in_use_gi_ids, plan_gpu
from nos.agent.report import Reporter, status_annotations, status_instances
from nos.contract.annotations import GpuAnnotations, decode_spec, is_mig_partitioned, is_spec_key
from nos.gpu.port import GpuInfo, Nvml
from nos.kube.port import Event, Kube, ObjectRef
from nos.mig.catalog import Catalog, GpuModel, default_catalog, resource_for
from nos.mig.layout import Instance

log = logging.getLogger(__name__)
T = TypeVar("T")


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    report_interval_s: float = Field(default=60.0, gt=0)
    """How often ``run`` reconciles and re-reports (a report is only patched when it changed)."""
    dry_run: bool = False
    """Plan only: no NVML mutation, no device plugin restart, no status patch."""
    restart_device_plugin: bool = True
    device_plugin: DevicePluginConfig = Field(default_factory=DevicePluginConfig)


@dataclass
class ReconcileResult:
    plan_id: str | None = None
    plans: list[GpuPlan] = field(default_factory=list)
    applied: ApplyResult | None = None
    status: dict[str, str] = field(default_factory=dict)
    """The status annotations for the state after this reconcile."""
    patch: dict[str, str | None] = field(default_factory=dict)
    device_plugin_restarted: bool | None = None
    allocatable_ready: bool | None = None
    """After a restart: the node's allocatable showed the MIG devices in time (None: not checked)."""
    notes: list[str] = field(default_factory=list)
    """Why something was not done (also sent as Events)."""

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


Observed = tuple[Any, set[int], set[str]]
"""Per GPU: the GPU instances NVML reports, the in-use GI ids, the profiles the driver offers."""


def _expected(observed: Mapping[int, Observed]) -> dict[str, int]:
    return expected_mig_resources(status_instances(actual, set()) for actual, _, _ in observed.values())


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
    ) -> None:
        """``podresources`` None: no kubelet (offline use); only NVML's busy instances count as in use."""
        self.node_name, self.nvml, self.kube, self.podresources = node_name, nvml, kube, podresources
        self.config = config or AgentConfig()
        self.catalog = catalog or default_catalog()
        self.reporter = Reporter(kube, node_name, self.config.report_interval_s, clock)
        self.restarter = DevicePluginRestarter(kube, node_name, self.config.device_plugin, clock, sleep)
        self._applier = Applier(nvml, self._in_use_now)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nvml")
        self._lock = asyncio.Lock()
        self._warned: set[str] = set()
        self._last_skipped: tuple[str, ...] = ()
        self._clock = clock
        self._last_restart: float | None = None

    async def _blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _event(self, reason: str, note: str, warning: bool = True, once_key: str | None = None) -> None:
        if once_key is not None:
            if once_key in self._warned:
                return
            self._warned.add(once_key)
        log.log(logging.WARNING if warning else logging.INFO, "%s: %s", reason, note)
        event = Event(ObjectRef("Node", self.node_name), reason, note, "Warning" if warning else "Normal")
        try:
            await self.kube.create_event(event)
        except Exception as e:  # an Event is best effort; never let it stop a reconcile
            log.warning("cannot create event %s: %s", reason, e)

    def _used_devices(self) -> set[str] | None:
        """Allocated device ids; None when kubelet cannot tell (then everything counts as in use)."""
        if self.podresources is None:
            return set()
        try:
            return allocated_device_ids(self.podresources)
        except PodResourcesError as e:
            log.warning("%s", e)
            return None

    def _in_use_now(self, gpu: int, gi_id: int) -> bool:
        """Fresh in-use check right before a destroy (runs on the NVML thread)."""
        used = self._used_devices()
        if used is None:
            return True
        actual = self.nvml.gpu_instances(gpu)
        return gi_id in in_use_gi_ids(actual, used, self.nvml.busy_gpu_instances(gpu))

    def _observe(self, gpus: list[int]) -> tuple[dict[int, Observed], bool]:
        """What each GPU holds (see ``Observed``); flag: PodResources answered."""
        used = self._used_devices()
        out: dict[int, Observed] = {}
        for i in gpus:
            actual = self.nvml.gpu_instances(i)
            in_use = (
                {g.gi_id for g in actual}
                if used is None
                else in_use_gi_ids(actual, used, self.nvml.busy_gpu_instances(i))
            )
            out[i] = (actual, in_use, {p.name for p in self.nvml.profiles(i)})
        return out, used is not None

    async def reconcile_once(self) -> ReconcileResult:
        async with self._lock:
            return await self._reconcile()

    async def _reconcile(self) -> ReconcileResult:
        result = ReconcileResult()
        node = await self.kube.get_node(self.node_name)
        meta = node.get("metadata", {})
        labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
        if not is_mig_partitioned(labels):
            result.notes.append("node is not labelled for MIG partitioning; nothing done")
            log.info(result.notes[-1])
            return result
        spec = decode_spec(annotations)
        result.plan_id = spec.plan_id
        has_spec = any(is_spec_key(k) for k in annotations)

        gpus = await self._blocking(self.nvml.gpus)
        if len({g.name for g in gpus}) > 1:
            note = "GPUs of different models on one node: " + ", ".join(sorted({g.name for g in gpus}))
            await self._event("MixedGpuModels", note + "; nothing done", once_key="mixed")
            result.notes.append(note)
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
        for p in spec.problems:
            await self._event("MalformedSpec", f"{p}; GPU left alone" if p.gpu is not None else f"{p}; node left alone")
            result.notes.append(str(p))
        if not has_spec:
            result.notes.append("no spec annotations yet; nothing to apply")

        observed, pr_ok = await self._blocking(self._observe, sorted(managed))
        if not pr_ok:
            await self._event("PodResourcesUnavailable", "cannot read kubelet PodResources; destroying nothing")
            result.notes.append("PodResources unavailable: every existing instance counts as in use")
        for i, model in sorted(managed.items()):
            actual, in_use, available = observed[i]
            if not has_spec or bad_gpus is None or i in bad_gpus:
                continue
            desired = Desired.from_annotations(spec.gpus.get(i) or GpuAnnotations())
            result.plans.append(plan_gpu(model, i, desired, actual, in_use, available or None))
        await self._note_skipped(result.skipped)

        if result.ops and not self.config.dry_run:
            result.applied = await self._blocking(self._applier.apply, result.ops)
            for failure in result.applied.failures:
                await self._event("MigOperationFailed", f"{failure.op}: {failure.error}")
            if result.applied.changed:
                observed, _ = await self._blocking(self._observe, sorted(managed))
                if self.config.restart_device_plugin:
                    await self._restart_device_plugin(result, observed)
        elif self._advertisement_stale(node, observed):
            # e.g. a previous agent process changed the GPUs and died before restarting the plugin
            await self._event(
                "DevicePluginStale", "node allocatable does not show the MIG devices that exist; restarting the plugin"
            )
            await self._restart_device_plugin(result, observed)

        report: dict[int, tuple[Instance, ...]] = {
            i: status_instances(actual, in_use) for i, (actual, in_use, _) in observed.items()
        }
        result.status = status_annotations(report, spec.plan_id)
        if not self.config.dry_run:
            result.patch = await self.reporter.report(report, spec.plan_id)
        return result

    async def _restart_device_plugin(self, result: ReconcileResult, observed: Mapping[int, Observed]) -> None:
        self._last_restart = self._clock()
        result.device_plugin_restarted = await self.restarter.restart()
        if result.device_plugin_restarted:
            result.allocatable_ready = await self.restarter.wait_allocatable(_expected(observed))

    def _advertisement_stale(self, node: dict[str, Any], observed: Mapping[int, Observed]) -> bool:
        """The node advertises other MIG devices than exist, and no restart of ours may still be settling."""
        if self.config.dry_run or not self.config.restart_device_plugin:
            return False
        settling = self.config.device_plugin.timeout_s
        if self._last_restart is not None and self._clock() - self._last_restart < settling:
            return False
        return not advertises(mig_allocatable(node), _expected(observed))

    async def _note_skipped(self, skipped: list[Skipped]) -> None:
        """One Event per change of what cannot be applied (not one per reconcile)."""
        current = tuple(str(s) for s in skipped)
        if current and current != self._last_skipped:
            await self._event("SpecPartlyUnreachable", "; ".join(current)[:1000])
        self._last_skipped = current

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Reconcile every ``report_interval_s`` until ``stop`` is set; errors are logged, not fatal."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                await self.reconcile_once()
            except Exception:
                log.exception("reconcile of node %s failed", self.node_name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.config.report_interval_s)

    def close(self) -> None:
        self._executor.shutdown(wait=False)
