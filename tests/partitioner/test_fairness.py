"""Aging and reservation of a draining GPU (``nos.partitioner.fairness``)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from nos.config import FairnessConfig as Fairness
from nos.contract.annotations import decode_spec
from nos.mig.layout import Instance
from nos.mig.packing import Packer
from nos.partitioner.fairness import LEVELS, apply, effective_priority, waited
from nos.planner.checker import check_plan
from nos.planner.cluster import build_cluster
from nos.planner.planner import plan_state
from tests.planner.factories import node, pod

ON = Fairness(aging_step_seconds=600, reserve_after_seconds=1800)
AGING = Fairness(aging_step_seconds=600)
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC).timestamp()


def _at(hours_ago: float) -> str:
    return datetime.fromtimestamp(NOW - hours_ago * 3600, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@given(st.integers(-10, 10), st.integers(-10, 10), st.floats(0, 1e7), st.floats(0, 1e7), st.floats(1, 1e4))
def test_aging_keeps_priority_classes_and_favours_the_older(
    p1: int, p2: int, w1: float, w2: float, step: float
) -> None:
    e1, e2 = effective_priority(p1, w1, step), effective_priority(p2, w2, step)
    if p1 != p2:
        assert (e1 > e2) == (p1 > p2)  # a class never overtakes another, however long it waits
    elif w1 > w2:
        assert e1 >= e2
    assert p1 * LEVELS <= e1 < (p1 + 1) * LEVELS


def test_waited_reads_creation_timestamps() -> None:
    assert waited(_at(2), NOW) == 7200
    assert waited("not a time", NOW) == 0 and waited(_at(-1), NOW) == 0


def test_aged_pod_is_planned_before_younger_small_ones() -> None:
    # one empty GPU: three young 2g.20gb pods fill it if taken first; the old 7g.80gb pod needs all of it
    nodes = [node("n", status={0: ()})]
    pods = [pod("big", "7g.80gb", created=_at(3))] + [pod(f"s{i}", "2g.20gb", created=_at(0.1)) for i in range(3)]
    state = build_cluster(nodes, pods)
    contract = plan_state(state)
    assert {p.pod for p in contract.placed} == {"default/s0", "default/s1", "default/s2"}
    aged = apply(state, NOW, AGING)
    plan = plan_state(aged)
    assert [p.pod for p in plan.placed] == ["default/big"] and not check_plan(aged, plan)
    # real priorities still rule: a younger pod of a higher class goes first
    urgent = build_cluster(nodes, [*pods, pod("vip", "4g.40gb", priority=5, created=_at(0))])
    placed = plan_state(apply(urgent, NOW, AGING)).placed
    assert placed[0].pod == "default/vip"


def test_reservation_drains_the_gpu_closest_to_fitting() -> None:
    used_1g = Instance(6, "1g.10gb", True)
    nodes = [
        node(
            "n",
            gpus=2,
            status={
                # GPU 0: a 3g.40gb in use at 0 and free 1g.10gb instances on the right
                0: (Instance(0, "3g.40gb", True), Instance(4, "1g.10gb"), Instance(5, "1g.10gb"), used_1g),
                # GPU 1: one 1g.10gb in use at 6, free instances elsewhere: the closest to a whole GPU
                1: (Instance(0, "4g.40gb"), Instance(4, "1g.10gb"), Instance(5, "1g.10gb"), used_1g),
            },
        )
    ]
    old = pod("whole", "7g.80gb", created=_at(2))
    young = [pod(f"y{i}", "2g.20gb", created=_at(0)) for i in range(3)]
    state = build_cluster(nodes, [old, *young])
    # without reservation the young 2g.20gb pods go to GPU 1's free space, which never drains
    free_plan = plan_state(apply(state, NOW, AGING))
    assert any(p.gpu == 1 for p in free_plan.placed)
    reserved = apply(state, NOW, ON)
    gpu1 = reserved.nodes["n"].gpus[1]
    assert gpu1.instances == (used_1g,) and gpu1.blocked == 0xFF  # free ones dropped, no new instance
    plan = plan_state(reserved)
    assert not check_plan(reserved, plan)
    assert all(p.gpu != 1 for p in plan.placed) and "default/whole" in {u.pod for u in plan.unplaced}
    # the spec written for GPU 1 keeps only the in-use instance: the agent destroys the free ones
    assert plan.nodes["n"].gpus[1].planned == (used_1g,) and plan.nodes["n"].write
    assert decode_spec(plan.nodes["n"].annotations).gpus[1].profile_counts() == {"1g.10gb": 1}
    # a young pod never gets a reservation, and nothing is reserved once the old pod fits
    assert apply(build_cluster(nodes, young), NOW, ON).nodes["n"].gpus[1].blocked != 0xFF
    # a region whose in-use instance serves a profile other pods wait for cannot drain (kube-scheduler
    # binds the freed device to one of them at once): no reservation there
    backlogged = apply(build_cluster(nodes, [old, *young, pod("one", "1g.10gb")]), NOW, ON)
    assert all(g.blocked != 0xFF for g in backlogged.nodes["n"].gpus)
    drained = [node("n", gpus=2, status={0: (Instance(0, "3g.40gb", True),), 1: (Instance(0, "7g.80gb"),)})]
    fits = apply(build_cluster(drained, [old, *young]), NOW, ON)
    assert next(p.pod for p in plan_state(fits).placed) == "default/whole"
    assert Packer().feasible(fits.nodes["n"].gpus[1].model, (), ("7g.80gb",))


def test_off_by_default_means_the_same_state() -> None:
    state = build_cluster([node("n", status={0: ()})], [pod("p", created=_at(5))])
    assert apply(state, NOW, Fairness()) is state
