from __future__ import annotations

from collections import Counter

from nos.agent.apply import Applier
from nos.agent.reconcile import Desired, GpuOps, in_use_gi_ids, plan_gpu
from nos.gpu.port import GpuInstanceInfo
from nos.gpu.simulated import SimulatedNvml
from nos.mig.catalog import default_catalog
from nos.mig.layout import Instance
from tests.agent.helpers import provision

A100 = default_catalog().model("A100-80GB")


def I(spec: str) -> Instance:  # noqa: E743 - "1g.10gb@3", "1g.10gb@3*" = in use
    profile, start = spec.rstrip("*").split("@")
    return Instance(int(start), profile, spec.endswith("*"))


def placed(*specs: str) -> Desired:
    inst = tuple(sorted(I(s) for s in specs))
    return Desired(dict(Counter(i.profile for i in inst)), inst)


def gpu_with(*specs: str, used: tuple[str, ...] = ()) -> tuple[SimulatedNvml, set[int]]:
    """An A100 with these instances; the ``used`` ones run a process (so NVML refuses to destroy them)."""
    nvml = SimulatedNvml.new("A100-80GB")
    in_use = set()
    for s in specs:
        gi = provision(nvml, 0, I(s).profile, I(s).start)
        if s in used:
            nvml.set_busy(0, gi.gi_id)
            in_use.add(gi.gi_id)
    return nvml, in_use


def gi_at(nvml: SimulatedNvml, start: int) -> int:
    [gi] = [g.gi_id for g in nvml.gpu_instances(0) if g.start == start]
    return gi


def plan(nvml: SimulatedNvml, desired: Desired, in_use: set[int]) -> GpuOps:
    return plan_gpu(A100, 0, desired, nvml.gpu_instances(0), in_use)


def run(nvml: SimulatedNvml, p: GpuOps) -> None:
    result = Applier(nvml).apply(p.ops)
    assert not result.failures, result.failures


def test_reachable_placement_spec_is_reached_exactly_keeping_wanted_instances() -> None:
    nvml, in_use = gpu_with("1g.10gb@0", "1g.10gb@1", "2g.20gb@2", "3g.40gb@4")
    kept = {g.gi_id for g in nvml.gpu_instances(0) if g.start in (0, 4)}
    doomed = gi_at(nvml, 2)
    p = plan(nvml, placed("1g.10gb@0", "1g.10gb@1", "1g.10gb@2", "1g.10gb@3", "3g.40gb@4"), in_use)
    assert [str(o).split(":")[1].strip() for o in p.ops] == [
        f"destroy 2g.20gb@2 (gi {doomed})",
        "create 1g.10gb@2",
        "create 1g.10gb@3",
    ]
    assert p.skipped == ()
    run(nvml, p)
    assert nvml.layout(0) == tuple(
        sorted(I(s) for s in ("1g.10gb@0", "1g.10gb@1", "1g.10gb@2", "1g.10gb@3", "3g.40gb@4"))
    )
    # 1g.10gb@1 was kept too, and the untouched instances keep their ids (never recreated)
    assert kept <= {g.gi_id for g in nvml.gpu_instances(0)}
    assert not plan(nvml, placed(*(f"{i.profile}@{i.start}" for i in nvml.layout(0))), set()).ops


def test_in_use_instance_is_kept_and_conflicting_spec_part_skipped_with_reason() -> None:
    nvml, in_use = gpu_with("1g.10gb@5", "1g.10gb@0", used=("1g.10gb@5",))
    p = plan(nvml, placed("3g.40gb@0", "3g.40gb@4"), in_use)
    assert all(o.start != 5 for o in p.ops if o.kind == "destroy")
    assert [(s.item, s.reason) for s in p.skipped] == [
        ("3g.40gb@4", "overlaps in-use 1g.10gb@5"),
        ("in-use 1g.10gb@5", "in use, kept although the spec does not want it"),
    ]
    run(nvml, p)
    assert nvml.layout(0) == (I("3g.40gb@0"), I("1g.10gb@5*"))


def test_spec_matching_in_use_instance_needs_nothing() -> None:
    nvml, in_use = gpu_with("7g.80gb@0", used=("7g.80gb@0",))
    p = plan(nvml, placed("7g.80gb@0"), in_use)
    assert p.ops == () and p.skipped == ()
    assert p.target == (Instance(0, "7g.80gb", True),)


def test_counts_only_spec_keeps_existing_and_in_use_and_places_the_rest() -> None:
    nvml, in_use = gpu_with("1g.10gb@1", "1g.10gb@6", "2g.20gb@4", used=("1g.10gb@1",))
    # 4g needs slots 0-3, blocked by the in-use 1g at 1: three 1g + 2g + 1g reachable around it
    p = plan(nvml, Desired({"1g.10gb": 3, "2g.20gb": 1, "4g.40gb": 1}), in_use)
    assert [(s.item, s.reason) for s in p.skipped] == [
        ("1 x 4g.40gb", "no room: @0 overlaps in-use 1g.10gb@1"),
    ]
    run(nvml, p)
    got = Counter(i.profile for i in nvml.layout(0))
    assert got == Counter({"1g.10gb": 3, "2g.20gb": 1})
    assert {g.gi_id for g in nvml.gpu_instances(0)} >= in_use
    # the free 2g@4 and 1g@6 were kept: only one new instance was created
    assert [o.kind for o in p.ops] == ["create"]


def test_counts_only_spec_on_empty_gpu_uses_exact_search() -> None:
    # 3 x 2g + 1 x 1g.10gb needs the 1g at slot 6: a greedy first-fit of the 1g at 0 fails
    nvml, _ = gpu_with()
    p = plan(nvml, Desired({"1g.10gb": 1, "2g.20gb": 3}), set())
    assert p.skipped == ()
    run(nvml, p)
    assert nvml.layout(0) == (I("2g.20gb@0"), I("2g.20gb@2"), I("2g.20gb@4"), I("1g.10gb@6"))


def test_counts_beyond_the_maximum_and_unknown_profiles_are_skipped() -> None:
    nvml, _ = gpu_with()
    p = plan(nvml, Desired({"1g.10gb": 9, "1g.5gb": 1}), set())
    reasons = {s.item: s.reason for s in p.skipped}
    assert reasons == {
        "1 x 1g.5gb": "profile unknown on A100-80GB",
        "2 x 1g.10gb": "exceeds the maximum of 7 per GPU",
    }
    run(nvml, p)
    assert Counter(i.profile for i in nvml.layout(0)) == {"1g.10gb": 7}


def test_placement_spec_validated_against_catalog() -> None:
    nvml, _ = gpu_with()
    p = plan(nvml, placed("3g.40gb@2", "1g.5gb@0", "2g.20gb@4", "1g.20gb@4"), set())
    reasons = {s.item: s.reason for s in p.skipped}
    assert reasons["3g.40gb@2"].startswith("cannot start at slot 2")
    assert reasons["1g.5gb@0"] == "profile unknown on A100-80GB"
    assert reasons["2g.20gb@4"] == "overlaps 1g.20gb@4 (also in the spec)"
    assert [str(i) for i in p.target] == ["1g.20gb@4"]


def test_driver_profile_list_restricts_the_spec() -> None:
    nvml, _ = gpu_with()
    p = plan_gpu(A100, 0, placed("1g.10gb+me@0"), nvml.gpu_instances(0), set(), available={"1g.10gb"})
    assert [s.reason for s in p.skipped] == ["profile not offered by the driver"]


def test_half_created_instances_destroyed_first_or_completed_when_wanted() -> None:
    nvml, _ = gpu_with("1g.10gb@6")
    unwanted = provision(nvml, 0, "2g.20gb", 0, complete=False)
    wanted = provision(nvml, 0, "2g.20gb", 2, complete=False)
    p = plan(nvml, placed("2g.20gb@2", "3g.40gb@4"), set())
    assert [(o.kind, o.gi_id if o.kind != "create" else None, o.start) for o in p.ops] == [
        ("destroy", unwanted.gi_id, 0),
        ("destroy", gi_at(nvml, 6), 6),
        ("complete", wanted.gi_id, 2),
        ("create", None, 4),
    ]
    run(nvml, p)
    assert nvml.layout(0) == (I("2g.20gb@2"), I("3g.40gb@4"))


def test_empty_spec_destroys_free_instances_only() -> None:
    nvml, in_use = gpu_with("3g.40gb@0", "3g.40gb@4", used=("3g.40gb@4",))
    p = plan(nvml, Desired(), in_use)
    assert [(o.kind, o.start) for o in p.ops] == [("destroy", 0)]


def test_in_use_ids_from_devices_and_busy_processes() -> None:
    gis = [
        GpuInstanceInfo(0, 7, "1g.10gb", 0, 1, (0,), ("MIG-a",)),
        GpuInstanceInfo(0, 9, "1g.10gb", 1, 1, (0,), ("MIG-b",)),
        GpuInstanceInfo(0, 11, "1g.10gb", 2, 1, (0,), ("MIG-c",)),
    ]
    assert in_use_gi_ids(gis, {"MIG-b", "MIG-zzz"}, {11}) == {9, 11}


def test_plan_is_deterministic_whatever_the_input_order() -> None:
    nvml, in_use = gpu_with("1g.10gb@0", "1g.10gb@3", "2g.20gb@4", used=("1g.10gb@3",))
    actual = nvml.gpu_instances(0)
    d = Desired({"1g.20gb": 2, "1g.10gb": 2})
    a = plan_gpu(A100, 0, d, actual, in_use)
    b = plan_gpu(A100, 0, Desired(dict(reversed(list(d.counts.items())))), list(reversed(actual)), in_use)
    assert a == b
