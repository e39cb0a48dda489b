"""Heterogeneous synthetic clusters: the mixed clusters people really run, in several families.

Each family varies other things, so the planner is not tuned to one generator:

* ``mixed``: nodes of 1, 2, 4 or 8 GPUs of four models (A100-80GB, H100-80GB, A100-40GB, A30),
  30% tainted and half the pods tolerating it, 20% of pods with a nodeSelector, cpu and memory
  partly used, 10% of pods with two or three MIG devices;
* ``pools``: node pools (label ``pool``) and zones, 40% of nodes tainted per pool, 30% of pods
  with required node affinity (``In``/``NotIn`` on pool and zone) and 30% with a nodeSelector;
* ``cpu-bound``: nodes nearly full of bound pods (80-97% of cpu and memory used), pods asking
  much cpu, so cpu, not MIG capacity, decides which node a pod can use;
* ``dense``: small nodes (1-2 GPUs), 10-20 candidates per node, four priority levels;
* ``multi``: 40% of pods with two or three devices (same or different profiles), 1-2 candidates
  per node, larger profiles;
* ``fragmented``: few instances in use and many free ones already there (partial layouts), so
  claiming, keeping or destroying free instances matters.

Every pod asks for devices of one model's profiles (a model chosen in proportion to its GPUs in
the cluster), so some node could host it; whether one can is the planner's problem. The same
spec gives the same objects.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from benchmarks.generate import KIND_WEIGHTS, PRODUCTS, full_layouts, node_object, pending_pod_object
from nos.mig.catalog import GpuModel, default_catalog
from nos.mig.layout import Instance

TAINT_KEY = "dedicated"
POOLS = ("train", "infer", "batch")
ZONES = ("zone-a", "zone-b", "zone-c")


@dataclass(frozen=True)
class Family:
    """How one family's clusters are drawn."""

    name: str
    models: tuple[str, ...] = ("A100-80GB", "H100-80GB", "A100-40GB", "A30-24GB")
    gpu_counts: tuple[int, ...] = (1, 2, 4, 8)
    taint_share: float = 0.3
    tolerate_share: float = 0.5
    selector_share: float = 0.2
    affinity_share: float = 0.05
    multi_share: float = 0.1
    busy: tuple[float, float] = (0.3, 0.8)
    """Share of node cpu and memory used by bound pods (uniform in this range)."""
    cpu_menu: tuple[str, ...] = ("500m", "1", "2", "4", "8")
    memory_menu: tuple[str, ...] = ("2Gi", "4Gi", "8Gi", "16Gi", "32Gi")
    priorities: tuple[int, ...] = (0, 0, 0, 0, 100, 1000)
    used_share: float = 0.5
    """Probability that an existing instance is in use."""
    partial_share: float = 0.2
    """Probability that a GPU's layout has instances dropped (spare slots)."""
    large_bias: float = 1.0
    """Weight multiplier for 3g and larger profiles."""


FAMILIES = {
    f.name: f
    for f in (
        Family("mixed"),
        Family("pools", taint_share=0.4, tolerate_share=0.4, selector_share=0.3, affinity_share=0.3),
        Family(
            "cpu-bound",
            busy=(0.8, 0.97),
            cpu_menu=("2", "4", "8", "16"),
            memory_menu=("8Gi", "16Gi", "32Gi", "64Gi"),
            multi_share=0.1,
        ),
        Family("dense", gpu_counts=(1, 2), priorities=(0, 0, 0, 10, 100, 1000), multi_share=0.15),
        Family("multi", gpu_counts=(4, 8), multi_share=0.4, large_bias=2.0),
        Family("fragmented", used_share=0.3, partial_share=0.8),
    )
}


@dataclass(frozen=True)
class HeteroSpec:
    """One heterogeneous instance: ``nodes`` nodes of ``family``, ``ratio`` candidates per node."""

    name: str
    family: str
    nodes: int
    ratio: float
    seed: int = 0
    gpu_counts: tuple[int, ...] | None = None
    """Overrides the family's GPU counts per node (the 1,000 x 8 GPU timing instance)."""

    @property
    def candidates(self) -> int:
        return max(1, round(self.nodes * self.ratio))


def _layout(rng: random.Random, model: GpuModel, family: Family) -> tuple[Instance, ...]:
    if rng.random() < 0.1:
        return ()  # a GPU without instances yet (gets its initial layout)
    layout = list(rng.choice(full_layouts(model)))
    if rng.random() < family.partial_share:
        for _ in range(rng.randint(1, max(1, len(layout) - 1))):
            if len(layout) > 1:
                layout.pop(rng.randrange(len(layout)))
    return tuple(Instance(i.start, i.profile, rng.random() < family.used_share) for i in layout)


def _node(rng: random.Random, name: str, family: Family, model_name: str, gpus: int) -> dict[str, Any]:
    model = default_catalog().model(model_name)
    layouts = {i: _layout(rng, model, family) for i in range(gpus)}
    cpu = rng.choice((16, 32, 64, 96, 128)) * max(1, gpus // 2)
    memory = rng.choice((128, 256, 512, 1024)) * max(1, gpus // 2)
    busy = rng.uniform(*family.busy)
    zone = rng.choice(ZONES)
    obj = node_object(name, model_name, layouts, int(cpu * (1 - busy) * 1000), int(memory * (1 - busy) * 1024), zone)
    pool = rng.choice(POOLS)
    obj["metadata"]["labels"]["pool"] = pool
    if rng.random() < family.taint_share:
        obj["spec"] = {"taints": [{"key": TAINT_KEY, "value": pool, "effect": "NoSchedule"}]}
    return obj


def _profile(rng: random.Random, model: GpuModel, family: Family) -> str:
    choices = [p for p in model.profiles.values() if not p.media]
    weights = [KIND_WEIGHTS.get(p.kind, 5) * (family.large_bias if p.compute >= 3 else 1) for p in choices]
    return rng.choices(choices, weights)[0].name


def _placement(rng: random.Random, family: Family, model_name: str) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if rng.random() < family.tolerate_share:
        if rng.random() < 0.5:
            spec["tolerations"] = [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]
        else:
            value = rng.choice(POOLS)
            spec["tolerations"] = [{"key": TAINT_KEY, "operator": "Equal", "value": value, "effect": "NoSchedule"}]
    if rng.random() < family.selector_share:
        spec["nodeSelector"] = rng.choice(
            (
                {"topology.kubernetes.io/zone": rng.choice(ZONES)},
                {"pool": rng.choice(POOLS)},
                {"nvidia.com/gpu.product": PRODUCTS[model_name]},
            )
        )
    if rng.random() < family.affinity_share:
        terms = [
            [{"key": "pool", "operator": "In", "values": sorted(rng.sample(POOLS, 2))}],
            [{"key": "topology.kubernetes.io/zone", "operator": "NotIn", "values": [rng.choice(ZONES)]}],
            [
                {"key": "pool", "operator": "In", "values": [rng.choice(POOLS)]},
                {"key": "topology.kubernetes.io/zone", "operator": "In", "values": sorted(rng.sample(ZONES, 2))},
            ],
        ]
        chosen = rng.sample(terms, rng.randint(1, 2))
        spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": t} for t in chosen]
                }
            }
        }
    return spec


def hetero_pod(
    name: str,
    devices: list[str],
    cpu: str,
    memory: str,
    priority: int,
    created: str,
    placement: dict[str, Any],
    init_device: str | None = None,
) -> dict[str, Any]:
    """A candidate pod with one container per MIG device (cpu and memory on the first), optionally
    an init container asking one of the same devices (counted as max, not sum)."""
    containers = []
    for i, profile in enumerate(devices):
        requests = {"cpu": cpu, "memory": memory} if i == 0 else {"cpu": "100m", "memory": "256Mi"}
        containers.append(
            {
                "name": f"c{i}",
                "image": "busybox",
                "resources": {"requests": requests, "limits": {f"nvidia.com/mig-{profile}": 1}},
            }
        )
    spec: dict[str, Any] = {"priority": priority, "containers": containers, **placement}
    if init_device is not None:
        spec["initContainers"] = [
            {"name": "init", "image": "busybox", "resources": {"limits": {f"nvidia.com/mig-{init_device}": 1}}}
        ]
    return pending_pod_object(name, spec, created)


def generate_hetero(spec: HeteroSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Nodes and candidate pods of ``spec``, deterministic in it."""
    family = FAMILIES[spec.family]
    rng = random.Random(f"{spec.name}:{spec.family}:{spec.seed}")
    catalog = default_catalog()
    counts = spec.gpu_counts or family.gpu_counts
    width = len(str(spec.nodes))
    nodes = []
    gpus_of: dict[str, int] = {}
    for i in range(spec.nodes):
        model_name = rng.choice(family.models)
        gpus = rng.choice(counts)
        nodes.append(_node(rng, f"node-{i:0{width}d}", family, model_name, gpus))
        gpus_of[model_name] = gpus_of.get(model_name, 0) + gpus
    present = sorted(gpus_of)
    pods = []
    for j in range(spec.candidates):
        model_name = rng.choices(present, [gpus_of[m] for m in present])[0]
        model = catalog.model(model_name)
        devices = [_profile(rng, model, family)]
        if rng.random() < family.multi_share:
            n = rng.choice((2, 2, 3))
            same = rng.random() < 0.5
            devices += [devices[0] if same else _profile(rng, model, family) for _ in range(n - 1)]
        init = devices[0] if rng.random() < 0.05 else None
        created = f"2024-01-01T{j // 3600 % 24:02d}:{j // 60 % 60:02d}:{j % 60:02d}Z"
        pods.append(
            hetero_pod(
                f"pod-{j:05d}",
                devices,
                rng.choice(family.cpu_menu),
                rng.choice(family.memory_menu),
                rng.choice(family.priorities),
                created,
                _placement(rng, family, model_name),
                init,
            )
        )
    return nodes, pods


SIZES = ((6, 3), (12, 5), (25, 4), (40, 3))
"""(nodes, candidates per node) per seed; families override the ratio below."""
RATIOS = {"dense": (10, 20, 12, 15), "multi": (1, 2, 1.5, 2), "pools": (2, 4, 3, 5)}


def hetero_specs(quick: bool = False, seeds: Sequence[int] | None = None) -> list[HeteroSpec]:
    """Every family with four seeds of growing size (quick: two small seeds per family). Other
    ``seeds`` draw other clusters of every family (sizes cycling through the same four): the
    generalization check of ``benchmarks/run.py --seeds``."""
    specs = []
    for family in FAMILIES:
        for seed in seeds if seeds is not None else range(2 if quick else len(SIZES)):
            nodes, ratio = SIZES[seed % len(SIZES)]
            r = RATIOS.get(family, ())
            specs.append(HeteroSpec(f"{family}-{seed}", family, nodes, r[seed % len(r)] if r else ratio, seed))
    return specs


LARGE = HeteroSpec("hetero-1000", "mixed", 1000, 5, gpu_counts=(8,))
"""The timing instance of the issue: 1,000 nodes x 8 GPUs of mixed models, 5,000 candidates."""
HUGE = replace(LARGE, name="hetero-1000-27k", ratio=27)
"""1,000 x 8 GPUs with 27,000 candidates (the 50 MB snapshot)."""
