"""Replay of the Alibaba GPU-sharing trace ("openb", 2023) as a scenario workload.

Only tasks with ``num_gpu == 1`` are used (a MIG pod uses one device). Mapping of a task to a MIG
profile of the cluster's GPU model: the smallest profile (fewest memory slots, then compute slices,
never a ``+me`` one) that covers both

* the compute fraction: ``ceil(gpu_milli / 1000 * compute_slices)`` slices (at least 1), and
* the GPU memory, taken proportional to the fraction: ``gpu_milli / 1000 * memory_gb`` (the trace has
  no GPU-memory column; its ``memory_mib`` is host memory).

On an 80 GB model: 100 -> 1g.10gb, 140 -> 1g.20gb, 200/250 -> 2g.20gb, 300/400 -> 3g.40gb,
500 -> 4g.40gb, 600 and above -> 7g.80gb (there is no 5g or 6g profile).

Times: arrival = (creation_time - first creation) / ``time_scale``; run time = deletion_time -
scheduled_time as recorded (creation_time for tasks that never ran), not scaled, because the latencies
that matter here (batch windows, device plugin restarts) are fixed. Host requests: ``cpu_milli`` and
``memory_mib`` of the task.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TypeVar

from nos.mig.catalog import GpuModel, Profile
from nos.sim.scenario import PodSpec

SHIPPED_TRACE = "openb_pod_list_gpushare40_single_gpu.csv.gz"
"""Package data (``nos/sim/data``): the 7,002 single-GPU tasks of ``openb_pod_list_gpushare40.csv``,
CC BY 4.0, attribution in ``nos/sim/data/README.md``."""
DEFAULT_SAMPLE = 600
"""Tasks ``nos simulate --trace`` replays unless ``--sample`` says otherwise (about a minute)."""


@contextlib.contextmanager
def shipped_trace() -> Iterator[Path]:
    """The shipped trace as a file path (wherever and however the package is installed)."""
    with resources.as_file(resources.files("nos.sim") / "data" / SHIPPED_TRACE) as path:
        yield path


class TraceError(ValueError):
    pass


@dataclass(frozen=True)
class TraceTask:
    name: str
    creation_s: float
    duration_s: float
    gpu_milli: int
    cpu_milli: int
    memory_mib: int
    qos: str


def profile_for_share(model: GpuModel, gpu_milli: int) -> Profile:
    """The smallest profile of ``model`` covering ``gpu_milli`` thousandths of one GPU (rules above)."""
    fraction = min(max(gpu_milli, 1), 1000) / 1000
    compute = max(1, math.ceil(fraction * model.compute_slices - 1e-9))
    memory = fraction * model.memory_gb
    fitting = [
        p for p in model.profiles.values() if not p.media and p.compute >= compute and p.memory_gb >= memory - 1e-9
    ]
    return min(fitting, key=lambda p: (p.slots, p.compute, p.memory_gb))


_Number = TypeVar("_Number", int, float)
COLUMNS = ("name", "num_gpu", "gpu_milli", "cpu_milli", "memory_mib", "creation_time", "deletion_time")
"""The columns of an openb pod list that a replay reads (``scheduled_time`` and ``qos`` when present)."""


def _read(row: dict[str, str], column: str, kind: type[_Number], where: str) -> _Number:
    """``row[column]`` as a number, or an error naming the line, the column and the value."""
    value = row.get(column)
    if value is None:  # a row shorter than the header
        raise TraceError(f"{where}: no {column}")
    try:
        return kind(value)
    except ValueError:
        raise TraceError(f"{where}: {column} is {value!r}, not {'an integer' if kind is int else 'a number'}") from None


def read_trace(path: Path) -> list[TraceTask]:
    """Single-GPU tasks of an openb pod list, in creation order."""
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
        reader = csv.DictReader(io.StringIO(raw.decode("utf-8"), newline=""))
        rows, header = list(reader), set(reader.fieldnames or ())
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise TraceError(f"cannot read trace {path}: {getattr(e, 'strerror', None) or e}") from e
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise TraceError(f"{path}: not an openb pod list: missing column(s) {', '.join(missing)}")
    tasks = []
    for line, r in enumerate(rows, start=2):  # line 1 is the header
        where = f"{path}, line {line}"
        if _read(r, "num_gpu", int, where) != 1:
            continue
        created = _read(r, "creation_time", float, where)
        started = _read(r, "scheduled_time", float, where) if r.get("scheduled_time") else created
        tasks.append(
            TraceTask(
                name=r["name"],
                creation_s=created,
                duration_s=max(_read(r, "deletion_time", float, where) - started, 1.0),
                gpu_milli=_read(r, "gpu_milli", int, where),
                cpu_milli=_read(r, "cpu_milli", int, where),
                memory_mib=_read(r, "memory_mib", int, where),
                qos=r.get("qos") or "",
            )
        )
    if not tasks:
        raise TraceError(f"{path}: no task with num_gpu == 1")
    return sorted(tasks, key=lambda t: (t.creation_s, t.name))


def trace_mix(tasks: list[TraceTask], model: GpuModel, max_duration_s: float | None = None) -> dict[str, float]:
    """Profile -> the tasks' summed run time (cut like ``trace_pods``'): the trace's profile mix,
    which ``best-static`` is configured for when a sample of it is replayed."""
    out: dict[str, float] = {}
    for t in tasks:
        profile = profile_for_share(model, t.gpu_milli).name
        out[profile] = out.get(profile, 0.0) + _run_time(t, max_duration_s)
    return out


def _run_time(task: TraceTask, max_duration_s: float | None) -> float:
    return task.duration_s if max_duration_s is None else min(task.duration_s, max_duration_s)


def trace_pods(
    tasks: list[TraceTask],
    model: GpuModel,
    sample: int | None,
    time_scale: float,
    seed: int,
    max_duration_s: float | None = None,
) -> list[PodSpec]:
    """Pods for ``sample`` tasks drawn at random (seeded; all when None), creation order kept."""
    chosen = (
        tasks
        if sample is None or sample >= len(tasks)
        else sorted(random.Random(seed).sample(tasks, sample), key=lambda t: (t.creation_s, t.name))
    )
    first = chosen[0].creation_s
    pods = []
    for t in chosen:
        duration = _run_time(t, max_duration_s)
        pods.append(
            PodSpec(
                name=t.name,
                arrival_s=round((t.creation_s - first) / time_scale, 3),
                profile=profile_for_share(model, t.gpu_milli).name,
                duration_s=duration,
                cpu=t.cpu_milli / 1000,
                memory_gib=t.memory_mib / 1024,
            )
        )
    return pods
