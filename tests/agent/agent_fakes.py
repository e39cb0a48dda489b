"""Test doubles for the agent: an NVML with MIG physics and crash injection, and an in-memory Kube."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from nos.gpu.port import (
    GpuInfo,
    GpuInstanceInfo,
    NvmlInsufficientResources,
    NvmlInUse,
    NvmlInvalidArgument,
    NvmlNotFound,
    ProfileInfo,
)
from nos.kube.port import Event, NotFound, Obj
from nos.mig.catalog import GpuModel, default_catalog
from nos.mig.layout import Instance, layout_errors

PRODUCTS = {
    "A100-80GB": "NVIDIA A100-SXM4-80GB",
    "A30-24GB": "NVIDIA A30",
    "H100-80GB": "NVIDIA H100 80GB HBM3",
}


class Crash(BaseException):
    """The process died here (not an Exception: nothing may catch it)."""


class FakeNvml:
    """MIG physics from the catalog: placements, overlaps, counts, compute slices, busy instances,
    sparse instance ids and fresh device UUIDs per creation. ``crash_at`` = index of the mutating call
    (0-based, counted over creates/destroys) that raises ``Crash`` instead of running."""

    def __init__(self, model: str = "A100-80GB", gpus: int = 1, mig_enabled: bool = True) -> None:
        self.model: GpuModel = default_catalog().model(model)
        self.infos = [
            GpuInfo(
                i,
                f"GPU-{i}",
                PRODUCTS.get(model, model),
                self.model.memory_gb * 1024,
                mig_enabled,
                mig_enabled,
            )
            for i in range(gpus)
        ]
        self.instances: dict[int, dict[int, GpuInstanceInfo]] = {i: {} for i in range(gpus)}
        self.busy: dict[int, set[int]] = {i: set() for i in range(gpus)}
        self.mutations = 0
        self.crash_at: int | None = None
        self.fail_creates: set[tuple[int, str, int]] = set()
        self.log: list[str] = []
        self._uuid = 0

    # ------------------------------------------------------------------ setup helpers
    def add(self, gpu: int, profile: str, start: int, with_ci: bool = True) -> GpuInstanceInfo:
        gi = self._create_gi(gpu, profile, start)
        return self._create_ci(gpu, gi.gi_id) if with_ci else gi

    def layout(self, gpu: int = 0, complete_only: bool = True) -> tuple[Instance, ...]:
        return tuple(
            sorted(
                Instance(g.start, g.profile)
                for g in self.instances[gpu].values()
                if g.compute_instances or not complete_only
            )
        )

    # ------------------------------------------------------------------ file backend (like SimulatedNvml)
    @classmethod
    def load(cls, path: Path) -> FakeNvml:
        raw = yaml.safe_load(path.read_text())
        nvml = cls(raw["model"], len(raw["gpus"]))
        for i, items in enumerate(raw["gpus"]):
            for item in items:
                profile, start = item.split("@")
                nvml.add(i, profile, int(start))
        return nvml

    def save(self, path: Path) -> None:
        gpus = [[f"{i.profile}@{i.start}" for i in self.layout(g)] for g in sorted(self.instances)]
        path.write_text(yaml.safe_dump({"model": self.model.name, "gpus": gpus}))

    # ------------------------------------------------------------------ Nvml port
    def gpus(self) -> list[GpuInfo]:
        return list(self.infos)

    def profiles(self, gpu: int) -> list[ProfileInfo]:
        out = []
        for p in self.model.profiles.values():
            placements = tuple((s, p.slots) for s in p.starts)
            mem = p.memory_gb * 1024
            out.append(
                ProfileInfo(p.name, p.nvml_profile, 100 + p.nvml_profile, p.compute, mem, p.max_count, placements)
            )
        return out

    def gpu_instances(self, gpu: int) -> list[GpuInstanceInfo]:
        return sorted(self.instances[gpu].values(), key=lambda g: g.gi_id)

    def busy_gpu_instances(self, gpu: int) -> set[int]:
        return set(self.busy[gpu])

    def _mutate(self, what: str) -> None:
        if self.crash_at is not None and self.mutations == self.crash_at:
            self.crash_at = None
            raise Crash(what)
        self.mutations += 1
        self.log.append(what)

    def create_gpu_instance(self, gpu: int, profile: str, start: int) -> GpuInstanceInfo:
        self._mutate(f"create_gi {gpu} {profile}@{start}")
        if (gpu, profile, start) in self.fail_creates:
            raise NvmlInsufficientResources(f"injected failure {profile}@{start}")
        return self._create_gi(gpu, profile, start)

    def _create_gi(self, gpu: int, profile: str, start: int) -> GpuInstanceInfo:
        p = self.model.profiles.get(profile)
        if p is None or start not in p.starts:
            raise NvmlInvalidArgument(f"bad placement {profile}@{start}")
        current = [Instance(g.start, g.profile) for g in self.instances[gpu].values()]
        if layout_errors(self.model, [*current, Instance(start, profile)]):
            raise NvmlInsufficientResources(f"{profile}@{start} does not fit")
        gi_id = max(self.instances[gpu], default=6) + 2  # sparse, like real drivers
        gi = GpuInstanceInfo(gpu, gi_id, profile, start, p.slots, (), ())
        self.instances[gpu][gi_id] = gi
        return gi

    def create_compute_instance(self, gpu: int, gi_id: int) -> GpuInstanceInfo:
        self._mutate(f"create_ci {gpu} {gi_id}")
        return self._create_ci(gpu, gi_id)

    def _create_ci(self, gpu: int, gi_id: int) -> GpuInstanceInfo:
        gi = self.instances[gpu].get(gi_id)
        if gi is None:
            raise NvmlNotFound(f"no GPU instance {gi_id}")
        if gi.compute_instances:
            raise NvmlInsufficientResources("compute instance exists")
        self._uuid += 1
        done = GpuInstanceInfo(gpu, gi_id, gi.profile, gi.start, gi.size, (0,), (f"MIG-{gpu}-{gi_id}-{self._uuid}",))
        self.instances[gpu][gi_id] = done
        return done

    def destroy_gpu_instance(self, gpu: int, gi_id: int) -> None:
        self._mutate(f"destroy {gpu} {gi_id}")
        if gi_id not in self.instances[gpu]:
            raise NvmlNotFound(f"no GPU instance {gi_id}")
        if gi_id in self.busy[gpu]:
            raise NvmlInUse(f"GPU instance {gi_id} is busy")
        del self.instances[gpu][gi_id]


class FakeKube:
    """In-memory Kube port: nodes, pods, events; ``on_delete`` lets a test play the DaemonSet."""

    def __init__(self, nodes: list[Obj] | None = None) -> None:
        self.nodes = {n["metadata"]["name"]: copy.deepcopy(n) for n in nodes or []}
        self.pods: list[Obj] = []
        self.events: list[Event] = []
        self.patches: list[dict[str, str | None]] = []
        self.deleted: list[str] = []
        self.list_calls: list[tuple[str | None, str | None, str | None]] = []
        self.on_delete: Any = None

    async def get_node(self, name: str) -> Obj:
        if name not in self.nodes:
            raise NotFound(name)
        return copy.deepcopy(self.nodes[name])

    async def list_nodes(self, label_selector: str | None = None) -> list[Obj]:
        return [copy.deepcopy(n) for n in self.nodes.values()]

    async def patch_node_annotations(
        self, name: str, patch: Mapping[str, str | None], resource_version: str | None = None
    ) -> Obj:
        ann = self.nodes[name]["metadata"].setdefault("annotations", {})
        for k, v in patch.items():
            if v is None:
                ann.pop(k, None)
            else:
                ann[k] = v
        self.patches.append(dict(patch))
        return copy.deepcopy(self.nodes[name])

    async def list_pods(
        self,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[Obj]:
        self.list_calls.append((namespace, label_selector, field_selector))
        out = []
        for p in self.pods:
            if namespace and p["metadata"].get("namespace") != namespace:
                continue
            if label_selector:
                k, v = label_selector.split("=", 1)
                if p["metadata"].get("labels", {}).get(k) != v:
                    continue
            if field_selector:
                k, v = field_selector.split("=", 1)
                assert k == "spec.nodeName"
                if p.get("spec", {}).get("nodeName") != v:
                    continue
            out.append(copy.deepcopy(p))
        return out

    async def delete_pod(self, namespace: str, name: str) -> None:
        before = len(self.pods)
        self.pods = [p for p in self.pods if (p["metadata"]["namespace"], p["metadata"]["name"]) != (namespace, name)]
        if len(self.pods) == before:
            raise NotFound(name)
        self.deleted.append(name)
        if self.on_delete is not None:
            self.on_delete(namespace, name)

    async def create_event(self, event: Event) -> None:
        self.events.append(event)


def node(name: str = "n1", annotations: dict[str, str] | None = None, labelled: bool = True) -> Obj:
    labels = {"nos.nebuly.ai/gpu-partitioning": "mig"} if labelled else {}
    return {
        "metadata": {
            "name": name,
            "uid": "u-" + name,
            "labels": labels,
            "annotations": dict(annotations or {}),
        }
    }


def plugin_pod(name: str, node_name: str = "n1", phase: str = "Running", uid: str | None = None) -> Obj:
    return {
        "metadata": {
            "name": name,
            "namespace": "gpu-operator",
            "uid": uid or "uid-" + name,
            "labels": {"app": "nvidia-device-plugin-daemonset"},
        },
        "spec": {"nodeName": node_name},
        "status": {"phase": phase},
    }
