"""``nos.mig.placement`` (the one placement search) against a brute-force walk over the plain rules
(``tests.mig.reference``)."""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nos.mig.catalog import GpuModel, Profile, default_catalog, slot_mask
from nos.mig.layout import Instance, counts, layout_errors, occupied_mask
from nos.mig.placement import (
    enumerate_layouts,
    fits_counts,
    free_quality,
    groups_of,
    most_placed,
    placements,
    reachable_counts,
    search_key,
    search_order,
)
from tests.mig.reference import every_layout, reference_layouts

CAT = default_catalog()
MODELS = [m for m in CAT.models if m.verified]
A100 = CAT.model("A100-80GB")
A30 = CAT.model("A30-24GB")

models = st.sampled_from(MODELS)


def I(profile: str, start: int, used: bool = False) -> Instance:  # noqa: E743
    return Instance(start, profile, used)


@st.composite
def gpu_inputs(draw: st.DrawFn) -> tuple[GpuModel, int, list[Profile]]:
    model = draw(models)
    taken = draw(st.integers(0, model.full_mask))
    wanted = draw(st.lists(st.sampled_from(list(model.profiles.values())), max_size=6))
    return model, taken, wanted


# ----------------------------------------------------------------------------- bitmasks


def test_slot_mask_is_the_profiles_mask() -> None:
    assert slot_mask(0, 8) == A100.full_mask == 0xFF
    assert slot_mask(4, 4) == 0b11110000 == A100.profile("3g.40gb").mask(4), "3g.40gb: 4 memory slots"
    assert slot_mask(6, 1) == 0b01000000 == A100.profile("1g.10gb").mask(6)
    assert A30.full_mask == 0xF
    assert occupied_mask(A100, (I("4g.40gb", 0), I("1g.10gb", 6))) == 0b01001111


# ----------------------------------------------------------------------------- exact placement


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gpu_inputs())
def test_exact_placements_are_every_placement_of_the_wanted_profiles(
    case: tuple[GpuModel, int, list[Profile]],
) -> None:
    model, taken, wanted = case
    assume(fits_counts(model, wanted))
    found = []
    for mask, placed in placements(model, taken, groups_of(search_order(wanted))):
        layout = tuple(sorted(Instance(s, p.name) for p, s in placed))
        assert mask == taken | occupied_mask(model, layout)
        found.append(layout)
    assert len(found) == len(set(found)), "each placement once"
    want = Counter(p.name for p in wanted)
    brute = {
        tuple(sorted(layout))
        for layout in every_layout(model)
        if counts(layout) == want and not occupied_mask(model, layout) & taken
    }
    assert set(found) == brute


def test_exact_placement_order_is_by_group_then_lexicographic() -> None:
    one = A100.profile("1g.10gb")
    got = [tuple(s for _, s in placed) for _, placed in placements(A100, 0, [(one, 2)])]
    assert got[:3] == [(0, 1), (0, 2), (0, 3)] and got[-1] == (5, 6) and len(got) == 21


def test_fits_counts() -> None:
    one = A100.profile("1g.10gb")
    assert fits_counts(A100, [one] * 7) and not fits_counts(A100, [one] * 8)
    assert not fits_counts(A100, [A100.profile("4g.40gb"), A100.profile("4g.40gb")]), "8 compute slices"
    me = A100.profile("1g.10gb+me")
    assert fits_counts(A100, [me, one]) and not fits_counts(A100, [me, me])
    assert not list(placements(A100, 0, [(me, 1)], media=1)), "the GPU's one media owner is taken"
    assert not list(placements(A100, 0, [(one, 1)], compute=7)), "no compute slice left"


# ----------------------------------------------------------------------------- counts-only placement


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gpu_inputs(), st.data())
def test_most_placed_is_a_best_partial_placement(
    case: tuple[GpuModel, int, list[Profile]], data: st.DataObject
) -> None:
    model, taken, wanted = case
    groups = sorted(Counter(wanted).items(), key=lambda pn: search_key(pn[0]))
    compute = data.draw(st.integers(0, model.compute_slices))
    media = data.draw(st.integers(0, 1))
    every = [(p.name, s) for p in model.profiles.values() for s in p.starts]
    existing = set(data.draw(st.lists(st.sampled_from(every), max_size=4)))
    limit = {p.name: n for p, n in groups}

    def valid(layout: tuple[Instance, ...]) -> bool:
        ps = [model.profile(i.profile) for i in layout]
        return (
            not occupied_mask(model, layout) & taken
            and all(limit.get(name, 0) >= n for name, n in counts(layout).items())
            and compute + sum(p.compute for p in ps) <= model.compute_slices
            and media + sum(p.media for p in ps) <= 1
        )

    def score(layout: tuple[Instance, ...]) -> tuple[int, int, int]:
        kept = sum((i.profile, i.start) in existing for i in layout)
        free = ~(taken | occupied_mask(model, layout)) & model.full_mask
        return (len(layout), kept, free_quality(model, free))

    got = most_placed(model, taken, groups, compute=compute, media=media, existing=existing)
    assert valid(got)
    assert score(got) == max(score(layout) for layout in every_layout(model) if valid(layout))


def test_most_placed_prefers_existing_instances_then_free_space() -> None:
    one = A100.profile("1g.10gb")
    assert most_placed(A100, 0, [(one, 1)], existing={("1g.10gb", 3)}) == (I("1g.10gb", 3),)
    # without a preference: where the best free space is left
    alone = most_placed(A100, 0, [(one, 1)])
    assert free_quality(A100, ~occupied_mask(A100, alone) & 0xFF) == max(
        free_quality(A100, ~one.mask(s) & 0xFF) for s in one.starts
    )
    # more instances than fit: as many as fit
    assert len(most_placed(A100, 0b1111, [(one, 7)])) == 3


# ----------------------------------------------------------------------------- reachability


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(models, st.data())
def test_enumerate_layouts_is_the_brute_force_walk(model: GpuModel, data: st.DataObject) -> None:
    layout = data.draw(st.sampled_from(every_layout(model)))
    fixed = tuple(sorted(data.draw(st.sets(st.sampled_from(layout))) if layout else ()))
    assert list(enumerate_layouts(model, fixed)) == list(reference_layouts(model, fixed))
    assert tuple(sorted(layout)) in {tuple(sorted(x)) for x in enumerate_layouts(model, fixed)}


def test_enumerate_with_invalid_fixed_yields_nothing() -> None:
    assert list(enumerate_layouts(A100, (I("4g.40gb", 4),))) == []


def test_layout_counts_are_stable() -> None:
    # Observed with the bundled catalog (every partial layout counted, +me variants included, the
    # empty layout too). A change here means the placement rules changed: check docs/mig-models.md.
    a100 = enumerate_layouts(A100)
    assert len(a100) == 2319 and len(enumerate_layouts(A30)) == 76
    assert a100[0] == () and (I("7g.80gb", 0),) in a100
    assert all(len(enumerate_layouts(m)) == 2319 for m in CAT.models if m.memory_slots == 8)
    assert len({tuple(sorted(x)) for x in a100}) == len(a100)
    assert all(not layout_errors(A100, x) for x in a100)


def test_enumeration_is_complete_for_small_layouts() -> None:
    # every valid layout of at most 2 instances, found by brute force, is enumerated
    singles = [I(p.name, s) for p in A100.profiles.values() for s in range(8)]
    brute = {(a,) for a in singles if not layout_errors(A100, [a])}
    brute |= {tuple(sorted((a, b))) for a in singles for b in singles if a < b and not layout_errors(A100, [a, b])}
    enumerated = {tuple(sorted(x)) for x in enumerate_layouts(A100) if 1 <= len(x) <= 2}
    assert enumerated == brute


def test_reachable_counts_keep_the_kept_instances() -> None:
    used = (I("1g.10gb", 1, used=True),)
    reachable = reachable_counts(A100, used)
    for layout in reachable:
        assert dict(layout).get("1g.10gb", 0) >= 1
        assert "4g.40gb" not in dict(layout) and "7g.80gb" not in dict(layout)
    assert (("1g.10gb", 1),) in reachable
    assert (("1g.10gb", 1), ("3g.40gb", 2)) not in reachable, "3g@0 overlaps the used 1g@1"
    assert (("1g.10gb", 1), ("2g.20gb", 1), ("3g.40gb", 1)) in reachable
    assert (("1g.10gb", 2), ("2g.20gb", 1), ("3g.40gb", 1)) in reachable
    # keeping nothing: every layout of the GPU
    assert reachable_counts(A100, ()) == {tuple(sorted(counts(x).items())) for x in every_layout(A100)}
