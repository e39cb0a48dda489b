"""Physical MIG layouts: GPU instances at placements, and the rules a layout must follow.

This module states the rules plainly (slot sets, counts); the placement search in
``nos.mig.placement`` is checked against it, never the other way round.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace

from nos.mig.catalog import GpuModel


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
    """Bitmask of the memory slots the instances occupy."""
    mask = 0
    for inst in instances:
        mask |= model.profile(inst.profile).mask(inst.start)
    return mask


def counts(instances: Iterable[Instance]) -> Counter[str]:
    return Counter(i.profile for i in instances)
