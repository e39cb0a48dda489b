"""``nos.mig.placement`` (the one placement search) against the searches it replaces."""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nos.agent.reconcile import _Search
from nos.mig import layout as old_layout
from nos.mig.catalog import GpuModel, Profile, default_catalog
from nos.mig.layout import occupied_mask
from nos.mig.packing import _order, _placements
from nos.mig.placement import enumerate_layouts, fits_counts, groups_of, most_placed, placements

CAT = default_catalog()
MODELS = [m for m in CAT.models if m.verified]

models = st.sampled_from(MODELS)


@st.composite
def gpu_inputs(draw: st.DrawFn) -> tuple[GpuModel, int, list[Profile]]:
    model = draw(models)
    taken = draw(st.integers(0, model.full_mask))
    profiles = list(model.profiles.values())
    wanted = draw(st.lists(st.sampled_from(profiles), max_size=6))
    return model, taken, wanted


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(gpu_inputs())
def test_exact_placements_match_the_packers_old_search(case: tuple[GpuModel, int, list[Profile]]) -> None:
    model, taken, wanted = case
    assume(fits_counts(model, wanted))  # the packer checks counts before it searches
    target = _order(wanted)
    assert list(placements(model, taken, groups_of(target))) == list(_placements(model, taken, target))


class _G:
    def __init__(self, model: GpuModel) -> None:
        self.model = model


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(gpu_inputs(), st.data())
def test_most_placed_matches_the_agents_old_search(
    case: tuple[GpuModel, int, list[Profile]], data: st.DataObject
) -> None:
    model, taken, wanted = case
    order = {p: k for k, p in enumerate(_order(wanted))}
    groups = sorted(Counter(wanted).items(), key=lambda pn: order[pn[0]])
    compute = data.draw(st.integers(0, model.compute_slices))
    media = data.draw(st.integers(0, 1))
    every = [(p.name, s) for p in model.profiles.values() for s in p.starts]
    existing = set(data.draw(st.lists(st.sampled_from(every), max_size=4)))
    old = _Search(_G(model), groups, existing)  # type: ignore[arg-type]
    old.run(taken, compute, media)
    new = most_placed(model, taken, groups, compute=compute, media=media, existing=existing)
    assert new == old.best


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(models, st.data())
def test_enumerate_layouts_match_the_old_walk(model: GpuModel, data: st.DataObject) -> None:
    every = old_layout.enumerate_layouts(model)
    fixed = data.draw(st.sampled_from(list(every)))
    fixed = tuple(fixed[: data.draw(st.integers(0, len(fixed)))])
    assert list(enumerate_layouts(model, fixed)) == list(old_layout.enumerate_layouts(model, fixed))
    assert occupied_mask(model, fixed) >= 0
