"""Every useful way one GPU can end a planning round, for the optimizing stage.

A pattern is a reachable final layout of the GPU — its in-use instances where they are, some of
its free instances kept, new instances added off the slots in-use instances may occupy — seen
through what the objective cares about: how many free devices of each MIG resource it offers,
how many existing free instances it destroys, and whether the GPU changes at all. Patterns that
another beats on all three are dropped; what is left is small (tens on an 8-slot GPU) and the
same for every GPU with the same model, instances and blocked slots, hence the cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from nos.mig.catalog import GpuModel
from nos.mig.layout import Instance, occupied_mask


@dataclass(frozen=True)
class Pattern:
    offers: tuple[tuple[str, int], ...]
    """(MIG resource, free devices serving it), sorted: kept free instances plus new ones."""
    destroyed: int
    """Existing free instances it removes."""
    changed: bool
    """Whether the layout differs from the current one (the node's device plugin restarts)."""
    kept: tuple[Instance, ...]
    """Existing free instances it keeps."""
    new: tuple[Instance, ...]
    """New instances, at one placement that works (the plan's own placement may differ)."""


@lru_cache(maxsize=4096)
def gpu_patterns(
    model: GpuModel,
    instances: tuple[Instance, ...],
    blocked: int,
    allowed: tuple[tuple[tuple[str, int], ...], ...] | None = None,
) -> tuple[Pattern, ...]:
    """The non-dominated patterns of a GPU with these current ``instances`` (``used`` set on the
    ones in use) and ``blocked`` slots (where in-use instances may sit); the unchanged layout is
    always one of them. With ``allowed`` geometries (``Packer.allowed``) a changed layout must be
    exactly one of them, as the planner materialises it."""
    profiles = list(model.profiles.values())
    index = {p.name: k for k, p in enumerate(profiles)}
    resources = sorted({p.resource for p in profiles})
    rindex = {r: k for k, r in enumerate(resources)}
    used = [i for i in instances if i.used]
    free = [i for i in instances if not i.used]
    taken = occupied_mask(model, used)
    at = {(i.profile, i.start) for i in free}
    # (instance, slots mask, existing, profile index, resource index)
    options: list[tuple[Instance, int, bool, int, int]] = []
    for i in free:
        p = model.profile(i.profile)
        options.append((i, p.mask(i.start), True, index[p.name], rindex[p.resource]))
    for p in profiles:
        if p.media:  # a +me instance serves nothing its plain profile does not
            continue
        for s in p.starts:
            m = p.mask(s)
            if not m & (taken | blocked) and (p.name, s) not in at:
                options.append((Instance(s, p.name), m, False, index[p.name], rindex[p.resource]))
    options.sort(key=lambda o: (o[0].start, o[0].profile))
    counts = [0] * len(profiles)
    compute = media = 0
    for i in used:
        k = index[i.profile]
        counts[k] += 1
        compute += profiles[k].compute
        media += profiles[k].media
    offers = [0] * len(resources)
    chosen: list[int] = []
    found: dict[tuple[tuple[int, ...], int, bool], tuple[int, ...]] = {}
    n_free = len(free)

    geometries = None
    if allowed is not None:
        geometries = {
            tuple(sorted(index[p] for p, n in g for _ in range(n))) for g in allowed if all(p in index for p, _ in g)
        }

    def rec(k: int, mask: int, compute: int, media: int, kept: int, new: int) -> None:
        if k == len(options):
            key = (tuple(offers), n_free - kept, new > 0 or kept < n_free)
            if key[2] and geometries is not None:
                layout = tuple(sorted(pk for pk, n in enumerate(counts) for _ in range(n)))
                if layout not in geometries:
                    return
            if key not in found:
                found[key] = tuple(chosen)
            return
        _, m, existing, pk, rk = options[k]
        p = profiles[pk]
        if (
            not m & mask
            and counts[pk] < p.max_count
            and compute + p.compute <= model.compute_slices
            and media + p.media <= 1
        ):
            counts[pk] += 1
            offers[rk] += 1
            chosen.append(k)
            rec(k + 1, mask | m, compute + p.compute, media + p.media, kept + existing, new + (not existing))
            chosen.pop()
            offers[rk] -= 1
            counts[pk] -= 1
        rec(k + 1, mask, compute, media, kept, new)

    rec(0, taken, compute, media, 0, 0)
    patterns = []
    for (vector, destroyed, changed), picks in found.items():
        offered = tuple((resources[r], n) for r, n in enumerate(vector) if n)
        kept = tuple(options[k][0] for k in picks if options[k][2])
        added = tuple(options[k][0] for k in picks if not options[k][2])
        patterns.append(Pattern(offered, destroyed, changed, kept, added))
    return _pareto(patterns)


def _pareto(patterns: list[Pattern]) -> tuple[Pattern, ...]:
    """Drop patterns another one beats or equals on offers, destroyed and changed."""
    offers = [dict(p.offers) for p in patterns]

    def beats(a: int, b: int) -> bool:
        pa, pb = patterns[a], patterns[b]
        if pa.destroyed > pb.destroyed or pa.changed > pb.changed:
            return False
        return all(offers[a].get(r, 0) >= n for r, n in offers[b].items())

    order = sorted(
        range(len(patterns)), key=lambda i: (-sum(offers[i].values()), patterns[i].destroyed, patterns[i].changed)
    )
    kept: list[int] = []
    for i in order:
        if not any(beats(j, i) for j in kept):
            kept.append(i)
    return tuple(sorted((patterns[i] for i in kept), key=lambda p: (p.changed, p.destroyed, p.offers)))
