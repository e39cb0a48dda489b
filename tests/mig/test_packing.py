"""``nos.mig.packing`` (the planner's memoised placement questions) checked against the brute-force
oracle over the plain rules of ``layout`` (``tests.mig.reference``)."""

from __future__ import annotations

from collections import Counter
from functools import lru_cache

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nos.mig.catalog import GpuModel, default_catalog
from nos.mig.geometries import supported_geometries
from nos.mig.layout import Instance, layout_errors, occupied_mask
from nos.mig.packing import Packer, fill_spare
from nos.mig.placement import free_quality
from tests.mig.reference import every_layout, reference_layouts

CAT = default_catalog()
A100 = CAT.model("A100-80GB")
A30 = CAT.model("A30-24GB")
LAYOUTS = {m.name: every_layout(m) for m in (A100, A30)}
FULL = {A100.name: 0xFF, A30.name: 0xF}

# Allowed geometries for the restricted mode (all placeable on an A100-80GB).
A100_GEOMETRIES = [
    {"1g.10gb": 7},
    {"3g.40gb": 2},
    {"4g.40gb": 1, "3g.40gb": 1},
    {"2g.20gb": 3, "1g.10gb": 1},
    {"1g.20gb": 4},
    {"7g.80gb": 1},
    {"3g.40gb": 1, "2g.20gb": 1, "1g.10gb": 2},
]
A30_GEOMETRIES = [{"1g.6gb": 4}, {"2g.12gb": 2}, {"4g.24gb": 1}, {"2g.12gb": 1, "1g.6gb": 2}]


def I(profile: str, start: int, used: bool = False) -> Instance:  # noqa: E743
    return Instance(start, profile, used)


@lru_cache(maxsize=4096)
def _extensions(model: GpuModel, fixed: tuple[Instance, ...]) -> tuple[tuple[Counter[str], int, Counter[str]], ...]:
    """Every layout extending ``fixed``: (counts of the new instances, their mask, counts of all)."""
    out = []
    for ext in reference_layouts(model, fixed):
        new = ext[len(fixed) :]
        out.append((Counter(i.profile for i in new), occupied_mask(model, new), Counter(i.profile for i in ext)))
    return tuple(out)


def brute_feasible(model: GpuModel, fixed: tuple[Instance, ...], wanted: tuple[str, ...], blocked: int) -> bool:
    want = Counter(wanted)
    return any(new == want and not mask & blocked for new, mask, _ in _extensions(model, fixed))


def _plain(model: GpuModel, counts: Counter[str]) -> Counter[str]:
    out: Counter[str] = Counter()
    for name, n in counts.items():
        out[model.profile(name).base] += n
    return out


def within(model: GpuModel, counts: Counter[str], geometries: list[dict]) -> bool:
    """The layout fits within an allowed geometry (variants counted as their plain profile)."""
    return any(not _plain(model, counts) - _plain(model, Counter(g)) for g in geometries)


def brute_feasible_restricted(
    model: GpuModel, fixed: tuple[Instance, ...], wanted: tuple[str, ...], blocked: int, geometries: list[dict]
) -> bool:
    have = Counter(i.profile for i in fixed) + Counter(wanted)
    return within(model, have, geometries) and brute_feasible(model, fixed, wanted, blocked)


@st.composite
def scenarios(draw: st.DrawFn, with_media: bool = True) -> tuple:
    model = draw(st.sampled_from([A100, A30]))
    layout = draw(st.sampled_from(LAYOUTS[model.name]))
    fixed, soft = [], []
    for inst in layout:
        role = draw(st.sampled_from(["fixed", "used", "soft", "gone"]))
        if role == "fixed":
            fixed.append(inst)
        elif role == "used":
            fixed.append(Instance(inst.start, inst.profile, True))
        elif role == "soft":
            soft.append(inst)
    names = [p.name for p in model.profiles.values() if with_media or not p.media]
    wanted = tuple(sorted(draw(st.lists(st.sampled_from(names), max_size=4))))
    blocked = draw(st.one_of(st.just(0), st.integers(0, FULL[model.name])))
    blocked &= ~occupied_mask(model, fixed)
    return model, tuple(sorted(fixed)), tuple(sorted(soft)), wanted, blocked


def _check_result(
    model: GpuModel,
    fixed: tuple[Instance, ...],
    soft: tuple[Instance, ...],
    wanted: tuple[str, ...],
    blocked: int,
    result: tuple[Instance, ...],
) -> None:
    assert layout_errors(model, result) == []
    rest = Counter(result)
    for inst in fixed:
        assert rest[inst] > 0, f"fixed instance {inst} missing or changed"
        rest[inst] -= 1
    assert all(not i.used for i in +rest), "only fixed instances can be in use"
    assert not Counter(wanted) - Counter(i.profile for i in (+rest).elements()), "wanted profiles missing"
    for inst in (+rest).elements():
        if inst not in soft:
            assert not model.profile(inst.profile).mask(inst.start) & blocked, f"{inst} on a blocked slot"


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.booleans())
def test_materialize_agrees_with_feasible_and_brute_force(scenario: tuple, fill: bool) -> None:
    model, fixed, soft, wanted, blocked = scenario
    packer = Packer()
    feasible = packer.feasible(model, fixed, wanted, blocked)
    assert feasible == brute_feasible(model, fixed, wanted, blocked)
    assert (packer.quality(model, fixed, wanted, blocked) is None) == (not feasible)
    result = packer.materialize(model, fixed, wanted, soft=soft, fill=fill, blocked=blocked)
    assert (result is None) == (not feasible)
    if result is None:
        return
    _check_result(model, fixed, soft, wanted, blocked, result)
    if fill:  # nothing more can be added off the blocked slots
        for p in model.fill_order:
            fits = [s for s in p.starts if not layout_errors(model, (*result, Instance(s, p.name)))]
            assert all(p.mask(s) & blocked for s in fits), f"{p.name} still fits in {result}"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.booleans())
def test_restricted_mode_fits_within_an_allowed_geometry(scenario: tuple, fill: bool) -> None:
    model, fixed, soft, wanted, blocked = scenario
    geometries = A100_GEOMETRIES if model is A100 else A30_GEOMETRIES
    packer = Packer({model.name: geometries})
    assert packer.restricted(model) and not packer.restricted(CAT.model("H100-80GB"))
    feasible = packer.feasible(model, fixed, wanted, blocked)
    assert feasible == brute_feasible_restricted(model, fixed, wanted, blocked, geometries)
    result = packer.materialize(model, fixed, wanted, soft=soft, fill=fill, blocked=blocked)
    assert (result is None) == (not feasible)
    if result is None:
        return
    _check_result(model, fixed, soft, wanted, blocked, result)
    assert within(model, Counter(i.profile for i in result), geometries)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.booleans())
def test_supported_geometries_restrict_nothing(scenario: tuple, fill: bool) -> None:
    """The default geometries (every maximal layout the model supports) give the very same answers
    and layouts as no restriction: one default for nos plan, the partitioner and the chart."""
    model, fixed, soft, wanted, blocked = scenario
    free, default = Packer(), Packer({model.name: [dict(g) for g in supported_geometries(model)]})
    assert default.restricted(model)
    assert default.quality(model, fixed, wanted, blocked) == free.quality(model, fixed, wanted, blocked)
    assert default.materialize(model, fixed, wanted, soft=soft, fill=fill, blocked=blocked) == free.materialize(
        model, fixed, wanted, soft=soft, fill=fill, blocked=blocked
    )


def test_spare_slots_of_a_restricted_gpu_may_stay_empty() -> None:
    """One 1g.10gb on an A100 restricted to the original-style full layouts: the GPU holds just
    that instance (it fits within {1g.10gb: 7}); it is not filled up to a whole geometry."""
    packer = Packer({A100.name: A100_GEOMETRIES})
    assert packer.materialize(A100, (), ("1g.10gb",), fill=False) == (I("1g.10gb", 6),)
    assert packer.feasible(A100, (I("3g.40gb", 0, True),), ("1g.10gb", "1g.10gb"))  # within {3g:1, 2g:1, 1g:2}
    assert not packer.feasible(A100, (I("4g.40gb", 0, True),), ("1g.10gb",))  # no geometry has 4g + 1g


def test_quality_prefers_keeping_large_blocks_free() -> None:
    packer = Packer()
    q = packer.quality(A100, (), ("1g.10gb",))
    # a single 1g goes to slot 6: slots 0..5 keep room for a 4g / 3g at 0
    assert q == free_quality(A100, 0xFF & ~(1 << 6))
    assert q > free_quality(A100, 0xFF & ~1)
    assert packer.materialize(A100, (), ("1g.10gb",), fill=False) == (I("1g.10gb", 6),)
    assert packer.materialize(A100, (), ("1g.10gb",)) == (I("4g.40gb", 0), I("2g.20gb", 4), I("1g.10gb", 6))


def test_infeasible_requests() -> None:
    packer = Packer()
    assert not packer.feasible(A100, (), ("4g.40gb", "4g.40gb"))
    assert not packer.feasible(A100, (), ("3g.40gb", "4g.40gb", "1g.10gb"))
    assert not packer.feasible(A100, (), ("1g.10gb+me", "1g.10gb+me"))
    assert not packer.feasible(A100, (I("1g.10gb", 1, True),), ("4g.40gb",))
    assert not packer.feasible(A100, (), ("4g.40gb",), blocked=1 << 3)
    assert packer.feasible(A100, (), ("3g.40gb",), blocked=1 << 3)
    assert packer.materialize(A100, (), ("3g.40gb",), blocked=1 << 3, fill=False) == (I("3g.40gb", 4),)
    assert packer.materialize(A100, (I("1g.10gb", 1, True),), ("4g.40gb",)) is None


def test_materialize_keeps_soft_instances_where_possible() -> None:
    soft = (I("1g.10gb", 1), I("3g.40gb", 4))
    fixed = (I("1g.10gb", 0, True),)
    result = Packer().materialize(A100, fixed, ("2g.20gb",), soft=soft, fill=False)
    assert result == (I("1g.10gb", 0, True), I("1g.10gb", 1), I("2g.20gb", 2), I("3g.40gb", 4))
    # a 3g wanted where only slots 4..7 are possible: the soft 3g@4 is reused, nothing destroyed
    # room for the 1g.20gb only by destroying one soft 1g: exactly one is destroyed
    soft = (I("1g.10gb", 4), I("1g.10gb", 5), I("1g.10gb", 6))
    result = Packer().materialize(A100, (I("4g.40gb", 0, True),), ("1g.20gb",), soft=soft, fill=False)
    assert result == (I("4g.40gb", 0, True), I("1g.10gb", 4), I("1g.10gb", 5), I("1g.20gb", 6))


def test_fill_spare() -> None:
    assert fill_spare(A100, ()) == (I("7g.80gb", 0),)
    assert fill_spare(A30, ()) == (I("4g.24gb", 0),)
    # slot 0 unavailable (blocked): the largest that fits is a 3g at 4, then a 2g at 2 and a 1g at 1
    assert fill_spare(A100, (), blocked=1) == (I("1g.10gb", 1), I("2g.20gb", 2), I("3g.40gb", 4))
    used = (I("1g.10gb", 0, True),)
    filled = fill_spare(A100, used)
    assert filled == (I("1g.10gb", 0, True), I("1g.10gb", 1), I("2g.20gb", 2), I("3g.40gb", 4))
    assert layout_errors(A100, filled) == []
    # already full: unchanged
    full = (I("4g.40gb", 0), I("3g.40gb", 4))
    assert fill_spare(A100, full) == full
    # never +me, never on blocked slots
    for blocked in range(256):
        out = fill_spare(A100, (), blocked=blocked)
        assert not layout_errors(A100, out)
        assert not occupied_mask(A100, out) & blocked
        assert all(not A100.profile(i.profile).media for i in out)
