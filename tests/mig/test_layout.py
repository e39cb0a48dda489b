"""Physical layout rules of ``nos.mig.layout``, checked against the facts of mig-catalog.md."""

from __future__ import annotations

from collections import Counter

from nos.mig.catalog import GpuModel, default_catalog
from nos.mig.layout import Instance, counts, layout_errors, occupied_mask
from nos.mig.placement import enumerate_layouts

CAT = default_catalog()
A100 = CAT.model("A100-80GB")
A30 = CAT.model("A30-24GB")
A100_LAYOUTS = tuple(enumerate_layouts(A100))
A30_LAYOUTS = tuple(enumerate_layouts(A30))


def I(profile: str, start: int, used: bool = False) -> Instance:  # noqa: E743
    return Instance(start, profile, used)


def free_starts(model: GpuModel, instances: tuple[Instance, ...], profile: str) -> list[int]:
    """Start slots where ``profile`` could be added next to ``instances``, by the plain rules."""
    p = model.profile(profile)
    return [s for s in p.starts if not layout_errors(model, (*instances, Instance(s, p.name)))]


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
    used = (I("1g.10gb", 1, used=True),)
    assert free_starts(A100, used, "4g.40gb") == []
    assert free_starts(A100, used, "3g.40gb") == [4]
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
    used = (I("1g.6gb", 1, used=True),)
    assert free_starts(A30, used, "2g.12gb") == [2]
    assert free_starts(A30, used, "4g.24gb") == []
    assert free_starts(A30, used, "1g.6gb") == [0, 2, 3]


def test_free_starts_respects_counts_and_media() -> None:
    full = tuple(I("1g.10gb", s) for s in range(6))
    assert free_starts(A100, full, "1g.10gb") == [6]
    assert free_starts(A100, full, "1g.20gb") == [6], "6 + 1 = 7 compute slices: still fits"
    assert free_starts(A100, full, "2g.20gb") == [], "2g cannot start at 6"
    media = (I("1g.10gb+me", 0),)
    assert free_starts(A100, media, "1g.10gb+me") == [], "one media instance per GPU"
    assert free_starts(A100, media, "3g.40gb") == [4]
    assert free_starts(A100, (), "1g.20gb") == [0, 2, 4, 6]


def test_occupied_mask_and_counts() -> None:
    layout = (I("4g.40gb", 0), I("1g.10gb", 6), I("1g.10gb", 5))
    assert occupied_mask(A100, layout) == 0b01101111
    assert counts(layout) == Counter({"4g.40gb": 1, "1g.10gb": 2})
    assert str(I("1g.10gb", 5, True)) == "1g.10gb@5*"
    assert I("1g.10gb", 5, True).freed() == I("1g.10gb", 5)
