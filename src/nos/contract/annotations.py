"""The node labels and annotations nos shares with users and with the original nos.

Wire contract (docs/contract.md), kept as is:

* ``nos.nebuly.com/spec-gpu-<i>-<profile>: "<count>"`` desired layout, ``...spec-partitioning-plan``;
* ``nos.nebuly.com/status-gpu-<i>-<profile>-{free,used}: "<count>"`` actual layout,
  ``...status-partitioning-plan``.

Extension (ours): where each instance sits, so the partitioner never plans around a guess::

    nos.nebuly.com/spec-placement-gpu-<i>:   "1g.10gb@0,1g.10gb@1,3g.40gb@4"
    nos.nebuly.com/status-placement-gpu-<i>: "1g.10gb@0:used,1g.10gb@1:free,3g.40gb@4:free"

The extension keys deliberately do not start with ``spec-gpu``/``status-gpu``: the original nos
treats every key with those prefixes as a count, so it ignores ours and keeps working beside them.
Profiles are written in annotation spelling (``+`` becomes ``_``, e.g. ``1g.10gb_me``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from nos.mig.catalog import annotation_spelling, profile_from_annotation
from nos.mig.layout import Instance

PARTITIONING_LABELS = ("nos.nebuly.ai/gpu-partitioning", "nos.nebuly.com/gpu-partitioning")
PARTITIONING_MIG = "mig"
PRODUCT_LABEL = "nvidia.com/gpu.product"
COUNT_LABEL = "nvidia.com/gpu.count"
MEMORY_LABEL = "nvidia.com/gpu.memory"

DOMAIN = "nos.nebuly.com/"
SPEC_PREFIX = DOMAIN + "spec-gpu-"
STATUS_PREFIX = DOMAIN + "status-gpu-"
SPEC_PLAN = DOMAIN + "spec-partitioning-plan"
STATUS_PLAN = DOMAIN + "status-partitioning-plan"
SPEC_PLACEMENT_PREFIX = DOMAIN + "spec-placement-gpu-"
STATUS_PLACEMENT_PREFIX = DOMAIN + "status-placement-gpu-"
STATUS_ERROR_PREFIX = DOMAIN + "status-error-gpu-"
"""Extension: the agent cannot read this GPU (value: the NVML error); no layout is reported for it."""

_PROFILE = r"\d+g\.\d+gb(?:_[a-z][a-z.]*)?"
# re.ASCII: only ASCII digits (str.isdigit() takes "²", which int() refuses; \d takes "٣")
_SPEC_KEY = re.compile(rf"^(?P<gpu>\d+)-(?P<profile>{_PROFILE})$", re.ASCII)
_STATUS_KEY = re.compile(rf"^(?P<gpu>\d+)-(?P<profile>{_PROFILE})-(?P<state>free|used)$", re.ASCII)
_PLACEMENT = re.compile(rf"^(?P<profile>{_PROFILE})@(?P<start>\d+)(?::(?P<state>free|used))?$", re.ASCII)
_COUNT = re.compile(r"^\d{1,3}$", re.ASCII)
_INDEX = re.compile(r"^\d+$", re.ASCII)


def is_mig_partitioned(labels: Mapping[str, str]) -> bool:
    """Opted in through either label key of the contract."""
    return any(labels.get(k) == PARTITIONING_MIG for k in PARTITIONING_LABELS)


def is_nos_key(key: str) -> bool:
    return key.startswith(DOMAIN)


def is_spec_key(key: str) -> bool:
    """Keys the partitioner owns (rewritten as a whole on every plan)."""
    return key.startswith((SPEC_PREFIX, SPEC_PLACEMENT_PREFIX)) or key == SPEC_PLAN


def is_status_key(key: str) -> bool:
    return key.startswith((STATUS_PREFIX, STATUS_PLACEMENT_PREFIX, STATUS_ERROR_PREFIX)) or key == STATUS_PLAN


@dataclass(frozen=True)
class AnnotationProblem:
    """A malformed annotation. ``gpu`` is None when it cannot be attributed to one GPU."""

    key: str
    message: str
    gpu: int | None = None

    def __str__(self) -> str:
        return f"annotation {self.key}: {self.message}"


@dataclass
class GpuAnnotations:
    """What one side (spec or status) says about one GPU."""

    counts: Counter[tuple[str, bool]] = field(default_factory=Counter)
    """(profile, used) -> count; spec counts have used=False."""
    placements: tuple[Instance, ...] | None = None
    """From the placement extension, when present."""

    def profile_counts(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for (profile, _), n in self.counts.items():
            out[profile] += n
        return out


@dataclass
class DecodedAnnotations:
    gpus: dict[int, GpuAnnotations] = field(default_factory=dict)
    plan_id: str | None = None
    problems: list[AnnotationProblem] = field(default_factory=list)
    unreadable: dict[int, str] = field(default_factory=dict)
    """Status only: GPUs the agent cannot read, with the reason it gave."""

    def gpu(self, index: int) -> GpuAnnotations:
        return self.gpus.setdefault(index, GpuAnnotations())

    def problem_gpus(self) -> set[int] | None:
        """GPUs with malformed annotations; None means the whole node (a problem not tied to a GPU)."""
        out: set[int] = set()
        for p in self.problems:
            if p.gpu is None:
                return None
            out.add(p.gpu)
        return out


@lru_cache(maxsize=4096)  # many GPUs of a cluster report the same layout
def _parse_placements(value: str, with_state: bool) -> tuple[Instance, ...]:
    out = []
    for item in filter(None, (v.strip() for v in value.split(","))):
        m = _PLACEMENT.match(item)
        if m is None or (m["state"] is not None) != with_state:
            expected = "PROFILE@START:used|free" if with_state else "PROFILE@START"
            raise ValueError(f"item {item!r} is not {expected}")
        out.append(Instance(int(m["start"]), profile_from_annotation(m["profile"]), m["state"] == "used"))
    return tuple(sorted(out))


def _decode(annotations: Mapping[str, str], status: bool) -> DecodedAnnotations:
    prefix, placement_prefix, plan_key = (
        (STATUS_PREFIX, STATUS_PLACEMENT_PREFIX, STATUS_PLAN)
        if status
        else (SPEC_PREFIX, SPEC_PLACEMENT_PREFIX, SPEC_PLAN)
    )
    key_re = _STATUS_KEY if status else _SPEC_KEY
    out = DecodedAnnotations()
    for key in sorted(annotations):
        value = annotations[key]
        if key == plan_key:
            out.plan_id = value
        elif status and key.startswith(STATUS_ERROR_PREFIX):
            raw_index = key[len(STATUS_ERROR_PREFIX) :]
            if _INDEX.match(raw_index):
                out.unreadable[int(raw_index)] = value
            else:
                out.problems.append(AnnotationProblem(key, "GPU index is not a number"))
        elif key.startswith(placement_prefix):
            raw_index = key[len(placement_prefix) :]
            if not _INDEX.match(raw_index):
                out.problems.append(AnnotationProblem(key, "GPU index is not a number"))
                continue
            try:
                out.gpu(int(raw_index)).placements = _parse_placements(value, with_state=status)
            except ValueError as e:
                out.problems.append(AnnotationProblem(key, str(e), int(raw_index)))
        elif key.startswith(prefix):
            m = key_re.match(key[len(prefix) :])
            if m is None:
                head = key[len(prefix) :].split("-", 1)[0]
                index_or_none = int(head) if _INDEX.match(head) else None
                out.problems.append(AnnotationProblem(key, "key is not of the form of the contract", index_or_none))
                continue
            gpu_index = int(m["gpu"])
            if not _COUNT.match(value.strip()):
                out.problems.append(AnnotationProblem(key, f"count {value!r} is not a non-negative integer", gpu_index))
                continue
            used = status and m["state"] == "used"
            out.gpu(gpu_index).counts[(profile_from_annotation(m["profile"]), used)] += int(value)
    for index, gpu in out.gpus.items():
        if gpu.placements is None:
            continue
        placed = Counter((i.profile, i.used) for i in gpu.placements)
        counted = +gpu.counts
        if placed != counted:
            key = (STATUS_PLACEMENT_PREFIX if status else SPEC_PLACEMENT_PREFIX) + str(index)
            out.problems.append(AnnotationProblem(key, "placements disagree with the counts", index))
    return out


def decode_spec(annotations: Mapping[str, str]) -> DecodedAnnotations:
    return _decode(annotations, status=False)


def decode_status(annotations: Mapping[str, str]) -> DecodedAnnotations:
    return _decode(annotations, status=True)


def _placement_value(instances: Sequence[Instance], with_state: bool) -> str:
    items = []
    for i in sorted(instances):
        item = f"{annotation_spelling(i.profile)}@{i.start}"
        items.append(f"{item}:{'used' if i.used else 'free'}" if with_state else item)
    return ",".join(items)


def encode_spec(gpus: Mapping[int, Sequence[Instance]], plan_id: str | None) -> dict[str, str]:
    """The complete set of spec annotations for a node (contract counts + placement extension)."""
    out: dict[str, str] = {}
    for index in sorted(gpus):
        for profile, n in sorted(Counter(i.profile for i in gpus[index]).items()):
            out[f"{SPEC_PREFIX}{index}-{annotation_spelling(profile)}"] = str(n)
        out[f"{SPEC_PLACEMENT_PREFIX}{index}"] = _placement_value(gpus[index], with_state=False)
    if plan_id is not None:
        out[SPEC_PLAN] = plan_id
    return out


def encode_status(
    gpus: Mapping[int, Sequence[Instance]], plan_id: str | None, unreadable: Mapping[int, str] | None = None
) -> dict[str, str]:
    """The complete set of status annotations for a node, as the agent reports it."""
    out: dict[str, str] = {
        f"{STATUS_ERROR_PREFIX}{i}": (why or "unreadable")[:256] for i, why in (unreadable or {}).items()
    }
    for index in sorted(gpus):
        for (profile, used), n in sorted(Counter((i.profile, i.used) for i in gpus[index]).items()):
            out[f"{STATUS_PREFIX}{index}-{annotation_spelling(profile)}-{'used' if used else 'free'}"] = str(n)
        out[f"{STATUS_PLACEMENT_PREFIX}{index}"] = _placement_value(gpus[index], with_state=True)
    if plan_id is not None:
        out[STATUS_PLAN] = plan_id
    return out


def merge_patch(current: Mapping[str, str], desired: Mapping[str, str], owned: str = "spec") -> dict[str, str | None]:
    """JSON merge-patch body for ``metadata.annotations``: set what differs, null the owned keys
    that are no longer desired (stale profiles must disappear: absent means zero)."""
    owns = is_spec_key if owned == "spec" else is_status_key
    patch: dict[str, str | None] = {k: v for k, v in desired.items() if current.get(k) != v}
    patch.update({k: None for k in current if owns(k) and k not in desired})
    return patch
