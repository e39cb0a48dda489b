"""Physical MIG layouts: GPU instances occupying memory slots at placements.

This module states the rules plainly (slot sets, counts); the planner's fast search in
``packing`` is checked against it, never the other way round.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

from nos.mig.catalog import GpuModel, Profile


@dataclass(frozen=True, slots=True, order=True)
class Instance:
    """A GPU instance of ``profile`` (NVML spelling) starting at memory slot ``start``."""

    start: int
    profile: str
    used: bool = False

    def __str__(self) -> str:
        return f"{self.profile}@{self.start}{'*' if self.used else ''}"

    def freed(self) -> Instance:
        return replace(self, used=False) if self.used else self


def layout_errors(model: GpuModel, instances: Iterable[Instance]) -> list[str]:
    """Every reason the layout cannot exist on a GPU of ``model`` (empty when it can)."""
    errors: list[str] = []
    owner: dict[int, Instance] = {}
    counts: Counter[str] = Counter()
    compute = media = 0
    for inst in sorted(instances):
        profile = model.profiles.get(inst.profile)
        if profile is None:
            errors.append(f"{model.name} has no MIG profile {inst.profile}")
            continue
        if inst.start not in profile.starts:
            errors.append(f"{inst.profile} cannot start at slot {inst.start} (allowed: {list(profile.starts)})")
        for slot in range(inst.start, inst.start + profile.slots):
            if slot in owner:
                errors.append(f"{inst.profile}@{inst.start} overlaps {owner[slot].profile}@{owner[slot].start}")
                break
            owner[slot] = inst
        counts[inst.profile] += 1
        compute += profile.compute
        media += profile.media
    for name, n in counts.items():
        if name in model.profiles and n > model.profiles[name].max_count:
            errors.append(f"{n} x {name} exceeds the maximum of {model.profiles[name].max_count}")
    if compute > model.compute_slices:
        errors.append(f"{compute} compute slices exceed the GPU's {model.compute_slices}")
    if media > 1:
        errors.append("more than one instance owns the media engines")
    return errors


def occupied_mask(model: GpuModel, instances: Iterable[Instance]) -> int:
    mask = 0
    for inst in instances:
        mask |= model.profile(inst.profile).mask(inst.start)
    return mask


def counts(instances: Iterable[Instance]) -> Counter[str]:
    return Counter(i.profile for i in instances)


@dataclass(frozen=True)
class MigGpu:
    """A GPU of a known model with its current instances; answers what can change without moving any."""

    model: GpuModel
    instances: tuple[Instance, ...] = ()

    @property
    def occupied(self) -> int:
        return occupied_mask(self.model, self.instances)

    def free_starts(self, profile: str | Profile) -> list[int]:
        """Start slots where ``profile`` could be added now, keeping every existing instance."""
        p = self.model.profile(profile) if isinstance(profile, str) else profile
        used = self.occupied
        return [
            s
            for s in p.starts
            if not p.mask(s) & used and not layout_errors(self.model, (*self.instances, Instance(s, p.name)))
        ]

    def can_add(self, profile: str | Profile) -> bool:
        return bool(self.free_starts(profile))

    def with_instance(self, profile: str, start: int, used: bool = False) -> MigGpu:
        new = (*self.instances, Instance(start, profile, used))
        errors = layout_errors(self.model, new)
        if errors:
            raise ValueError("; ".join(errors))
        return MigGpu(self.model, tuple(sorted(new)))

    def free_slots(self) -> list[int]:
        used = self.occupied
        return [s for s in range(self.model.memory_slots) if not used >> s & 1]

    def reachable_layouts(self, keep: Iterable[Instance] | None = None) -> set[tuple[tuple[str, int], ...]]:
        """Profile multisets reachable while the ``keep`` instances (default: the used ones) stay
        where they are and every other instance may be destroyed. Each layout is a sorted tuple of
        (profile, count)."""
        kept = tuple(keep) if keep is not None else tuple(i for i in self.instances if i.used)
        out: set[tuple[tuple[str, int], ...]] = set()
        for layout in enumerate_layouts(self.model, kept):
            out.add(tuple(sorted(counts(layout).items())))
        return out


def enumerate_layouts(model: GpuModel, fixed: tuple[Instance, ...] = ()) -> Iterator[tuple[Instance, ...]]:
    """Every valid layout (including ``fixed``) that adds instances to ``fixed``; each once."""
    profiles = list(model.profiles.values())
    base_errors = layout_errors(model, fixed)
    if base_errors:
        return

    def extend(current: tuple[Instance, ...], mask: int, min_slot: int) -> Iterator[tuple[Instance, ...]]:
        yield current
        for slot in range(min_slot, model.memory_slots):
            if mask >> slot & 1:
                continue
            for p in profiles:
                if slot not in p.starts or p.mask(slot) & mask:
                    continue
                candidate = (*current, Instance(slot, p.name))
                if layout_errors(model, candidate):
                    continue
                yield from extend(candidate, mask | p.mask(slot), slot + 1)

    yield from extend(tuple(fixed), occupied_mask(model, fixed), 0)
