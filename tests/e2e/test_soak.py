"""A bounded soak on the real kube-apiserver + kube-scheduler (issue 10): agents and partitioner
replicas killed and restarted at random, API faults (dropped watches, 409 Conflict, 5xx) and NVML
faults injected, pods created and deleted. After every step it checks:

* no in-use instance destroyed (a monitor compares every allocated MIG UUID with the GPUs' devices
  every 0.1 s, and each step asserts it never saw one vanish);
* no write without the Lease (every node patch of a partitioner replica is checked against the
  Lease holder read by an unfaulted observer client right before it goes out);
* status equal to the GPUs' real state (within the step's settling window, every node's status
  annotations show exactly the complete instances NVML has, with the used flags kubelet's
  allocations imply, and no unreadable GPU);

and at the end, with the faults off, that every pending pod the planner can place is bound.

``NOS_SOAK_SECONDS`` (default 90) bounds the fault phase, ``NOS_SOAK_SEED`` picks the random run.
The figures of the run are printed (``-s``) and recorded in docs/testing.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from lightkube.resources.core_v1 import Node, Pod

from nos.config import AgentConfig, DevicePluginConfig, NosConfig
from nos.contract.annotations import decode_status
from nos.gpu.port import NvmlError, NvmlInsufficientResources
from nos.kube.client import LightkubeKube
from nos.kube.port import Conflict, Event, KubeError, Obj, Resource, WatchEvent
from nos.partitioner.runner import PartitionerRunner
from nos.planner.cluster import build_cluster
from nos.planner.planner import plan_state
from nos.runtime.manager import Manager
from tests.e2e.cluster import QUICK_RETRY, E2ECluster, partitioner_config, partitioner_process
from tests.realkube.control_plane import ControlPlane, Process

log = logging.getLogger(__name__)

SOAK_SECONDS = float(os.environ.get("NOS_SOAK_SECONDS", "90"))
SEED = int(os.environ.get("NOS_SOAK_SEED", "10"))
LEASE = "nos-soak"
PROFILES = ["1g.10gb"] * 5 + ["2g.20gb"] * 3 + ["3g.40gb"] * 2
MAX_LIVE_PODS = 9

pytestmark = [pytest.mark.timeout(SOAK_SECONDS + 360)]


@dataclass
class Faults:
    """The fault plan shared by every faulty client: rates per kind, and what was injected."""

    rng: random.Random
    on: bool = True
    rates: dict[str, float] = field(
        default_factory=lambda: {"drop_watch": 0.05, "conflict": 0.08, "server_error": 0.04, "lease_error": 0.03}
    )
    injected: Counter[str] = field(default_factory=Counter)

    def hit(self, kind: str) -> bool:
        if self.on and self.rng.random() < self.rates[kind]:
            self.injected[kind] += 1
            return True
        return False


class FaultyKube(LightkubeKube):
    """A process's API access with injected faults. A partitioner replica's node patches are
    checked against the Lease (read by ``observer``) right before they go out."""

    def __init__(self, *args: Any, faults: Faults, identity: str | None = None, soak: Soak | None = None, **kw: Any):
        super().__init__(*args, **kw)
        self.faults, self.identity, self.soak = faults, identity, soak

    def _maybe_fail(self) -> None:
        if self.faults.hit("server_error"):
            raise KubeError("injected: 503 Service Unavailable", 503)

    async def get(self, resource: Resource, name: str, namespace: str | None = None) -> Obj:
        if resource == "nodes":
            self._maybe_fail()
        elif resource == "leases" and self.faults.hit("lease_error"):
            raise KubeError("injected: 500 on the Lease", 500)
        return await super().get(resource, name, namespace)

    async def list_with_version(self, *args: Any, **kw: Any) -> tuple[list[Obj], str]:
        self._maybe_fail()
        return await super().list_with_version(*args, **kw)

    async def patch(self, resource: Resource, name: str, patch: Obj, namespace: str | None = None) -> Obj:
        if resource == "nodes":
            if self.faults.hit("conflict"):
                raise Conflict("injected: 409 Conflict")
            self._maybe_fail()
            if self.identity is not None and self.soak is not None:
                await self.soak.check_lease(self.identity, name)
        return await super().patch(resource, name, patch, namespace)

    async def create_event(self, event: Event) -> None:
        self._maybe_fail()
        await super().create_event(event)

    async def watch(self, *args: Any, **kw: Any) -> AsyncIterator[WatchEvent]:
        async for item in super().watch(*args, **kw):
            if self.faults.hit("drop_watch"):
                return  # the stream ends as a dropped connection would; the reflector re-watches
            yield item


@dataclass
class Replica:
    manager: Manager
    runner: PartitionerRunner
    kube: FaultyKube
    stop: asyncio.Event
    task: asyncio.Task[None]


class Soak(E2ECluster):
    faults: Faults
    observer: LightkubeKube
    violations: list[str]
    figures: Counter[str]
    replicas: list[Replica]
    closing: list[LightkubeKube]

    def setup_soak(self, rng: random.Random) -> None:
        self.faults = Faults(rng)
        self.observer = LightkubeKube(self.cp.client(), component="observer", retry=QUICK_RETRY)
        self.violations, self.figures, self.replicas, self.closing = [], Counter(), [], []

    agent_watch_timeout_seconds = 30

    def agent_kube(self, node: str) -> LightkubeKube:
        return FaultyKube(
            self.cp.client(), component="agent", instance=f"agent-{node}", retry=QUICK_RETRY, faults=self.faults
        )

    def agent_config(self) -> AgentConfig:
        return AgentConfig(
            report_interval_seconds=2.0,
            nvml_call_timeout_seconds=10.0,
            device_plugin=DevicePluginConfig(timeout_seconds=30, poll_seconds=0.1),
        )

    # -- partitioner replicas ------------------------------------------------------------------------
    def replica_config(self) -> NosConfig:
        return partitioner_config(
            batch_timeout_s=4,
            reportTimeoutSeconds=20,
            leaderElection={
                "leaseName": LEASE,
                "namespace": self.namespace,
                "leaseDurationSeconds": 4,
                "renewDeadlineSeconds": 3,
                "retryPeriodSeconds": 0.5,
            },
        )

    def start_replica(self) -> Replica:
        self.figures["partitioner starts"] += 1
        identity = f"p-{self.figures['partitioner starts']}"
        kube = FaultyKube(
            self.cp.client(),
            component="partitioner",
            instance=identity,
            retry=QUICK_RETRY,
            faults=self.faults,
            identity=identity,
            soak=self,
        )
        manager, runner = partitioner_process(
            kube, self.replica_config(), identity, watch_timeout_seconds=30, resync_seconds=3
        )
        stop = asyncio.Event()
        replica = Replica(manager, runner, kube, stop, asyncio.create_task(manager.run(runner, stop), name=identity))
        self.replicas.append(replica)
        return replica

    async def keep_two_replicas(self) -> None:
        """A replica that exited (it lost the Lease: the process exits and kubelet restarts it) is replaced."""
        for r in [r for r in self.replicas if r.task.done()]:
            self.replicas.remove(r)
            self.closing.append(r.kube)
            self.figures["partitioner exits (lease lost)"] += 1
        while len(self.replicas) < 2:
            self.start_replica()

    async def kill_replica(self, rng: random.Random) -> None:
        victim = rng.choice(self.replicas)
        leader = victim.manager.elector is not None and victim.manager.elector.is_leader
        victim.task.cancel()  # kill -9: no release, the Lease must expire
        await asyncio.gather(victim.task, return_exceptions=True)
        self.replicas.remove(victim)
        self.closing.append(victim.kube)
        self.figures["partitioner kills (leader)" if leader else "partitioner kills (standby)"] += 1
        await self.keep_two_replicas()

    async def check_lease(self, identity: str, node: str) -> None:
        lease = await self.observer.get("leases", LEASE, self.namespace)
        holder = (lease.get("spec") or {}).get("holderIdentity")
        self.figures["partitioner node writes"] += 1
        if holder != identity:
            self.violations.append(f"{identity} wrote node {node} while the Lease names {holder}")

    # -- invariants ----------------------------------------------------------------------------------
    def in_use_destroyed(self) -> list[str]:
        out = []
        for node, kubelet in self.kubelets.items():
            devices = {uuid for *_, uuid in self.nvml[node].devices()}
            with kubelet._lock:
                allocated = dict(kubelet.allocations)
            out += [f"{node}: {u} of pod {a.pod} destroyed" for u, a in allocated.items() if u not in devices]
        return out

    async def monitor(self) -> None:
        while True:
            for v in self.in_use_destroyed():
                if v not in self.violations:
                    self.violations.append(v)
            await asyncio.sleep(0.1)

    async def status_mismatches(self) -> list[str]:
        out = []
        for node, kubelet in self.kubelets.items():
            got = await self.client.get(Node, node)
            ann = dict((got.metadata.annotations or {}) if got.metadata else {})
            status = decode_status(ann)
            if status.unreadable or status.problems:
                out.append(f"{node}: unreadable {status.unreadable} problems {status.problems}")
                continue
            with kubelet._lock:
                allocated = set(kubelet.allocations)
            sim = self.nvml[node].sim
            for gpu in range(len(sim.gpus())):
                real = sorted(
                    (gi.start, gi.profile, any(u in allocated for u in gi.device_uuids))
                    for gi in sim.gpu_instances(gpu)
                    if gi.compute_instances
                )
                placements = status.gpu(gpu).placements or ()
                reported = sorted((i.start, i.profile, i.used) for i in placements)
                if real != reported:
                    out.append(f"{node} GPU {gpu}: status {reported} != real {real}")
        return out

    async def settle(self, timeout: float) -> list[str]:
        """Wait until every node's status shows its real GPU state; the mismatches if it never does."""
        deadline = time.monotonic() + timeout
        while True:
            mismatches = await self.status_mismatches()
            if not mismatches or time.monotonic() > deadline:
                return mismatches
            await asyncio.sleep(0.5)

    async def pods(self) -> list[Pod]:
        return [p async for p in self.client.list(Pod, namespace=self.namespace)]


@pytest_asyncio.fixture
async def soak(control_plane: ControlPlane, scheduler: Process, unique: str) -> AsyncIterator[Soak]:
    client = control_plane.client()
    from lightkube.models.meta_v1 import ObjectMeta
    from lightkube.resources.core_v1 import Namespace

    await client.create(Namespace(metadata=ObjectMeta(name=unique)))
    s = Soak(cp=control_plane, unique=unique, client=client, namespace=unique)
    s.setup_soak(random.Random(SEED))
    try:
        yield s
    finally:
        for r in s.replicas:
            r.stop.set()
        await asyncio.gather(*(asyncio.wait_for(r.task, 20) for r in s.replicas), return_exceptions=True)
        for r in s.replicas:
            s.closing.append(r.kube)
        for k in s.closing:
            await k.close()
        await s.observer.close()
        await s.close()


async def test_soak_kills_and_faults_keep_every_invariant(soak: Soak) -> None:
    rng = soak.faults.rng
    nodes = [await soak.add_node(suffix, gpus=2) for suffix in ("a", "b", "c")]
    await soak.keep_two_replicas()
    monitor = asyncio.create_task(soak.monitor(), name="soak-monitor")
    f = soak.figures
    started = time.monotonic()
    live: list[str] = []
    seen_bound: set[str] = set()
    try:
        while time.monotonic() - started < SOAK_SECONDS:
            action = rng.choices(
                ["create pod", "delete pod", "kill agent", "kill partitioner", "nvml fault"], [40, 15, 15, 10, 20]
            )[0]
            if action == "create pod" and len(live) < MAX_LIVE_PODS:
                name = f"s{f['pods created']}"
                await soak.create_pod(name, rng.choice(PROFILES))
                live.append(name)
                f["pods created"] += 1
            elif action == "delete pod" and live:
                name = live.pop(rng.randrange(len(live)))
                with contextlib.suppress(Exception):
                    await soak.client.delete(Pod, name, namespace=soak.namespace, grace_period=0)
                f["pods deleted"] += 1
            elif action == "kill agent":
                await soak.restart_agent(rng.choice(nodes))
                f["agent kills"] += 1
            elif action == "kill partitioner":
                await soak.kill_replica(rng)
            elif action == "nvml fault":
                node = rng.choice(nodes)
                sim = soak.nvml[node].sim
                if rng.random() < 0.5:
                    sim.fail_next("create_gpu_instance", NvmlInsufficientResources("injected"))
                    f["nvml faults (create refused)"] += 1
                else:
                    # only the agent reads profiles: the GPU is unreadable for that reconcile
                    sim.fail_next("profiles", NvmlError("injected: GPU is lost", 15))
                    f["nvml faults (GPU unreadable)"] += 1
            await soak.keep_two_replicas()
            f["steps"] += 1
            await asyncio.sleep(rng.uniform(0.5, 3.0))  # the world moves on before the next check
            for kubelet in soak.kubelets.values():
                with kubelet._lock:
                    seen_bound.update(a.pod for a in kubelet.allocations.values())
            mismatches = await soak.settle(timeout=40)
            assert not soak.violations, soak.violations
            assert not mismatches, f"step {f['steps']} ({action}): {mismatches}"

        # The end: faults off, every pod the planner can place is bound.
        soak.faults.on = False
        duration = time.monotonic() - started
        raw_nodes = [n.to_dict() async for n in soak.client.list(Node)]
        raw_pods = [p.to_dict() for p in await soak.pods()]
        reachable = {p.pod.split("/")[-1] for p in plan_state(build_cluster(raw_nodes, raw_pods)).placed}
        pending = [
            p.metadata.name for p in await soak.pods() if p.metadata and p.status and p.status.phase == "Pending"
        ]
        want = sorted(set(live) - (set(pending) - reachable))
        bound = await soak.wait_bound(want, timeout=120)
        f["pods bound at the end"] = len(bound)
        f["pods bound during the run"] = len(seen_bound | set(bound))
        f["pods unreachable at the end"] = len(set(live) - set(want))
        assert not await soak.settle(timeout=40)
        assert not soak.violations, soak.violations
    finally:
        monitor.cancel()
        await asyncio.gather(monitor, return_exceptions=True)
    figures = {**f, **{f"api faults ({k})": n for k, n in soak.faults.injected.items()}}
    figures["duration of the fault phase (s)"] = round(duration)
    figures["seed"] = SEED
    print("\nsoak figures:", dict(sorted(figures.items())))
    assert f["agent kills"] >= 1 and f["steps"] >= 10
