"""The brute-force oracle for MIG placements: walk the free slots, keep what ``layout_errors`` accepts.

It is the search ``nos.mig.placement`` replaced, slow and plain, kept for the tests to hold the
engine (and everything built on it) against.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache

from nos.mig.catalog import GpuModel
from nos.mig.layout import Instance, layout_errors, occupied_mask


def reference_layouts(model: GpuModel, fixed: tuple[Instance, ...] = ()) -> Iterator[tuple[Instance, ...]]:
    """Brute force: every layout extending ``fixed``, walking the free slots in order and keeping
    each candidate ``layout_errors`` accepts."""
    if layout_errors(model, fixed):
        return
    profiles = list(model.profiles.values())

    def extend(current: tuple[Instance, ...], mask: int, min_slot: int) -> Iterator[tuple[Instance, ...]]:
        yield current
        for slot in range(min_slot, model.memory_slots):
            if mask >> slot & 1:
                continue
            for p in profiles:
                if slot not in p.starts or p.mask(slot) & mask:
                    continue
                candidate = (*current, Instance(slot, p.name))
                if not layout_errors(model, candidate):
                    yield from extend(candidate, mask | p.mask(slot), slot + 1)

    yield from extend(fixed, occupied_mask(model, fixed), 0)


@cache
def every_layout(model: GpuModel) -> tuple[tuple[Instance, ...], ...]:
    return tuple(reference_layouts(model))
