"""Profile shares: a profile below its share of the demand keeps its free devices against other
profiles' pods, gets spare slots no pod can use, and never delays a pod for a device that does not
exist yet; holds are never reported, written or told about as pods."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nos.mig.layout import Instance as I
from nos.planner import shares
from nos.planner.checker import check_plan
from nos.planner.cluster import build_cluster
from nos.planner.planner import plan_state
from tests.planner.factories import node, pod

R4G, R7G = "nvidia.com/mig-4g.40gb", "nvidia.com/mig-7g.80gb"


def running(name: str, profile: str, on: str) -> dict[str, Any]:
    return pod(name, profile, node_name=on)


def ratchet() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Seven A100s: one with a free 4g+3g (its pods just finished), two running a 4g and a 3g, one a
    whole-GPU pod, three a 1g.10gb at slot 0 (no 4g or 7g fits there); one whole-GPU pod pending.
    Demand in compute slices: 4g 8, 3g 6, 7g 14 (one running, one pending), 1g 3: 31 of 49, so 4g's
    share comes to 3 devices, and it has 2."""
    nodes = [
        node("free", status={0: [I(0, "4g.40gb"), I(4, "3g.40gb")]}),
        node("split-a", status={0: [I(0, "4g.40gb", True), I(4, "3g.40gb", True)]}),
        node("split-b", status={0: [I(0, "4g.40gb", True), I(4, "3g.40gb", True)]}),
        node("whole", status={0: [I(0, "7g.80gb", True)]}),
        *(node(f"small-{k}", status={0: [I(0, "1g.10gb", True)]}) for k in range(3)),
    ]
    pods = [
        running("a4", "4g.40gb", "split-a"),
        running("a3", "3g.40gb", "split-a"),
        running("b4", "4g.40gb", "split-b"),
        running("b3", "3g.40gb", "split-b"),
        running("w", "7g.80gb", "whole"),
        *(running(f"s{k}", "1g.10gb", f"small-{k}") for k in range(3)),
        pod("next-whole", "7g.80gb"),
    ]
    return nodes, pods


def test_demand_counts_bound_pods_and_pending_ones() -> None:
    state = build_cluster(*ratchet())
    by = {s.resource: s for s in shares.shares(state, 1.0)}
    assert {r: s.demand for r, s in by.items()} == {
        "nvidia.com/mig-1g.10gb": 3,
        "nvidia.com/mig-3g.40gb": 6,
        R4G: 8,
        R7G: 14,
    }
    assert (by[R4G].target, by[R4G].have, by[R4G].kept, by[R4G].wanted) == (3, 2, 1, 0)
    assert (by[R7G].target, by[R7G].have, by[R7G].kept, by[R7G].wanted) == (3, 2, 0, 1)  # no free 7g to keep
    assert (by["nvidia.com/mig-1g.10gb"].target, by["nvidia.com/mig-1g.10gb"].wanted) == (4, 1)
    assert shares.shares(state, 0.0) == []


def test_a_free_device_of_a_profile_below_its_share_is_kept_from_another_profiles_pod() -> None:
    state = build_cluster(*ratchet())
    plan = plan_state(state, plan_id="p", share_weight=1.0)
    assert check_plan(state, plan) == []
    assert not plan.placed  # the whole-GPU pod would have to destroy the held 4g.40gb
    assert [u.pod for u in plan.unplaced] == ["default/next-whole"]
    kept = {(h.node, h.profile) for h in plan.held if h.existing}
    assert kept == {("free", "4g.40gb"), ("free", "3g.40gb")}  # 3g.40gb: 6 of 31 slices -> 3 devices, has 2
    assert not plan.nodes["free"].changed

    off = plan_state(state, plan_id="p", share_weight=0.0)
    assert [(p.pod, p.node, p.profile) for p in off.placed] == [("default/next-whole", "free", "7g.80gb")]
    assert off.held == [] and off.shares == []


def test_an_expected_mix_sets_the_targets_and_never_keeps_a_device_from_a_pod() -> None:
    state = build_cluster(*ratchet())
    # the operator expects as much 4g.40gb as whole-GPU work (in pods running): 4 + 7 slices a pair
    by = {s.resource: s for s in shares.shares(state, 1.0, {"4g.40gb": 1, "7g.80gb": 1})}
    assert by[R4G].target == int(4 / 11 * 49 / 4) and by[R7G].target == int(7 / 11 * 49 / 7)
    assert by["nvidia.com/mig-1g.10gb"].target == 0  # not in the mix: demand shown, nothing held
    # a profile of the mix with nothing in use or pending still gets a device
    (ones,) = [s for s in shares.shares(state, 1.0, {"1g.20gb": 1}) if s.profile == "1g.20gb"]
    assert (ones.have, ones.kept + ones.wanted) == (0, 1)
    # the free 4g.40gb the measured shares keep goes to the pending whole-GPU pod: holds rank below pods
    plan = plan_state(state, plan_id="p", share_weight=1.0, share_mix={"4g.40gb": 1, "7g.80gb": 1})
    assert check_plan(state, plan) == []
    assert [(p.pod, p.node) for p in plan.placed] == [("default/next-whole", "free")]
    # a mix whose weights are all 0 is no mix: the measured shares, free devices kept above pods
    zero = plan_state(state, plan_id="p", share_weight=1.0, share_mix={"4g.40gb": 0})
    assert not zero.placed and zero.shares == shares.shares(state, 1.0)


def test_a_hold_never_delays_a_pod_for_a_device_that_does_not_exist_yet() -> None:
    nodes, pods = ratchet()
    nodes.append(node("empty", status={0: []}))
    state = build_cluster(nodes, pods)
    plan = plan_state(state, plan_id="p", share_weight=1.0)
    assert [(p.pod, p.node) for p in plan.placed] == [("default/next-whole", "empty")]
    assert ("free", "4g.40gb", True) in [(h.node, h.profile, h.existing) for h in plan.held]


def test_spare_slots_no_pod_can_use_are_shaped_for_a_profile_below_its_share() -> None:
    nodes = [
        node("busy", status={0: [I(0, "4g.40gb", True), I(4, "3g.40gb", True)]}),
        node("spare", status={0: [I(0, "3g.40gb", True)]}),
    ]
    pods = [
        running("a4", "4g.40gb", "busy"),
        running("a3", "3g.40gb", "busy"),
        running("b3", "3g.40gb", "spare"),
        pod("waits", "3g.40gb"),  # a second 3g.40gb fits on "spare" at slot 4 only
    ]
    state = build_cluster(nodes, pods)
    plan = plan_state(state, plan_id="p", share_weight=1.0)
    assert [(p.pod, p.node) for p in plan.placed] == [("default/waits", "spare")]
    assert check_plan(state, plan) == []
    # 4g.40gb: 4 of 13 demanded slices -> 2 of 14 cluster slices' worth... but no 4g fits on "spare"
    assert all(h.profile != "4g.40gb" or h.node == "busy" for h in plan.held)


def test_holds_go_where_pods_may_come_not_to_a_cordoned_node() -> None:
    nodes, pods = ratchet()
    nodes[0] = node("free", status={0: [I(0, "4g.40gb"), I(4, "3g.40gb")]}, unschedulable=True)
    state = build_cluster(nodes, pods)
    assert not [h for h in plan_state(state, plan_id="p", share_weight=1.0).held if h.node == "free"]

    nodes[0] = node(
        "free",
        status={0: [I(0, "4g.40gb"), I(4, "3g.40gb")]},
        taints=[{"key": "nvidia.com/gpu", "effect": "NoSchedule"}],
    )
    state = build_cluster(nodes, pods)
    assert ("free", "4g.40gb") in [(h.node, h.profile) for h in plan_state(state, plan_id="p", share_weight=1.0).held]


def test_holds_are_reported_apart_in_the_plans_json() -> None:
    plan = plan_state(build_cluster(*ratchet()), plan_id="p", share_weight=1.0)
    doc = plan.to_json()
    assert {"node": "free", "gpu": 0, "profile": "4g.40gb", "existing": True} in doc["held"]
    assert {s["resource"]: s["kept"] for s in doc["shares"]}[R4G] == 1
    assert all(not shares.is_hold(p["pod"]) for p in doc["placed"])
    assert all(not shares.is_hold(u["pod"]) for u in doc["unplaced"])


def test_no_holds_without_pending_pods() -> None:
    nodes, pods = ratchet()
    state = build_cluster(nodes, pods[:-1])
    planned, standings = shares.with_holds(state, 1.0)
    assert planned is state and standings == []


PROFILES = ("1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb")


@settings(max_examples=60, deadline=None)
@given(
    layouts=st.lists(
        st.sampled_from(
            [
                [],
                [("7g.80gb", 0)],
                [("4g.40gb", 0), ("3g.40gb", 4)],
                [("3g.40gb", 0), ("3g.40gb", 4)],
                [("2g.20gb", 0), ("2g.20gb", 2), ("3g.40gb", 4)],
                [("1g.10gb", 0), ("1g.10gb", 1), ("2g.20gb", 2), ("3g.40gb", 4)],
            ]
        ),
        min_size=1,
        max_size=6,
    ),
    used=st.lists(st.booleans(), min_size=24, max_size=24),
    pending=st.lists(st.sampled_from(PROFILES), max_size=8),
    mix=st.one_of(st.none(), st.dictionaries(st.sampled_from(PROFILES), st.floats(0, 10), max_size=5)),
)
def test_holds_leave_plans_placeable_and_are_never_pods(
    layouts: list[list[tuple[str, int]]], used: list[bool], pending: list[str], mix: dict[str, float] | None
) -> None:
    nodes, pods, k = [], [], 0
    for n, layout in enumerate(layouts):
        instances = []
        for profile, start in layout:
            busy = used[k % len(used)]
            k += 1
            instances.append(I(start, profile, busy))
            if busy:
                pods.append(running(f"r{k}", profile, f"n{n}"))
        nodes.append(node(f"n{n}", status={0: instances}))
    pods += [pod(f"p{i}", profile) for i, profile in enumerate(pending)]
    state = build_cluster(nodes, pods)
    plan = plan_state(state, plan_id="p", budget=0.5, share_weight=1.0, share_mix=mix)
    assert check_plan(state, plan) == []
    keys = {p.key for p in state.candidates}
    assert {p.pod for p in plan.placed} | {u.pod for u in plan.unplaced} <= keys
    assert all(shares.is_hold(h.pod) for h in plan.held)
    for h in plan.held:  # a held device is in its GPU's planned layout
        gpu = next(g for g in plan.nodes[h.node].gpus if g.index == h.gpu)
        assert h.profile in {i.profile for i in gpu.planned}
    if mix:  # with an expected mix every hold ranks below every pod: as many pods placed as without holds
        greedy = plan_state(state, plan_id="p", optimize=False, share_weight=1.0, share_mix=mix)
        alone = plan_state(state, plan_id="p", optimize=False, share_weight=0.0)
        assert len(greedy.placed) == len(alone.placed)


def test_a_profile_holds_at_most_as_many_devices_as_it_has() -> None:
    """One pending 1g.10gb pod on an idle cluster: its share is the whole cluster, but it holds one
    device, whatever free ones exist, so repeated plans while it waits do not reshape the cluster."""
    sevens = {g: [I(k, "1g.10gb") for k in range(7)] for g in range(8)}
    nodes = [node(f"n{k}", gpus=8, status=sevens) for k in range(2)]  # 112 free 1g.10gb devices
    state = build_cluster(nodes, [pod("p", "1g.10gb")])
    (one,) = shares.shares(state, 1.0)
    assert (one.target, one.have, one.kept, one.wanted) == (112, 1, 1, 0)
    empty = build_cluster([node("e", gpus=8, status={g: [] for g in range(8)})], [pod("p", "1g.10gb")])
    (one,) = shares.shares(empty, 1.0)
    assert (one.target, one.have, one.kept, one.wanted) == (56, 1, 0, 1)


def test_holds_are_bounded_per_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shares, "MAX_HOLDS", 2)
    state = build_cluster(*ratchet())
    planned, standings = shares.with_holds(state, 1.0)
    assert sum(s.kept + s.wanted for s in standings) > 2
    holds = [p for p in planned.candidates if shares.is_hold(p.key)]
    assert len(holds) == 2
    top = max(p.priority for p in state.candidates)
    assert all(h.priority > top for h in holds)  # the free devices' holds come first
