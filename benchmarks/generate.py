"""Seeded synthetic clusters as plain Kubernetes Node and Pod dicts.

Nodes carry the labels nos reads (opt-in, product, GPU count, a zone) and status annotations
written with ``encode_status``: each GPU gets a random valid current layout (mostly full, some
with spare slots) with a random share of its instances in use. Bound pods are not generated (it
would multiply the objects to parse); instead allocatable cpu/memory are reduced by a random
amount, as if bound pods requested it. Candidates are Pending, PodScheduled=False/Unschedulable
pods with one container asking ``nvidia.com/mig-<profile>: 1``, cpu/memory from a small menu (so
identical pods aggregate in the exact model) and a few priorities. The same seed gives the same
objects.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from nos.contract.annotations import COUNT_LABEL, PARTITIONING_LABELS, PRODUCT_LABEL, encode_status
from nos.mig.catalog import GpuModel, default_catalog
from nos.mig.layout import Instance, layout_errors
from nos.mig.placement import enumerate_layouts

ZONE_LABEL = "topology.kubernetes.io/zone"
PRODUCTS = {
    "A100-80GB": "NVIDIA-A100-SXM4-80GB",
    "H100-80GB": "NVIDIA-H100-80GB-HBM3",
    "A30-24GB": "NVIDIA-A30",
    "A100-40GB": "NVIDIA-A100-SXM4-40GB",
}
# Profile popularity by size kind: small instances are asked for most.
KIND_WEIGHTS = {"1g": 35, "1g-2m": 10, "2g": 25, "3g": 15, "4g": 8, "7g": 7}
CPU_MENU = ("500m", "1", "2", "4", "8")
MEMORY_MENU = ("2Gi", "4Gi", "8Gi", "16Gi", "32Gi")
PRIORITIES = (0, 0, 0, 0, 100, 1000)


@dataclass(frozen=True)
class Spec:
    """One synthetic instance: ``nodes`` nodes of ``gpus`` GPUs of the ``models`` (cycled)."""

    name: str
    nodes: int
    candidates: int
    models: tuple[str, ...] = ("A100-80GB",)
    gpus: int = 8
    used_share: float = 0.6
    seed: int = 0


@cache
def full_layouts(model: GpuModel) -> tuple[tuple[Instance, ...], ...]:
    """Layouts (no ``+me``) to which no plain instance can be added."""
    plain = [p for p in model.profiles.values() if not p.media]
    out = []
    for layout in enumerate_layouts(model):
        if not layout or any("+" in i.profile for i in layout):
            continue
        if not any(not layout_errors(model, (*layout, Instance(s, p.name))) for p in plain for s in p.starts):
            out.append(tuple(sorted(layout)))
    return tuple(out)


def random_layout(rng: random.Random, model: GpuModel, used_share: float) -> tuple[Instance, ...]:
    """A random full layout, sometimes with one free instance dropped (spare slots), instances in
    use with probability ``used_share``."""
    layout = list(rng.choice(full_layouts(model)))
    if len(layout) > 1 and rng.random() < 0.2:
        layout.pop(rng.randrange(len(layout)))
    return tuple(Instance(i.start, i.profile, rng.random() < used_share) for i in layout)


def node_object(
    name: str, model_name: str, layouts: Mapping[int, Sequence[Instance]], cpu_milli: int, memory_mib: int, zone: str
) -> dict[str, Any]:
    """A MIG-labelled Node with these GPU layouts in its status annotations and this much free cpu/memory."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                PARTITIONING_LABELS[0]: "mig",
                PRODUCT_LABEL: PRODUCTS[model_name],
                COUNT_LABEL: str(len(layouts)),
                ZONE_LABEL: zone,
            },
            "annotations": encode_status(layouts, "0"),
        },
        "status": {"allocatable": {"cpu": f"{cpu_milli}m", "memory": f"{memory_mib}Mi", "pods": "110"}},
    }


def node(rng: random.Random, name: str, model_name: str, gpus: int, used_share: float) -> dict[str, Any]:
    model = default_catalog().model(model_name)
    layouts = {i: random_layout(rng, model, used_share) for i in range(gpus)}
    cpu = rng.choice((64, 96, 128))
    memory = rng.choice((256, 512, 1024))
    busy = rng.uniform(0.3, 0.8)
    zone = rng.choice(("zone-a", "zone-b"))
    return node_object(name, model_name, layouts, int(cpu * (1 - busy) * 1000), int(memory * (1 - busy) * 1024), zone)


def pending_pod(
    name: str,
    profile: str,
    cpu: str,
    memory: str,
    priority: int = 0,
    created: str = "2024-01-01T00:00:00Z",
    node_selector: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A candidate pod as the API returns it: Pending, Unschedulable, one MIG device."""
    spec: dict[str, Any] = {
        "priority": priority,
        "containers": [
            {
                "name": "main",
                "image": "busybox",
                "resources": {
                    "requests": {"cpu": cpu, "memory": memory},
                    "limits": {f"nvidia.com/mig-{profile}": 1},
                },
            }
        ],
    }
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    return pending_pod_object(name, spec, created)


def pending_pod_object(name: str, spec: dict[str, Any], created: str) -> dict[str, Any]:
    """A Pod of namespace ``bench`` as the API returns it after kube-scheduler found no node for it."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "bench", "creationTimestamp": created},
        "spec": spec,
        "status": {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
        },
    }


def random_profile(rng: random.Random, models: Sequence[GpuModel]) -> str:
    model = rng.choice(list(models))
    choices = [p for p in model.profiles.values() if not p.media]
    weights = [KIND_WEIGHTS.get(p.kind, 5) for p in choices]
    return rng.choices(choices, weights)[0].name


def generate(spec: Spec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Nodes and candidate pods of ``spec``, deterministic in ``spec.seed``."""
    rng = random.Random(f"{spec.name}:{spec.seed}")
    catalog = default_catalog()
    models = [catalog.model(m) for m in spec.models]
    width = len(str(spec.nodes))
    nodes = [
        node(rng, f"node-{i:0{width}d}", spec.models[i % len(spec.models)], spec.gpus, spec.used_share)
        for i in range(spec.nodes)
    ]
    pods = []
    for j in range(spec.candidates):
        selector = {ZONE_LABEL: rng.choice(("zone-a", "zone-b"))} if rng.random() < 0.1 else None
        pods.append(
            pending_pod(
                f"pod-{j:05d}",
                random_profile(rng, models),
                rng.choice(CPU_MENU),
                rng.choice(MEMORY_MENU),
                rng.choice(PRIORITIES),
                f"2024-01-01T{j // 3600 % 24:02d}:{j // 60 % 60:02d}:{j % 60:02d}Z",
                selector,
            )
        )
    return nodes, pods


SIZES = (2, 5, 10, 25, 50, 100, 250, 1000)


def synthetic_specs(quick: bool = False) -> list[Spec]:
    """The benchmark's synthetic instances: A100-80GB at every size, H100, A30 and mixes."""
    sizes = (2, 5, 10) if quick else SIZES
    specs = [Spec(f"a100-{n}", n, 5 * n) for n in sizes]
    mixes = (
        ("h100", ("H100-80GB",)),
        ("a30", ("A30-24GB",)),
        ("mix-a100-h100", ("A100-80GB", "H100-80GB")),
        ("mix-all", ("A100-80GB", "H100-80GB", "A30-24GB")),
    )
    for label, models in mixes:
        for n in (5,) if quick else (10, 50):
            specs.append(Spec(f"{label}-{n}", n, 5 * n, models))
    return specs
