"""Planning snapshots from the Alibaba GPU-sharing trace ("openb", 2023).

The trace's GPUs are not MIG-capable; each sampled GPU node becomes a node of 8 MIG GPUs of the
target model, with the node's cpu and memory from ``openb_node_list_gpu_node.csv`` and a random
in-use state (as in ``generate``). Candidates are single-GPU tasks (``num_gpu == 1``) of
``openb_pod_list_gpushare40.csv``, a window of consecutive tasks in creation order starting at a
random offset, each mapped to the smallest MIG profile covering it (``profile_for_task``):

* compute: ``gpu_milli / 1000 * compute_slices`` slices, rounded up;
* GPU memory: the trace has no GPU memory column and shares GPUs by fraction, so the task is taken
  to need the same fraction of the GPU's memory, ``gpu_milli / 1000 * memory_gb``;
* the profile: among the model's profiles without ``+me``, the smallest (fewest compute slices,
  then least memory) with at least that many slices and at least that much memory.

Pods request ``cpu_milli`` and ``memory_mib`` as cpu/memory; ``qos`` LS becomes priority 100,
the rest 0.
"""

from __future__ import annotations

import csv
import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from benchmarks.generate import node_object, pending_pod, random_layout
from nos.mig.catalog import GpuModel, default_catalog

REPO_ROOT = Path(__file__).resolve().parent.parent
TRACE_DIR = REPO_ROOT.parent / "shared" / "traces" / "alibaba-openb-2023"
DEFAULT_PODS = TRACE_DIR / "openb_pod_list_gpushare40.csv"
DEFAULT_NODES = TRACE_DIR / "openb_node_list_gpu_node.csv"
_EPOCH = datetime(2023, 1, 1)


@dataclass(frozen=True)
class Task:
    name: str
    cpu_milli: int
    memory_mib: int
    gpu_milli: int
    qos: str
    creation_time: int


@dataclass(frozen=True)
class TraceSpec:
    name: str
    nodes: int
    candidates: int
    model: str = "A100-80GB"
    gpus: int = 8
    used_share: float = 0.3
    seed: int = 0


def profile_for_task(model: GpuModel, gpu_milli: int) -> str | None:
    """The smallest profile covering ``gpu_milli`` thousandths of a GPU in compute and memory."""
    share = max(0, min(gpu_milli, 1000)) / 1000
    slices = max(1, math.ceil(share * model.compute_slices - 1e-9))
    memory = share * model.memory_gb
    fitting = [
        p for p in model.profiles.values() if not p.media and p.compute >= slices and p.memory_gb >= memory - 1e-9
    ]
    return min(fitting, key=lambda p: (p.compute, p.memory_gb)).name if fitting else None


@cache
def load_tasks(path: Path = DEFAULT_PODS) -> tuple[Task, ...]:
    """Single-GPU tasks in creation order."""
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["num_gpu"] == "1" and int(r["gpu_milli"] or 0) > 0]
    tasks = [
        Task(
            r["name"], int(r["cpu_milli"]), int(r["memory_mib"]), int(r["gpu_milli"]), r["qos"], int(r["creation_time"])
        )
        for r in rows
    ]
    return tuple(sorted(tasks, key=lambda t: (t.creation_time, t.name)))


@cache
def load_nodes(path: Path = DEFAULT_NODES) -> tuple[tuple[str, int, int], ...]:
    """(name, cpu_milli, memory_mib) of every GPU node."""
    with path.open(newline="") as f:
        return tuple((r["sn"], int(r["cpu_milli"]), int(r["memory_mib"])) for r in csv.DictReader(f))


def generate_trace(
    spec: TraceSpec, pods_csv: Path = DEFAULT_PODS, nodes_csv: Path = DEFAULT_NODES
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Nodes and candidate pods of one trace snapshot, deterministic in ``spec.seed``."""
    rng = random.Random(f"{spec.name}:{spec.seed}")
    model = default_catalog().model(spec.model)
    node_rows = rng.sample(load_nodes(nodes_csv), spec.nodes)
    nodes = []
    for name, cpu_milli, memory_mib in sorted(node_rows):
        layouts = {i: random_layout(rng, model, spec.used_share) for i in range(spec.gpus)}
        busy = rng.uniform(0.2, 0.6)
        free_cpu, free_memory = int(cpu_milli * (1 - busy)), int(memory_mib * (1 - busy))
        nodes.append(node_object(name, spec.model, layouts, free_cpu, free_memory, "zone-a"))
    tasks = load_tasks(pods_csv)
    start = rng.randrange(max(1, len(tasks) - spec.candidates))
    pods = []
    for task in tasks[start : start + spec.candidates]:
        profile = profile_for_task(model, task.gpu_milli)
        if profile is None:
            continue
        created = (_EPOCH + timedelta(seconds=task.creation_time)).strftime("%Y-%m-%dT%H:%M:%SZ")
        pods.append(
            pending_pod(
                task.name,
                profile,
                f"{task.cpu_milli}m",
                f"{task.memory_mib}Mi",
                100 if task.qos == "LS" else 0,
                created,
            )
        )
    return nodes, pods


def trace_specs(quick: bool = False) -> list[TraceSpec]:
    if quick:
        return [TraceSpec("trace-a100-5", 5, 15)]
    return [
        TraceSpec("trace-a100-10", 10, 30),
        TraceSpec("trace-a100-50", 50, 150),
        TraceSpec("trace-h100-50", 50, 150, model="H100-80GB"),
        TraceSpec("trace-a100-250", 250, 750),
    ]
