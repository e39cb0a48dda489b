"""Physical layout rules of ``nos.mig.layout``, checked against the facts of mig-catalog.md."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nos.mig.catalog import default_catalog
from nos.mig.layout import Instance, MigGpu, counts, enumerate_layouts, layout_errors, occupied_mask

CAT = default_catalog()
A100 = CAT.model("A100-80GB")
A30 = CAT.model("A30-24GB")
A100_LAYOUTS = tuple(enumerate_layouts(A100))
A30_LAYOUTS = tuple(enumerate_layouts(A30))


def I(profile: str, start: int, used: bool = False) -> Instance:  # noqa: E743
    return Instance(start, profile, used)


def test_valid_layouts_have_no_errors() -> None:
    for layout in [
        (I("7g.80gb", 0),),
        (I("4g.40gb", 0), I("3g.40gb", 4)),
        (I("3g.40gb", 0), I("3g.40gb", 4)),
        (I("4g.40gb", 0), I("2g.20gb", 4), I("1g.10gb", 6)),
        tuple(I("1g.10gb", s) for s in range(7)),
        tuple(I("1g.20gb", s) for s in (0, 2, 4, 6)),
        (I("2g.20gb", 0), I("2g.20gb", 2), I("3g.40gb", 4)),
        (I("1g.10gb+me", 3), I("1g.10gb", 0), I("2g.20gb", 4), I("1g.20gb", 6)),
        (),
    ]:
        assert layout_errors(A100, layout) == [], layout


def test_4g_must_start_at_0() -> None:
    errors = layout_errors(A100, [I("4g.40gb", 4)])
    assert errors and "cannot start at slot 4" in errors[0]


def test_used_1g_at_slot_1_forbids_4g() -> None:
    gpu = MigGpu(A100, (I("1g.10gb", 1, used=True),))
    assert gpu.free_starts("4g.40gb") == []
    assert not gpu.can_add("4g.40gb")
    assert gpu.free_starts("3g.40gb") == [4]
    assert any("overlaps" in e for e in layout_errors(A100, [I("1g.10gb", 1), I("4g.40gb", 0)]))


def test_slot_7_only_by_instances_of_size_2_or_more() -> None:
    assert layout_errors(A100, [I("1g.10gb", 7)])
    assert layout_errors(A100, [I("1g.10gb+me", 7)])
    assert layout_errors(A100, [I("2g.20gb", 6)]), "2g starts at 0, 2, 4 only"
    assert not layout_errors(A100, [I("1g.20gb", 6)])
    assert not layout_errors(A100, [I("3g.40gb", 4)])
    assert not layout_errors(A100, [I("7g.80gb", 0)])
    for layout in A100_LAYOUTS:
        for inst in layout:
            if inst.start <= 7 < inst.start + A100.profile(inst.profile).slots:
                assert A100.profile(inst.profile).slots >= 2


def test_overlap() -> None:
    errors = layout_errors(A100, [I("3g.40gb", 0), I("2g.20gb", 2)])
    assert errors == ["2g.20gb@2 overlaps 3g.40gb@0"]
    assert layout_errors(A100, [I("1g.10gb", 3), I("1g.10gb", 3)])


def test_max_counts() -> None:
    # 8 x 1g.10gb would also overflow the slots; 4 x 2g never fit the 3 starts
    errors = layout_errors(A100, [I("2g.20gb", s) for s in (0, 2, 4)] + [I("2g.20gb", 4)])
    assert any("exceeds the maximum of 3" in e for e in errors)
    errors = layout_errors(A100, [I("1g.10gb+me", 0), I("1g.10gb+me", 1)])
    assert any("exceeds the maximum of 1" in e for e in errors)


def test_compute_slices() -> None:
    # 3 x 2g (6 compute) + 1g.20gb@6 (1) = 7 fits
    assert not layout_errors(A100, [I("2g.20gb", 0), I("2g.20gb", 2), I("2g.20gb", 4), I("1g.20gb", 6)])
    # with the bundled start tables the compute limit never binds alone; it is still reported
    errors = layout_errors(A100, [I("4g.40gb", 0), I("3g.40gb", 4), I("1g.10gb", 4)])
    assert any("compute slices exceed" in e for e in errors)
    errors = layout_errors(A30, [I("2g.12gb", 0), I("1g.6gb", 2), I("1g.6gb", 3), I("1g.6gb", 2)])
    assert any("compute slices exceed the GPU's 4" in e for e in errors)


def test_one_media_instance() -> None:
    errors = layout_errors(A30, [I("1g.6gb+me", 0), I("2g.12gb+me", 2)])
    assert errors == ["more than one instance owns the media engines"]
    assert not layout_errors(A30, [I("1g.6gb+me", 0), I("1g.6gb", 1), I("2g.12gb", 2)])


def test_unknown_profile() -> None:
    assert layout_errors(A100, [I("3g.20gb", 0)]) == ["A100-80GB has no MIG profile 3g.20gb"]


def test_a30_rules() -> None:
    assert not layout_errors(A30, [I("4g.24gb", 0)])
    assert not layout_errors(A30, [I("2g.12gb", 0), I("2g.12gb", 2)])
    assert not layout_errors(A30, [I("1g.6gb", s) for s in range(4)])
    assert layout_errors(A30, [I("2g.12gb", 1)])
    assert layout_errors(A30, [I("1g.6gb", 4)])
    assert layout_errors(A30, [I("4g.24gb", 0), I("1g.6gb", 0)])
    assert layout_errors(A30, [I("7g.80gb", 0)])
    gpu = MigGpu(A30, (I("1g.6gb", 1, used=True),))
    assert gpu.free_starts("2g.12gb") == [2]
    assert gpu.free_starts("4g.24gb") == []
    assert gpu.free_starts("1g.6gb") == [0, 2, 3]


def test_free_starts_respects_counts_and_media() -> None:
    full = MigGpu(A100, tuple(I("1g.10gb", s) for s in range(6)))
    assert full.free_starts("1g.10gb") == [6]
    assert full.free_starts("1g.20gb") == [6], "6 + 1 = 7 compute slices: still fits"
    assert full.free_starts("2g.20gb") == [], "2g cannot start at 6"
    gpu = MigGpu(A100, (I("1g.10gb+me", 0),))
    assert gpu.free_starts("1g.10gb+me") == [], "one media instance per GPU"
    assert gpu.free_starts(A100.profile("3g.40gb")) == [4]
    assert MigGpu(A100).free_starts("1g.20gb") == [0, 2, 4, 6]


def test_with_instance_and_free_slots() -> None:
    gpu = MigGpu(A100).with_instance("3g.40gb", 4, used=True).with_instance("1g.10gb", 0)
    assert gpu.instances == (I("1g.10gb", 0), I("3g.40gb", 4, True))
    assert gpu.free_slots() == [1, 2, 3]
    assert gpu.occupied == 0b11110001
    with pytest.raises(ValueError, match="overlaps"):
        gpu.with_instance("2g.20gb", 4)


def test_reachable_layouts_keep_used_instances() -> None:
    gpu = MigGpu(A100, (I("1g.10gb", 1, used=True), I("3g.40gb", 4), I("1g.10gb", 0)))
    reachable = gpu.reachable_layouts()
    assert reachable, "the current layout itself is reachable"
    for layout in reachable:
        assert dict(layout).get("1g.10gb", 0) >= 1
        assert "4g.40gb" not in dict(layout) and "7g.80gb" not in dict(layout)
    assert (("1g.10gb", 1),) in reachable
    assert (("1g.10gb", 1), ("3g.40gb", 2)) not in reachable, "3g@0 overlaps the used 1g@1"
    assert (("1g.10gb", 1), ("2g.20gb", 1), ("3g.40gb", 1)) in reachable
    assert (("1g.10gb", 2), ("2g.20gb", 1), ("3g.40gb", 1)) in reachable
    # keeping nothing: every layout of the GPU
    assert len(gpu.reachable_layouts(keep=())) == len({tuple(sorted(counts(x).items())) for x in A100_LAYOUTS})


def test_enumerate_with_invalid_fixed_yields_nothing() -> None:
    assert list(enumerate_layouts(A100, (I("4g.40gb", 4),))) == []


def test_layout_counts_are_stable() -> None:
    # Observed with the bundled catalog (every partial layout counted, +me variants included, the
    # empty layout too). A change here means the placement rules changed: check mig-catalog.md.
    assert len(A100_LAYOUTS) == 2319
    assert len(A30_LAYOUTS) == 76
    assert () in A100_LAYOUTS and (I("7g.80gb", 0),) in A100_LAYOUTS
    assert all(len(list(enumerate_layouts(m))) == 2319 for m in CAT.models if m.memory_slots == 8)


def test_enumeration_is_complete_for_small_layouts() -> None:
    # every valid layout of at most 2 instances, found by brute force, is enumerated
    singles = [I(p.name, s) for p in A100.profiles.values() for s in range(8)]
    brute = {(a,) for a in singles if not layout_errors(A100, [a])}
    brute |= {tuple(sorted((a, b))) for a in singles for b in singles if a < b and not layout_errors(A100, [a, b])}
    enumerated = {tuple(sorted(x)) for x in A100_LAYOUTS if 1 <= len(x) <= 2}
    assert enumerated == brute


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(A100_LAYOUTS + A30_LAYOUTS), st.data())
def test_enumerated_layouts_are_valid_and_unique(layout: tuple[Instance, ...], data: st.DataObject) -> None:
    model = A30 if layout in A30_LAYOUTS and layout not in A100_LAYOUTS else A100
    assert layout_errors(model, layout) == []
    # extending any valid layout: every result valid, contains it, no duplicates
    fixed = tuple(data.draw(st.sets(st.sampled_from(layout))) if layout else ())
    fixed = tuple(sorted(fixed))
    seen = set()
    for ext in enumerate_layouts(model, fixed):
        assert layout_errors(model, ext) == []
        assert ext[: len(fixed)] == fixed
        key = tuple(sorted(ext))
        assert key not in seen
        seen.add(key)
    assert tuple(sorted(layout)) in seen


def test_enumerate_yields_no_duplicates_overall() -> None:
    assert len({tuple(sorted(x)) for x in A100_LAYOUTS}) == len(A100_LAYOUTS)
    assert len({tuple(sorted(x)) for x in A30_LAYOUTS}) == len(A30_LAYOUTS)
    assert all(not layout_errors(A100, x) for x in A100_LAYOUTS)
    assert all(not layout_errors(A30, x) for x in A30_LAYOUTS)


def test_occupied_mask_and_counts() -> None:
    layout = (I("4g.40gb", 0), I("1g.10gb", 6), I("1g.10gb", 5))
    assert occupied_mask(A100, layout) == 0b01101111
    assert counts(layout) == Counter({"4g.40gb": 1, "1g.10gb": 2})
    assert str(I("1g.10gb", 5, True)) == "1g.10gb@5*"
    assert I("1g.10gb", 5, True).freed() == I("1g.10gb", 5)
