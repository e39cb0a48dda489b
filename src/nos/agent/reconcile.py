"""What to do to one GPU so that it matches its spec, without touching anything in use (pure logic).

Inputs are the desired layout (counts, and exact placements when the partitioner wrote the placement
extension), the GPU instances NVML reports (half-created ones included) and which of them are in use.
The output is an ordered list of operations with exact placements, so NVML never picks a placement
itself (the original agent's weakness):

1. destroy half-created instances (no compute instance) that are not wanted where they are;
2. destroy free instances the target does not keep at the same place;
3. complete wanted half-created instances (create their compute instance) and create the missing
   instances (GPU instance at (profile, start), then its compute instance), by start slot.

In-use instances are fixed points: never destroyed, never moved. A free instance the spec still wants
at the same place is kept. Whatever cannot be reached is returned as ``Skipped`` with a reason, and
the rest is still applied. The result depends only on the inputs (sorted iteration, no sets leak).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from nos.contract.annotations import GpuAnnotations
from nos.gpu.port import GpuInstanceInfo
from nos.mig.catalog import MIG_RESOURCE_PREFIX, GpuModel, Profile, slot_mask
from nos.mig.layout import Instance, layout_errors
from nos.mig.placement import most_placed, search_key

OpKind = Literal["destroy", "complete", "create"]


@dataclass(frozen=True)
class Op:
    """One step on one GPU. ``gi_id`` names the existing instance for destroy/complete."""

    gpu: int
    kind: OpKind
    profile: str
    start: int
    size: int
    gi_id: int | None = None
    reason: str = ""
    device_uuids: tuple[str, ...] = ()
    """For a destroy: the MIG device UUIDs the instance had when planned (its identity, with gi_id
    and placement: the driver re-uses ids by placement)."""

    @property
    def slot_mask(self) -> int:
        """Bitmask of the memory slots the instance occupies (``size`` is its count of slots)."""
        return slot_mask(self.start, self.size)

    def __str__(self) -> str:
        gi = f" (gi {self.gi_id})" if self.gi_id is not None else ""
        why = f": {self.reason}" if self.reason else ""
        return f"gpu {self.gpu}: {self.kind} {self.profile}@{self.start}{gi}{why}"


@dataclass(frozen=True)
class Skipped:
    """Part of the spec that is not applied (or an in-use instance kept against it), and why."""

    gpu: int
    item: str
    reason: str

    def __str__(self) -> str:
        return f"gpu {self.gpu}: {self.item}: {self.reason}"


@dataclass(frozen=True)
class Desired:
    """The spec of one GPU: profile counts, and exact placements when the extension is present."""

    counts: Mapping[str, int] = field(default_factory=dict)
    placements: tuple[Instance, ...] | None = None

    @classmethod
    def from_annotations(cls, gpu: GpuAnnotations) -> Desired:
        counts = {p: n for p, n in sorted(gpu.profile_counts().items()) if n > 0}
        placements = None if gpu.placements is None else tuple(i.freed() for i in gpu.placements)
        return cls(counts, placements)


@dataclass(frozen=True)
class GpuOps:
    """What ``plan_gpu`` decided for one GPU: the operations, what is skipped, and the result."""

    gpu: int
    ops: tuple[Op, ...]
    skipped: tuple[Skipped, ...]
    target: tuple[Instance, ...]
    """The layout once every op succeeded (in-use instances flagged ``used``)."""


def in_use_gi_ids(actual: Iterable[GpuInstanceInfo], used_devices: Collection[str], busy: Collection[int]) -> set[int]:
    """GPU instances in use: one of its MIG devices is allocated (PodResources) or it runs processes."""
    return {gi.gi_id for gi in actual if gi.gi_id in busy or any(u in used_devices for u in gi.device_uuids)}


def allocated_ids(allocated: Mapping[str, Collection[str]]) -> set[str]:
    """Every allocated device id, whatever the resource (a MIG UUID is unique on the node)."""
    return {i for ids in allocated.values() for i in ids}


def unmatched_mig_ids(allocated: Mapping[str, Collection[str]], device_uuids: Collection[str]) -> list[str]:
    """Allocated ids of ``nvidia.com/mig-*`` resources that name none of ``device_uuids``.

    Any such id means the agent cannot tell which instance is allocated: the device plugin names
    devices otherwise (``--device-id-strategy=index`` gives ``0:0``), or the device is on a GPU NVML
    cannot read. Then every instance of the node must count as in use."""
    known = set(device_uuids)
    return sorted(
        {i for r, ids in allocated.items() if r.startswith(MIG_RESOURCE_PREFIX) for i in ids if i not in known}
    )


def _name(inst: Instance) -> str:
    return f"{'in-use ' if inst.used else ''}{inst.profile}@{inst.start}"


class _Gpu:
    """The fixed (in-use) part of one GPU and helpers to validate additions against it."""

    def __init__(self, model: GpuModel, gpu: int, actual: Sequence[GpuInstanceInfo], in_use: Collection[int]) -> None:
        self.model, self.gpu = model, gpu
        self.fixed: list[Instance] = []
        self.masks: dict[Instance, int] = {}
        for gi in sorted(actual, key=lambda g: (g.start, g.gi_id)):
            if gi.gi_id in in_use:
                inst = Instance(gi.start, gi.profile, used=True)
                self.fixed.append(inst)
                self.masks[inst] = slot_mask(gi.start, gi.size)
        known = [i for i in self.fixed if i.profile in model.profiles]
        self.base_errors = set(layout_errors(model, known))

    def mask_of(self, inst: Instance) -> int:
        return self.masks.get(inst) or self.model.profile(inst.profile).mask(inst.start)

    def new_errors(self, layout: Iterable[Instance]) -> list[str]:
        """Errors of ``layout`` (fixed instances included) that the fixed part alone does not have."""
        known = [i for i in layout if i.profile in self.model.profiles]
        return [e for e in layout_errors(self.model, known) if e not in self.base_errors]

    def blockers(self, layout: Sequence[Instance], profile: Profile, start: int) -> list[Instance]:
        m = profile.mask(start)
        return [i for i in layout if self.mask_of(i) & m]


def _profile_problem(model: GpuModel, name: str, available: Collection[str] | None) -> str | None:
    if name not in model.profiles:
        return f"profile unknown on {model.name}"
    if available is not None and name not in available:
        return "profile not offered by the driver"
    return None


def _by_placement(
    g: _Gpu, desired: Sequence[Instance], existing: set[tuple[str, int]], available: Collection[str] | None
) -> tuple[list[Instance], list[Skipped]]:
    target = list(g.fixed)
    unclaimed = set(g.fixed)
    skipped: list[Skipped] = []
    # Exact in-use matches first, then instances that exist already, then the rest: a conflicting
    # spec loses its new instances before the ones that cost nothing.
    order = sorted(
        desired,
        key=lambda d: (
            Instance(d.start, d.profile, True) not in unclaimed,
            (d.profile, d.start) not in existing,
            d.start,
            d.profile,
        ),
    )
    for d in order:
        item = f"{d.profile}@{d.start}"
        problem = _profile_problem(g.model, d.profile, available)
        if problem is not None:
            skipped.append(Skipped(g.gpu, item, problem))
            continue
        p = g.model.profile(d.profile)
        if d.start not in p.starts:
            skipped.append(Skipped(g.gpu, item, f"cannot start at slot {d.start} (allowed: {list(p.starts)})"))
            continue
        used_twin = Instance(d.start, d.profile, True)
        if used_twin in unclaimed:
            unclaimed.discard(used_twin)
            continue
        blockers = g.blockers(target, p, d.start)
        if blockers:
            what = ", ".join(_name(b) if b.used else f"{_name(b)} (also in the spec)" for b in blockers)
            skipped.append(Skipped(g.gpu, item, f"overlaps {what}"))
            continue
        errors = g.new_errors([*target, d])
        if errors:
            skipped.append(Skipped(g.gpu, item, errors[0]))
            continue
        target.append(d)
    skipped += [Skipped(g.gpu, _name(i), "in use, kept although the spec does not want it") for i in sorted(unclaimed)]
    return target, skipped


def _by_counts(
    g: _Gpu, counts: Mapping[str, int], existing: set[tuple[str, int]], available: Collection[str] | None
) -> tuple[list[Instance], list[Skipped]]:
    model = g.model
    skipped: list[Skipped] = []
    wanted = Counter({p: n for p, n in counts.items() if n > 0})
    unclaimed: list[Instance] = []
    for inst in g.fixed:
        if wanted[inst.profile] > 0:
            wanted[inst.profile] -= 1
        else:
            unclaimed.append(inst)
    groups: list[tuple[Profile, int]] = []
    for name, n in sorted(wanted.items()):
        if n <= 0:
            continue
        problem = _profile_problem(model, name, available)
        if problem is not None:
            skipped.append(Skipped(g.gpu, f"{n} x {name}", problem))
            continue
        p = model.profile(name)
        have = sum(1 for i in g.fixed if i.profile == name)
        if have + n > p.max_count:
            extra = have + n - p.max_count
            skipped.append(Skipped(g.gpu, f"{extra} x {name}", f"exceeds the maximum of {p.max_count} per GPU"))
            n -= extra
        if n > 0:
            groups.append((p, n))
    groups.sort(key=lambda pn: search_key(pn[0]))
    known_fixed = [model.profiles[i.profile] for i in g.fixed if i.profile in model.profiles]
    fixed_mask = 0
    for inst in g.fixed:
        fixed_mask |= g.mask_of(inst)
    best = most_placed(
        model,
        fixed_mask,
        groups,
        compute=sum(p.compute for p in known_fixed),
        media=sum(p.media for p in known_fixed),
        existing=existing,
    )
    target = [*g.fixed, *best]
    placed = Counter(i.profile for i in best)
    for p, n in groups:
        missing = n - placed[p.name]
        if missing > 0:
            skipped.append(Skipped(g.gpu, f"{missing} x {p.name}", _why_not(g, target, p)))
    skipped += [Skipped(g.gpu, _name(i), "in use, kept although the spec does not want it") for i in unclaimed]
    return target, skipped


def _why_not(g: _Gpu, target: Sequence[Instance], p: Profile) -> str:
    reasons = []
    for s in p.starts:
        blockers = g.blockers(target, p, s)
        hard = [b for b in blockers if b.used] or blockers  # in-use blockers are the real cause
        if hard:
            reasons.append(f"@{s} overlaps {', '.join(_name(b) for b in hard)}")
        else:
            errors = g.new_errors([*target, Instance(s, p.name)])
            reasons.append(f"@{s}: {errors[0] if errors else 'not chosen'}")
    return "no room: " + "; ".join(reasons)


def plan_gpu(
    model: GpuModel,
    gpu: int,
    desired: Desired,
    actual: Sequence[GpuInstanceInfo],
    in_use: Collection[int],
    available: Collection[str] | None = None,
) -> GpuOps:
    """Operations that bring GPU ``gpu`` (of ``model``) as close to ``desired`` as the in-use
    instances (GI ids in ``in_use``) allow. ``available``: profile names the driver offers, if known."""
    g = _Gpu(model, gpu, actual, in_use)
    free = [gi for gi in actual if gi.gi_id not in in_use]
    existing = {(gi.profile, gi.start) for gi in free if not gi.split}
    if desired.placements is not None:
        target, skipped = _by_placement(g, desired.placements, existing, available)
    else:
        target, skipped = _by_counts(g, desired.counts, existing, available)
    wanted = {(i.profile, i.start) for i in target if not i.used}

    half_destroys, free_destroys, builds = [], [], []
    for gi in sorted(free, key=lambda x: (bool(x.compute_instances), x.start, x.gi_id)):
        place = (gi.profile, gi.start)
        if gi.split:  # another tool's compute instances: never reused or completed
            reason = f"split into {len(gi.compute_instances)} compute instance(s) by another tool; not reusable"
            free_destroys.append(Op(gpu, "destroy", gi.profile, gi.start, gi.size, gi.gi_id, reason, gi.device_uuids))
        elif not gi.compute_instances:
            if place in wanted:
                wanted.discard(place)
                builds.append(Op(gpu, "complete", gi.profile, gi.start, gi.size, gi.gi_id, "half-created and wanted"))
            else:
                reason = "half-created (no compute instance)"
                half_destroys.append(Op(gpu, "destroy", gi.profile, gi.start, gi.size, gi.gi_id, reason))
        elif place in wanted:
            wanted.discard(place)
        else:
            reason = "not in the desired layout"
            free_destroys.append(Op(gpu, "destroy", gi.profile, gi.start, gi.size, gi.gi_id, reason, gi.device_uuids))
    for name, start in wanted:
        builds.append(Op(gpu, "create", name, start, model.profile(name).slots))
    builds.sort(key=lambda o: (o.start, o.profile))
    ops = (*half_destroys, *free_destroys, *builds)
    skipped += [
        Skipped(
            gpu,
            f"{gi.profile}@{gi.start}",
            f"split into {len(gi.compute_instances)} compute instances by another tool and in use: kept, never reused",
        )
        for gi in actual
        if gi.split and gi.gi_id in in_use
    ]
    return GpuOps(gpu, ops, tuple(skipped), tuple(sorted(target)))
