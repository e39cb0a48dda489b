"""The MIG geometry engine: the one exact placement search, and what is built on it.

A GPU has a handful of memory slots (8 on every MIG model today), so every way of placing a few
instances around fixed ones can be enumerated. ``placements`` does that enumeration for every exact
question nos asks about one GPU:

* the planner's packing (``nos.mig.packing.Packer``): can these profiles be added, how much free
  space does the best placement leave, and the final layout;
* the agent's counts-only placement (``most_placed``): the most instances of a counts-only spec
  that fit around the in-use ones;
* reachability (``enumerate_layouts``, ``reachable_counts``): every layout a GPU can get while
  some instances stay where they are;
* the planner's inference of placements from status counts (``nos.planner.cluster``).

Slot bitmasks come from ``nos.mig.catalog.slot_mask`` (``Profile.mask``); ``nos.mig.layout``
states the rules plainly (``layout_errors``), and the tests hold this search against it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from functools import lru_cache

from nos.mig.catalog import GpuModel, Profile
from nos.mig.layout import Instance, layout_errors, occupied_mask

Group = tuple[Profile, int]
"""A profile and how many of its instances to place (at most, for a partial search)."""
Placed = tuple[tuple[Profile, int], ...]
"""Placed instances as (profile, start), in the order of their groups, each group by start."""
Counts = tuple[tuple[str, int], ...]
"""A layout's profile counts as a sorted tuple of (profile, count), hashable."""


def free_quality(model: GpuModel, free: int) -> int:
    """How useful a set of free slots is for future instances: every placement still possible
    counts its size squared, so one large free block beats the same slots scattered."""
    return _free_quality(model, free)


@lru_cache(maxsize=65536)
def _free_quality(model: GpuModel, free: int) -> int:
    total = 0
    for p in model.fill_order:
        for s in p.starts:
            m = p.mask(s)
            if m & free == m:
                total += p.slots * p.slots
    return total


def fits_counts(model: GpuModel, profiles: Iterable[Profile]) -> bool:
    """Placement-independent limits of a layout: per-profile maximum, compute slices, one media
    instance."""
    counts: dict[Profile, int] = {}
    compute = media = 0
    for p in profiles:
        n = counts[p] = counts.get(p, 0) + 1
        if n > p.max_count:
            return False
        compute += p.compute
        media += p.media
    return compute <= model.compute_slices and media <= 1


def search_key(p: Profile) -> tuple[int, int, str]:
    """Largest first (prunes early), identical profiles adjacent: the order searches place in."""
    return (-p.slots, -p.compute, p.name)


def search_order(profiles: Iterable[Profile]) -> tuple[Profile, ...]:
    """``profiles`` in the order searches place them (``search_key``)."""
    return tuple(sorted(profiles, key=search_key))


def groups_of(profiles: Sequence[Profile]) -> tuple[Group, ...]:
    """Runs of identical profiles as (profile, count), in order."""
    groups: list[Group] = []
    for p in profiles:
        if groups and groups[-1][0] is p:
            groups[-1] = (p, groups[-1][1] + 1)
        else:
            groups.append((p, 1))
    return tuple(groups)


def placements(
    model: GpuModel,
    taken: int,
    groups: Sequence[Group],
    *,
    exact: bool = True,
    compute: int = 0,
    media: int = 0,
    at_least: Callable[[], int] | None = None,
) -> Iterator[tuple[int, Placed]]:
    """Every way to place ``groups`` off the ``taken`` slots, as (occupied mask including
    ``taken``, placed instances); each set of placements once.

    ``exact``: each group places exactly its count; otherwise at most its count, more first.
    ``compute``/``media``: compute slices and media instances already used on the GPU; a group's
    instances must fit what is left. Per-profile maxima are the caller's (a group's count).
    ``at_least``: asked before each group, the fewest instances a placement must reach to still
    interest the caller; branches that cannot are skipped.

    Order (callers' tie-breaks depend on it): groups in the given order; within a group, counts
    from high to low, then start slots in lexicographic order."""
    last = len(groups)
    remaining = [0] * (last + 1)
    if at_least is not None:
        for i in range(last - 1, -1, -1):
            remaining[i] = remaining[i + 1] + groups[i][1]

    def group(i: int, mask: int, compute: int, media: int, acc: Placed) -> Iterator[tuple[int, Placed]]:
        if i == last:
            yield mask, acc
            return
        if at_least is not None and len(acc) + remaining[i] < at_least():
            return
        p, n = groups[i]
        if exact:
            ks: Iterable[int] = (n,)
        else:
            ks = range(min(n, sum(1 for s in p.starts if not p.mask(s) & mask)), -1, -1)
        for k in ks:
            if compute + k * p.compute <= model.compute_slices and media + k * p.media <= 1:
                yield from pick(i, p, k, 0, mask, compute + k * p.compute, media + k * p.media, acc)

    def pick(
        i: int, p: Profile, k: int, first: int, mask: int, compute: int, media: int, acc: Placed
    ) -> Iterator[tuple[int, Placed]]:
        """``k`` more instances of group ``i`` at increasing starts from ``first``, then the next group."""
        if k == 0:
            yield from group(i + 1, mask, compute, media, acc)
            return
        for s in p.starts:
            if s < first:
                continue
            m = p.mask(s)
            if not m & mask:
                yield from pick(i, p, k - 1, s + 1, mask | m, compute, media, (*acc, (p, s)))

    return group(0, taken, compute, media, ())


def most_placed(
    model: GpuModel,
    taken: int,
    groups: Sequence[Group],
    *,
    compute: int = 0,
    media: int = 0,
    existing: Collection[tuple[str, int]] = (),
) -> tuple[Instance, ...]:
    """The best part of ``groups`` to place off the ``taken`` slots: the most instances, then the
    most that sit where an instance of that profile already exists (``existing``: (profile,
    start)), then the best free space left; ties to the first in ``placements`` order."""
    best_score: tuple[int, int, int] | None = None
    best: Placed = ()
    floor = [0]  # instances in the best placement so far: fewer cannot win
    for mask, placed in placements(
        model, taken, groups, exact=False, compute=compute, media=media, at_least=lambda: floor[0]
    ):
        kept = sum((p.name, s) in existing for p, s in placed)
        score = (len(placed), kept, free_quality(model, ~mask & model.full_mask))
        if best_score is None or score > best_score:
            best_score, best = score, placed
            floor[0] = len(placed)
    return tuple(Instance(s, p.name) for p, s in best)


@lru_cache(maxsize=1024)
def enumerate_layouts(model: GpuModel, fixed: tuple[Instance, ...] = ()) -> tuple[tuple[Instance, ...], ...]:
    """Every valid layout that adds instances to ``fixed`` (``fixed`` first, then the added ones by
    start), each once; none when ``fixed`` itself is invalid. Ordered as a walk over the slots
    would find them: by the added instances' (start, profile) with the catalog's profile order,
    a layout before its extensions."""
    if layout_errors(model, fixed):
        return ()
    have = Counter(i.profile for i in fixed)
    profiles = list(model.profiles.values())
    rank = {p.name: k for k, p in enumerate(profiles)}
    groups = [(p, p.max_count - have[p.name]) for p in profiles]
    used = [model.profile(i.profile) for i in fixed]
    keys = sorted(
        tuple(sorted((s, rank[p.name]) for p, s in placed))
        for _, placed in placements(
            model,
            occupied_mask(model, fixed),
            groups,
            exact=False,
            compute=sum(p.compute for p in used),
            media=sum(p.media for p in used),
        )
    )
    return tuple((*fixed, *(Instance(s, profiles[k].name) for s, k in key)) for key in keys)


@lru_cache(maxsize=4096)
def reachable_counts(model: GpuModel, kept: tuple[Instance, ...]) -> frozenset[Counts]:
    """Profile counts of every layout a GPU can get while the ``kept`` instances stay where they
    are (every other instance may be destroyed)."""
    layouts = enumerate_layouts(model, kept)
    return frozenset(tuple(sorted(Counter(i.profile for i in layout).items())) for layout in layouts)
