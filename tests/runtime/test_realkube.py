"""Reflector, elector and a partitioner cycle against a REAL kube-apiserver (1.20, etcd on loopback).

Skipped when the binaries are absent (build them with scripts/kube-control-plane); ``NOS_REALKUBE_REQUIRED=1``
turns the skip into a failure, as in tests/realkube. One control plane for this module.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_asyncio
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, Node, Pod
from lightkube.types import PatchType

from nos.config import LeaderElectionConfig, load_config
from nos.contract.annotations import SPEC_PLAN
from nos.kube.client import LightkubeKube, RetryPolicy
from nos.mig.layout import Instance as I
from nos.partitioner.runner import PartitionerRunner
from nos.runtime.manager import Manager
from nos.runtime.reflector import Reflector
from tests.planner.factories import node as planner_node
from tests.planner.factories import pod as planner_pod
from tests.realkube.control_plane import ControlPlane, find_binaries
from tests.runtime.helpers import eventually
from tests.runtime.test_leader import Candidate

pytestmark = [pytest.mark.timeout(120)]

QUICK = RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.2)
ELECTION = LeaderElectionConfig(
    lease_name="nos-rk",
    namespace="nos-system",
    lease_duration_seconds=2,
    renew_deadline_seconds=1.5,
    retry_period_seconds=0.2,
)


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    binaries, reason = find_binaries()
    if binaries is None:
        if os.environ.get("NOS_REALKUBE_REQUIRED") == "1":
            pytest.fail(f"NOS_REALKUBE_REQUIRED=1 but {reason}", pytrace=False)
        pytest.skip(f"realkube: {reason}")
    cp = ControlPlane(workdir=Path(tmp_path_factory.mktemp("runtime-realkube")), binaries=binaries)
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()


@pytest_asyncio.fixture
async def kube(control_plane: ControlPlane) -> AsyncIterator[LightkubeKube]:
    adapter = LightkubeKube(control_plane.client(), component="partitioner", instance="rk", retry=QUICK)
    try:
        yield adapter
    finally:
        await adapter.close()


async def create_node(kube: LightkubeKube, body: dict[str, Any]) -> None:
    await kube._client.create(cast(Node, Node.from_dict(body)))


async def test_reflector_lists_watches_and_follows_selector_transitions(kube: LightkubeKube) -> None:
    client = kube._client
    await create_node(kube, {"metadata": {"name": "rk-a", "labels": {"rk": "yes"}}})
    await create_node(kube, {"metadata": {"name": "rk-b"}})
    seen: list[tuple[str, str]] = []
    r = Reflector(
        kube, "nodes", label_selector="rk=yes", on_change=lambda k, o: seen.append((k, o["metadata"]["name"]))
    )
    task = asyncio.create_task(r.run())
    try:
        await asyncio.wait_for(r.synced.wait(), 10)
        assert list(r.cache) == ["rk-a"]
        await client.patch(Node, "rk-b", {"metadata": {"labels": {"rk": "yes"}}}, patch_type=PatchType.MERGE)
        await eventually(lambda: "rk-b" in r.cache, 10)
        await client.patch(Node, "rk-a", {"metadata": {"labels": {"rk": None}}}, patch_type=PatchType.MERGE)
        await eventually(lambda: "rk-a" not in r.cache, 10)
        await client.delete(Node, "rk-b")
        await eventually(lambda: not r.cache, 10)
        assert seen == [("ADDED", "rk-a"), ("ADDED", "rk-b"), ("DELETED", "rk-a"), ("DELETED", "rk-b")]
        assert r.lists == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_elector_one_leader_and_release_hands_over(kube: LightkubeKube, control_plane: ControlPlane) -> None:
    await kube._client.create(Namespace(metadata=ObjectMeta(name="nos-system")))
    other = LightkubeKube(control_plane.client(), component="partitioner", instance="rk2", retry=QUICK)
    try:
        a = Candidate(kube, "a", ELECTION)
        await eventually(lambda: a.elector.is_leader, 10, "a leads")
        b = Candidate(other, "b", ELECTION)
        await asyncio.sleep(1.0)
        assert a.elector.is_leader and not b.elector.is_leader
        lease = await kube.get("leases", "nos-rk", "nos-system")
        assert lease["spec"]["holderIdentity"] == "a"
        a.stop.set()
        await asyncio.wait_for(a.task, 5)
        await eventually(lambda: b.elector.is_leader, 2, "b takes over after the release")
        await b.crash()
    finally:
        await other.close()


async def test_partitioner_cycle_writes_the_spec_on_the_real_server(kube: LightkubeKube) -> None:
    client = kube._client
    await create_node(kube, planner_node("rk-gpu", status={0: [I(0, "7g.80gb")]}))
    # admission adds the not-ready taint to a new Node; a kubelet would clear it once Ready
    await client.patch(Node, "rk-gpu", {"spec": {"taints": None}}, patch_type=PatchType.MERGE)
    body = planner_pod("rk-p1", "1g.10gb")
    body["metadata"].pop("creationTimestamp")
    body["spec"]["containers"][0]["image"] = "busybox"
    await client.create(cast(Pod, Pod.from_dict(body)))
    # the server resets .status on create; kube-scheduler would report Unschedulable like this
    await client.patch(Pod.Status, "rk-p1", {"status": body["status"]}, namespace="default", patch_type=PatchType.MERGE)
    config = load_config(
        None,
        env={},
        overrides={
            "partitioner": {
                "batchWindowIdleSeconds": 0.2,
                "leaderElection": {"enabled": False},
            }
        },
    )
    manager = Manager(kube, election=config.partitioner.leader_election, identity="rk", debounce_seconds=0.05)
    runner = PartitionerRunner(manager, config.partitioner)
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(runner, stop))
    try:

        async def written() -> bool:
            got = await kube.get("nodes", "rk-gpu")
            return got["metadata"]["annotations"].get(SPEC_PLAN) != "plan-0"

        for _ in range(100):
            if await written():
                break
            await asyncio.sleep(0.1)
        got = await kube.get("nodes", "rk-gpu")
        assert any(k.startswith("nos.nebuly.com/spec-gpu-0-1g.10gb") for k in got["metadata"]["annotations"])
        assert runner.cycles >= 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
