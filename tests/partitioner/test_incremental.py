"""Planning input kept between cycles: parses reused by (uid, resourceVersion), re-plans skipped
when nothing changed (``nos.planner.incremental``, ``Partitioner.cycle``)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from nos.config import FairnessConfig, PartitionerConfig
from nos.kube.fake.memory import MemoryKube
from nos.mig.layout import Instance as I
from nos.partitioner.controller import Partitioner
from nos.planner.cluster import ClusterState, build_cluster
from nos.planner.incremental import BuildCache
from nos.planner.plan import Plan
from nos.planner.planner import plan_state
from tests.partitioner.test_controller import Clock
from tests.planner.factories import node, pod


def _kube(clock: Clock | None = None) -> MemoryKube:
    at = clock or Clock()
    kube = MemoryKube(clock=lambda: datetime.fromtimestamp(at.now, UTC))  # creationTimestamps on the clock
    kube.add_node(node("a", status={0: [I(0, "3g.40gb", True), I(4, "3g.40gb", True)]}))
    kube.add_pod(pod("waits", "7g.80gb"))  # fits nowhere: every plan leaves it pending, writes nothing
    return kube


def test_cached_build_equals_a_fresh_one_and_tracks_changes() -> None:
    kube = _kube()
    cache = BuildCache()
    nodes, pods = kube.store.shared("nodes"), kube.store.shared("pods")
    first = build_cluster(nodes, pods, cache=cache)
    assert cache.changed and first == build_cluster(nodes, pods)
    again = build_cluster(kube.store.shared("nodes"), kube.store.shared("pods"), cache=cache)
    assert not cache.changed and again == first
    assert again.candidates[0] is first.candidates[0]  # reused, not parsed again
    kube.add_pod(pod("new", "1g.10gb"))
    grown = build_cluster(kube.store.shared("nodes"), kube.store.shared("pods"), cache=cache)
    assert cache.changed and {p.name for p in grown.candidates} == {"waits", "new"}
    kube.remove_pod("default", "new")
    build_cluster(kube.store.shared("nodes"), kube.store.shared("pods"), cache=cache)
    assert cache.changed  # a removal is a change too
    # hand-written dicts (no uid, no resourceVersion) are parsed every time and always count as changed
    build_cluster([node("x")], [], cache=cache)
    build_cluster([node("x")], [], cache=cache)
    assert cache.changed


def test_shared_objects_are_not_copied_and_writes_replace_them() -> None:
    kube = _kube()
    before = kube.store.shared("nodes")[0]
    assert kube.store.shared("nodes")[0] is before
    kube.store.merge_patch("nodes", "a", {"metadata": {"annotations": {"x": "1"}}})
    after = kube.store.shared("nodes")[0]
    assert after is not before and "x" not in before["metadata"]["annotations"]


async def test_unchanged_cluster_is_not_planned_again() -> None:
    kube, clock = _kube(), Clock()
    calls: list[int] = []

    def planner(state: ClusterState, plan_id: str) -> Plan:
        calls.append(len(state.candidates))
        return plan_state(state, plan_id=plan_id)

    part = Partitioner(
        kube,
        clock,
        PartitionerConfig(batch_window_idle_seconds=0),
        planner=planner,
    )

    async def cycles(n: int) -> None:
        for _ in range(n):
            clock.now += 30
            await part.cycle()

    await cycles(4)
    assert calls == [1] and part.skipped == 3  # the same input gives the same plan: skipped
    kube.add_pod(pod("other", "4g.40gb"))
    await cycles(2)
    assert calls == [1, 2] and part.skipped == 4


async def test_aging_counts_as_a_change() -> None:
    clock = Clock()
    kube = _kube(clock)
    plans: list[Any] = []

    def planner(state: ClusterState, plan_id: str) -> Plan:
        plans.append(state.candidates[0].priority)
        return plan_state(state, plan_id=plan_id)

    config = PartitionerConfig(batch_window_idle_seconds=0, fairness=FairnessConfig(aging_step_seconds=600))
    part = Partitioner(kube, clock, config, planner=planner)
    for _ in range(6):  # 6 x 300 s: the pod's age level moves at 600 s and 1200 s
        clock.now += 300
        await part.cycle()
    assert plans == [0, 1, 2, 3]  # waited 300 s ... 1800 s: re-planned only when the level moved


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["add", "add-bound", "add-bad", "bind", "finish", "remove", "patch-node", "none"]),
        st.integers(0, 5),
        st.sampled_from(["1g.10gb", "3g.40gb", "7g.80gb"]),
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(_OPS)
def test_incremental_build_equals_a_fresh_one(ops: list[tuple[str, int, str]]) -> None:
    """After any writes, a build that reuses the previous build (the same pods tuple: its pods'
    part; or parses by version) equals a build from scratch, and ``changed`` says whether any
    object moved."""
    kube = _kube()
    kube.add_node(node("b"))
    cache = BuildCache()
    build_cluster(kube.store.shared("nodes"), kube.store.shared("pods"), cache=cache)
    for op, i, profile in ops:
        name = f"p{i}"
        before = kube.store.resource_version
        existing = {o["metadata"]["name"]: o for o in kube.store.shared("pods")}
        if op == "add" and name not in existing:
            kube.add_pod(pod(name, profile))
        elif op == "add-bound" and name not in existing:
            kube.add_pod(pod(name, profile, node_name="ab"[i % 2]))
        elif op == "add-bad" and name not in existing:
            kube.add_pod(pod(name, profile, cpu="lots"))
        elif op in ("bind", "finish") and name in existing:
            body = copy.deepcopy(existing[name])
            if op == "bind":
                body["spec"]["nodeName"] = "ab"[i % 2]
                body["status"] = {"phase": "Running"}
            else:
                body["status"] = {"phase": "Succeeded"}
            kube.update_pod(body)
        elif op == "remove" and name in existing:
            kube.remove_pod("default", name)
        elif op == "patch-node":
            kube.store.merge_patch("nodes", "ab"[i % 2], {"metadata": {"annotations": {"x": str(i)}}})
        nodes, pods = kube.store.shared("nodes"), kube.store.shared("pods")
        assert isinstance(pods, tuple)
        built = build_cluster(nodes, pods, cache=cache)
        fresh = build_cluster(list(nodes), list(pods))
        assert built == fresh
        # the candidates' keys kept up to date per pod change are the keys of a fresh build's candidates
        assert built.keys_of_candidates() == frozenset(p.key for p in fresh.candidates)
        assert built.candidates == fresh.candidates  # in the same order
        assert cache.changed == (kube.store.resource_version != before)
        if not cache.changed:
            assert kube.store.shared("pods") is pods  # the same snapshot: its pods are not walked again
            assert build_cluster(nodes, pods, cache=cache) == built and not cache.changed


def test_a_tuple_listing_an_object_twice_or_reordered_builds_as_a_list_does() -> None:
    """A hand-made tuple may list one object twice: the index counts it once, at its first place,
    as a fresh build of the list without the repeat does; the same objects in another order are
    another snapshot (the candidates' order is part of the planner's input)."""
    kube = _kube()
    kube.add_pod(pod("other", "1g.10gb"))
    waits, other = kube.store.shared("pods")
    cache = BuildCache()
    for pods in [(waits, other, waits), (other, waits), (other,), (waits, waits)]:
        built = build_cluster(kube.store.shared("nodes"), pods, cache=cache)
        fresh = build_cluster(kube.store.shared("nodes"), list({id(p): p for p in pods}.values()))
        assert built == fresh and built.keys_of_candidates() == frozenset(p.key for p in fresh.candidates)
