"""Issue 10 finding 4 end to end: two partitioners (Lease election) against the real kube-apiserver and
kube-scheduler. The leader loses the Lease in the middle of a long cycle; the standby takes over and
gets the pending pod bound, and the old leader writes nothing after losing it.

Two ways of losing it: its renewals fail (the apiserver is unreachable for it: 503 on the Lease), or
its renewals stop altogether without it noticing (a wedged renew task: only the fence before each
write stands between it and a stale write)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from nos.config import NosConfig
from nos.kube.client import LightkubeKube
from nos.kube.port import Event, KubeError, Obj, Resource
from nos.planner.cluster import ClusterState
from nos.planner.plan import Plan
from nos.planner.planner import plan_state
from tests.e2e.cluster import QUICK_RETRY, E2ECluster, partitioner_config, partitioner_process
from tests.realkube.control_plane import eventually
from tests.runtime.helpers import sample

pytestmark = [pytest.mark.timeout(150)]


class RecordingKube(LightkubeKube):
    """A replica's API access: every write recorded with its time; ``cut`` fails its Lease calls."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writes: list[tuple[float, str, str]] = []
        self.cut = False

    async def patch(self, resource: Resource, name: str, patch: Obj, namespace: str | None = None) -> Obj:
        if resource == "nodes":
            self.writes.append((time.monotonic(), "patch", name))
        return await super().patch(resource, name, patch, namespace)

    async def create_event(self, event: Event) -> None:
        self.writes.append((time.monotonic(), "event", event.reason))
        await super().create_event(event)

    def _lease_call(self) -> None:
        if self.cut:
            raise KubeError("injected: the apiserver is unreachable for this replica", 503)

    async def get(self, resource: Resource, name: str, namespace: str | None = None) -> Obj:
        if resource == "leases":
            self._lease_call()
        return await super().get(resource, name, namespace)

    async def replace(self, resource: Resource, obj: Obj) -> Obj:
        if resource == "leases":
            self._lease_call()
        return await super().replace(resource, obj)


def election_config(namespace: str) -> NosConfig:
    return partitioner_config(
        reportTimeoutSeconds=60,
        leaderElection={
            "leaseName": "nos-takeover",
            "namespace": namespace,
            "leaseDurationSeconds": 4,
            "renewDeadlineSeconds": 3,
            "retryPeriodSeconds": 0.5,
        },
    )


@pytest.mark.parametrize("how", ["renewals fail", "renew task wedged"])
async def test_standby_takes_over_mid_cycle_and_the_old_leader_writes_nothing(cluster: E2ECluster, how: str) -> None:
    node = await cluster.add_node("n1", gpus=1)
    config = election_config(cluster.namespace)
    kubes = {
        who: RecordingKube(cluster.cp.client(), component="partitioner", instance=f"p-{who}", retry=QUICK_RETRY)
        for who in ("a", "b")
    }
    processes = {
        who: partitioner_process(kubes[who], config, who, watch_timeout_seconds=60, resync_seconds=5)
        for who in ("a", "b")
    }
    (ma, a), (mb, b) = processes["a"], processes["b"]
    assert ma.elector is not None and mb.elector is not None
    planning, planned = threading.Event(), threading.Event()
    lost_at: list[float] = []

    def slow_plan(state: ClusterState, plan_id: str) -> Plan:
        """A's plan takes longer than the Lease lasts (a huge cluster); it loses the Lease meanwhile."""
        if how == "renewals fail":
            kubes["a"].cut = True
            lost_at.append(time.monotonic())
        planning.set()
        time.sleep(7 if how == "renewals fail" else 6)
        planned.set()
        return plan_state(state, plan_id=plan_id)

    a.partitioner.planner = slow_plan
    if how == "renew task wedged":

        async def wedged() -> None:
            lost_at.append(time.monotonic() + config.partitioner.leader_election.renew_deadline_seconds)
            await asyncio.Event().wait()  # never renews, never notices

        ma.elector._renew_until_lost = wedged  # type: ignore[method-assign]
    stops = {who: asyncio.Event() for who in processes}
    tasks = {"a": asyncio.create_task(ma.run(a, stops["a"]), name="partitioner-a")}
    try:
        await eventually(lambda: _true_if(ma.elector is not None and ma.elector.is_leader), 30, "a leads")
        tasks["b"] = asyncio.create_task(mb.run(b, stops["b"]), name="partitioner-b")  # the standby
        await cluster.create_pod("p1", "1g.10gb", node=node)
        await eventually(lambda: _true_if(planning.is_set()), 30, "a plans")
        await eventually(lambda: _true_if(mb.elector is not None and mb.elector.is_leader), 30, "b takes over")
        bound = await cluster.wait_bound(["p1"], timeout=90)
        assert bound == {"p1": node}
        await eventually(lambda: _true_if(planned.is_set()), 30, "a's plan finished")
        await asyncio.sleep(1.0)  # time for any write a would still make
    finally:
        for stop in stops.values():
            stop.set()
        done = await asyncio.gather(*(asyncio.wait_for(t, 20) for t in tasks.values()), return_exceptions=True)
        for k in kubes.values():
            await k.close()

    [lost] = lost_at
    after = [w for w in kubes["a"].writes if w[0] >= lost]
    assert after == [], f"a wrote after losing the lease: {after}"
    assert any(kind == "patch" and name == node for _, kind, name in kubes["b"].writes)
    if how == "renewals fail":
        assert done[0] == 1  # LeadershipLost: the process exits non-zero
    else:
        assert sample(ma.metrics, "nos_partitioner_fenced_total") >= 1  # the fence stopped a's stale plan


async def _true_if(condition: bool) -> bool | None:
    return True if condition else None
