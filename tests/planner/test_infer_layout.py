"""``nos.planner.cluster.infer_layout`` (placements from status counts) against the brute-force oracle."""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nos.contract.annotations import GpuAnnotations
from nos.mig.catalog import GpuModel, default_catalog
from nos.mig.layout import layout_errors
from nos.planner.cluster import infer_layout
from tests.mig.reference import every_layout

MODELS = [m for m in default_catalog().models if m.verified]


@st.composite
def status_counts(draw: st.DrawFn) -> tuple[GpuModel, Counter[tuple[str, bool]]]:
    """Counts of a real layout (with some instances in use), sometimes with one more instance."""
    model = draw(st.sampled_from(MODELS))
    layout = draw(st.sampled_from(every_layout(model)))
    counts: Counter[tuple[str, bool]] = Counter((i.profile, draw(st.booleans())) for i in layout)
    if draw(st.booleans()):
        counts[(draw(st.sampled_from(list(model.profiles))), draw(st.booleans()))] += 1
    return model, counts


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(status_counts())
def test_inferred_layout_matches_the_counts_and_blocks_every_slot_a_used_instance_may_hold(
    case: tuple[GpuModel, Counter[tuple[str, bool]]],
) -> None:
    model, counts = case
    got = infer_layout(model, GpuAnnotations(counts=counts))
    totals = Counter({p: 0 for p, _ in counts})
    for (p, _), n in counts.items():
        totals[p] += n
    used_profiles = {p for (p, used), n in counts.items() if used and n}
    matching = [x for x in every_layout(model) if Counter(i.profile for i in x) == +totals]
    if not matching:
        assert got is None
        return
    assert got is not None
    layout, blocked = got
    assert not layout_errors(model, layout)
    assert Counter((i.profile, i.used) for i in layout) == +counts
    # a used instance of profile p may be any of the p instances of any matching layout
    expected = 0
    for x in matching:
        for i in x:
            if i.profile in used_profiles:
                expected |= model.profile(i.profile).mask(i.start)
    assert blocked == expected


def test_too_many_placements_block_every_slot() -> None:
    model = default_catalog().model("A100-80GB")
    layout, blocked = infer_layout(model, GpuAnnotations(counts=Counter({("1g.10gb", True): 1})), limit=2) or ((), 0)
    assert len(layout) == 1 and blocked == model.full_mask
