"""The partitioner cycle on the in-memory Kubernetes API with a virtual clock."""

from __future__ import annotations

import pytest

from nos.config import PartitionerConfig
from nos.contract.annotations import SPEC_PLAN, STATUS_PLAN, decode_spec
from nos.kube.fake.memory import MemoryKube
from nos.kube.port import Conflict, annotations_patch
from nos.mig.layout import Instance as I
from nos.partitioner.batch import Batcher
from nos.partitioner.controller import Partitioner
from tests.planner.factories import node, pod


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_batch_closes_after_idle_or_timeout() -> None:
    b = Batcher(idle_s=10, timeout_s=60)
    b.observe(["a"], 0)
    assert not b.ready(5)
    assert b.ready(10)
    b.reset()
    for t in range(0, 70, 5):  # a new pod every 5 s keeps the idle window open ...
        b.observe([f"p{t}"], t)
    assert b.ready(60)  # ... but not past the timeout
    b.reset()
    b.observe([], 100)
    assert not b.ready(1000)


async def _cluster() -> MemoryKube:
    kube = MemoryKube()
    kube.add_node(node("a", status={0: [I(0, "7g.80gb")]}))
    kube.add_node(node("b", status={0: [I(0, "3g.40gb", True), I(4, "3g.40gb", True)]}))
    kube.add_pod(pod("p1", "1g.10gb"))
    kube.add_pod(pod("p2", "3g.20gb"))
    return kube


async def test_cycle_plans_after_the_batch_window_and_writes_changed_nodes() -> None:
    kube, clock = await _cluster(), Clock()
    part = Partitioner(kube, clock, PartitionerConfig(batch_window_idle_seconds=10))
    assert (await part.cycle()).plan is None  # batch just opened
    clock.now += 10
    result = await part.cycle()
    assert result.plan is not None and result.written == ["a"]
    annotations = (await kube.get("nodes", "a"))["metadata"]["annotations"]
    assert annotations[SPEC_PLAN] == result.plan.plan_id
    assert decode_spec(annotations).gpus[0].profile_counts()["1g.10gb"] >= 1
    untouched = (await kube.get("nodes", "b"))["metadata"]["annotations"]
    assert untouched[SPEC_PLAN] == "plan-0"
    reasons = {(e.regarding.name, e.reason) for e in kube.events}
    assert ("p1", "MigPlanned") in reasons
    assert ("p2", "MigUnplaceable") in reasons
    assert ("a", "MigRepartition") in reasons


async def test_waits_for_agents_then_times_out_with_an_event() -> None:
    kube, clock = await _cluster(), Clock()
    cfg = PartitionerConfig(batch_window_idle_seconds=1, report_timeout_seconds=100)
    part = Partitioner(kube, clock, cfg)
    await part.cycle()
    clock.now += 1
    first = await part.cycle()
    assert first.written == ["a"]
    kube.add_pod(pod("p3", "1g.10gb"))
    await part.cycle()
    clock.now += 1
    waiting = await part.cycle()
    assert waiting.plan is None and waiting.waiting_for == ["a"]
    clock.now += 100
    late = await part.cycle()
    assert late.plan is not None
    assert any(e.reason == "AgentReportTimeout" and e.regarding.name == "a" for e in kube.events)


async def test_reported_plan_unblocks_the_next_plan() -> None:
    kube, clock = await _cluster(), Clock()
    part = Partitioner(kube, clock, PartitionerConfig(batch_window_idle_seconds=1))
    await part.cycle()
    clock.now += 1
    plan_id = (await part.cycle()).plan.plan_id  # type: ignore[union-attr]
    await kube.patch("nodes", "a", annotations_patch({STATUS_PLAN: plan_id}))
    kube.add_pod(pod("p3", "2g.20gb"))
    await part.cycle()
    clock.now += 1
    assert (await part.cycle()).plan is not None


async def test_conflicting_write_is_retried() -> None:
    kube, clock = await _cluster(), Clock()
    part = Partitioner(kube, clock, PartitionerConfig(batch_window_idle_seconds=0))
    kube.fail_next("patch nodes", Conflict("node a changed"), times=2)
    result = await part.cycle()
    assert result.written == ["a"]
    assert SPEC_PLAN in (await kube.get("nodes", "a"))["metadata"]["annotations"]


async def test_persistent_conflict_is_reported_not_raised() -> None:
    kube, clock = await _cluster(), Clock()
    part = Partitioner(kube, clock, PartitionerConfig(batch_window_idle_seconds=0, patch_attempts=2))
    kube.fail_next("patch nodes", Conflict("node a changed"), times=5)
    result = await part.cycle()
    assert result.written == [] and "a" in result.failed


async def test_the_cycle_says_when_it_wants_to_run_again() -> None:
    """``requeue_after``: the open batch's deadline, then the report timeout while agents lag, else None."""
    kube, clock = await _cluster(), Clock()
    part = Partitioner(kube, clock, PartitionerConfig(batch_window_idle_seconds=10, report_timeout_seconds=100))
    opened = await part.cycle()
    assert opened.plan is None and opened.requeue_after == pytest.approx(10, abs=0.01)
    assert opened.candidates == 2
    clock.now += 4
    assert (await part.cycle()).requeue_after == pytest.approx(6, abs=0.01)
    clock.now += 6
    planned = await part.cycle()
    assert planned.written == ["a"] and planned.requeue_after is None  # batch closed, nothing pending
    kube.add_pod(pod("p3", "1g.10gb"))
    await part.cycle()
    clock.now += 10
    waiting = await part.cycle()
    assert waiting.waiting_for == ["a"] and waiting.requeue_after == pytest.approx(90, abs=0.01)
    clock.now += 90
    assert (await part.cycle()).plan is not None  # the report timed out: planned anyway


async def test_pod_events_are_said_once_per_change_of_what_is_said() -> None:
    kube, clock = await _cluster(), Clock()
    part = Partitioner(kube, clock, PartitionerConfig(batch_window_idle_seconds=0))
    first = await part.cycle()
    assert first.plan is not None
    await kube.patch("nodes", "a", annotations_patch({STATUS_PLAN: first.plan.plan_id}))
    kube.add_pod(pod("p4", "1g.10gb"))  # a new candidate: a new batch, a new plan
    second = await part.cycle()
    assert second.plan is not None and any(u.pod.endswith("p2") for u in second.plan.unplaced)
    assert ("p4", "MigPlanned") in {(e.regarding.name, e.reason) for e in kube.events}
    unplaceable = [e for e in kube.events if e.regarding.name == "p2" and e.reason == "MigUnplaceable"]
    assert len(unplaceable) == 1  # the same reason again: not repeated


async def test_a_profile_mix_reaches_the_plan_and_mistakes_in_it_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    kube, clock = await _cluster(), Clock()
    config = PartitionerConfig(batch_window_idle_seconds=0, profile_shares=1, profile_mix={"7g.80gb": 1, "9g.1gb": 1})
    with caplog.at_level("WARNING", logger="nos.partitioner.controller"):
        part = Partitioner(kube, clock, config)
    assert "no GPU model offers 9g.1gb" in caplog.text
    result = await part.cycle()
    assert result.plan is not None
    standings = {s.profile: s for s in result.plan.shares}
    assert set(standings) >= {"7g.80gb"} and standings["7g.80gb"].target >= 1  # from the mix alone
    assert standings["7g.80gb"].kept + standings["7g.80gb"].wanted == 1  # nothing of it in use: one device
    assert all(s.kept == s.wanted == 0 for p, s in standings.items() if p != "7g.80gb")  # not in the mix
    assert any(p.pod.endswith("/p1") for p in result.plan.placed)  # the hold never takes the pod's place
    caplog.clear()
    with caplog.at_level("WARNING", logger="nos.partitioner.controller"):
        Partitioner(kube, clock, PartitionerConfig(profile_mix={"7g.80gb": 1}))
    assert "profileShares is 0" in caplog.text
