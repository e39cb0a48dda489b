"""The planner's questions about one GPU's placements, memoised, within the allowed geometries.

The search itself is ``nos.mig.placement.placements`` (the one placement search). The planner asks
two questions many times with few distinct inputs (most GPUs of a cluster look alike), hence the
caches:

* can these new profiles be placed around these fixed instances, and how much contiguous free
  space would the best placement leave (``quality``)?
* the final layout of a GPU: fixed instances, the new ones, as many existing free instances as
  possible left in place, and spare space filled (``materialize``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from nos.mig.catalog import GpuModel, Profile
from nos.mig.layout import Instance, occupied_mask
from nos.mig.placement import Group, fits_counts, free_quality, groups_of, placements, search_order

Geometry = Mapping[str, int]
"""An allowed layout of one GPU: profile name -> count (the original nos' format)."""

_MAX_SOLUTIONS = 4096


class Packer:
    """Placement search for the GPUs of one plan, optionally restricted to allowed geometries.

    A restricted GPU's layout must *fit within* one of its model's allowed geometries: its count of
    each profile (a variant such as ``+me`` counting as its plain profile) at most the geometry's.
    Spare slots may stay empty, so the default geometries (every maximal layout each model
    supports, ``nos.mig.geometries.supported_geometries``) allow exactly what an unrestricted GPU
    allows."""

    def __init__(self, geometries: Mapping[str, Sequence[Geometry]] | None = None) -> None:
        self._geometries = {k: [dict(g) for g in v] for k, v in (geometries or {}).items()}
        self._allowed: dict[str, list[Counter[str]]] = {}
        self._quality_cache: dict[tuple[object, ...], int | None] = {}
        self._additions_cache: dict[tuple[object, ...], dict[str, int]] = {}

    def restricted(self, model: GpuModel) -> bool:
        return model.name in self._geometries

    def within(self, model: GpuModel, profiles: Sequence[Profile]) -> bool:
        """Whether a layout of ``profiles`` fits within one of the model's allowed geometries."""
        if model.name not in self._geometries:
            return True
        allowed = self._allowed.get(model.name)
        if allowed is None:
            allowed = self._allowed[model.name] = [
                _plain_counts(model, (model.profile(p) for p, n in g.items() for _ in range(n)))
                for g in self._geometries[model.name]
            ]
        have = _plain_counts(model, profiles)
        return any(not have - g for g in allowed)

    def allowed(self, model: GpuModel) -> tuple[tuple[tuple[str, int], ...], ...] | None:
        """The allowed geometries of ``model`` as sorted (profile, count) tuples; None when unrestricted."""
        if model.name not in self._geometries:
            return None
        return tuple(tuple(sorted((p, n) for p, n in g.items() if n)) for g in self._geometries[model.name])

    def quality(
        self, model: GpuModel, fixed: tuple[Instance, ...], wanted: tuple[str, ...], blocked: int = 0
    ) -> int | None:
        """None when ``wanted`` cannot be placed around ``fixed`` (and off the ``blocked`` slots);
        otherwise the best free-space quality a placement leaves (higher is better). ``wanted``
        must be sorted."""
        key = (model, fixed, wanted, blocked)
        try:
            return self._quality_cache[key]
        except KeyError:
            pass
        best: int | None = None
        taken = occupied_mask(model, fixed) | blocked
        target = self._target(model, fixed, wanted)
        if target is not None:
            for n, (mask, _) in enumerate(placements(model, taken, target)):
                q = free_quality(model, ~mask & model.full_mask)
                if best is None or q > best:
                    best = q
                if n >= _MAX_SOLUTIONS:
                    break
        self._quality_cache[key] = best
        return best

    def additions(
        self, model: GpuModel, fixed: tuple[Instance, ...], wanted: tuple[str, ...], blocked: int = 0
    ) -> dict[str, int]:
        """For each MIG resource of ``model``, the quality left after adding one new instance serving
        it to ``wanted`` (``quality``); resources that do not fit are absent. Cached: the planner
        asks this for every GPU state it indexes."""
        key = (model, fixed, wanted, blocked)
        out = self._additions_cache.get(key)
        if out is None:
            out = {}
            for resource in model.by_resource:
                profile = model.profile_for_resource(resource)
                if profile is None:
                    continue
                q = self.quality(model, fixed, tuple(sorted((*wanted, profile.name))), blocked)
                if q is not None:
                    out[resource] = q
            self._additions_cache[key] = out
        return out

    def feasible(self, model: GpuModel, fixed: tuple[Instance, ...], wanted: tuple[str, ...], blocked: int = 0) -> bool:
        return self.quality(model, fixed, wanted, blocked) is not None

    def _target(
        self, model: GpuModel, fixed: tuple[Instance, ...], wanted: tuple[str, ...]
    ) -> tuple[Group, ...] | None:
        """The wanted profiles as groups in search order, or None when the counts alone rule them out."""
        fixed_profiles = [model.profile(i.profile) for i in fixed]
        wanted_profiles = [model.profile(w) for w in wanted]
        every = fixed_profiles + wanted_profiles
        if not fits_counts(model, every) or not self.within(model, every):
            return None
        return groups_of(search_order(wanted_profiles))

    def materialize(
        self,
        model: GpuModel,
        fixed: tuple[Instance, ...],
        wanted: tuple[str, ...],
        soft: tuple[Instance, ...] = (),
        fill: bool = True,
        blocked: int = 0,
    ) -> tuple[Instance, ...] | None:
        """The final layout: ``fixed`` where they are, ``wanted`` placed, existing free ``soft``
        instances kept where possible, spare slots filled largest-first when ``fill``. Among
        placements it keeps the most soft instances, then leaves the best free space. None when
        ``wanted`` cannot be placed. Soft instances may sit on ``blocked`` slots (where they are is
        only a guess then); new ones never do."""
        fixed_mask = occupied_mask(model, fixed)
        taken = fixed_mask | blocked
        full = model.full_mask
        soft_masks = [(i, model.profile(i.profile).mask(i.start)) for i in soft]
        best: tuple[object, ...] | None = None
        best_layout: tuple[Instance, ...] | None = None
        target = self._target(model, fixed, wanted)
        if target is None:
            return None
        for n, (mask, placed) in enumerate(placements(model, taken, target)):
            new = tuple(Instance(s, p.name) for p, s in placed)
            # a new instance exactly where an identical free one sits is that one, kept
            reused = [i for i in soft if i in new]
            new = tuple(i for i in new if i not in reused)
            new_mask = occupied_mask(model, new) | fixed_mask
            kept_soft = [i for i, m in soft_masks if i not in reused and not m & new_mask]
            kept_profiles = [model.profile(i.profile) for i in (*fixed, *new, *reused, *kept_soft)]
            while not (fits_counts(model, kept_profiles) and self.within(model, kept_profiles)):
                kept_soft.pop()  # keep fewer soft instances
                kept_profiles.pop()
            kept_soft += reused
            destroyed = len(soft) - len(kept_soft)
            occupied = mask | occupied_mask(model, kept_soft)
            score = (destroyed, -free_quality(model, ~occupied & full), len(new), sorted(new))
            if best is None or score < best:
                best, best_layout = score, tuple(sorted((*fixed, *new, *kept_soft)))
            if n >= _MAX_SOLUTIONS:
                break
        if best_layout is None:
            return None
        if fill:
            best_layout = fill_spare(model, best_layout, blocked, self if self.restricted(model) else None)
        return best_layout


def _plain_counts(model: GpuModel, profiles: Iterable[Profile]) -> Counter[str]:
    return Counter(p.base for p in profiles)


def fill_spare(
    model: GpuModel, layout: tuple[Instance, ...], blocked: int = 0, packer: Packer | None = None
) -> tuple[Instance, ...]:
    """Fill free slots with the largest instances that fit, each where it leaves the best free space
    (and, given a restricting ``packer``, keeps the layout within an allowed geometry)."""
    current = list(layout)
    profiles = [model.profile(i.profile) for i in current]
    mask = occupied_mask(model, layout) | blocked
    full = model.full_mask
    while True:
        best: tuple[int, int, Profile] | None = None
        for p in model.fill_order:
            if best is not None and p.slots < best[2].slots:
                break
            if not fits_counts(model, [*profiles, p]) or (
                packer is not None and not packer.within(model, [*profiles, p])
            ):
                continue
            for s in p.starts:
                m = p.mask(s)
                if m & mask:
                    continue
                q = free_quality(model, ~(mask | m) & full)
                if best is None or q > best[0]:
                    best = (q, s, p)
        if best is None:
            return tuple(sorted(current))
        _, s, p = best
        current.append(Instance(s, p.name))
        profiles.append(p)
        mask |= p.mask(s)
