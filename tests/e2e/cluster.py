"""An e2e cluster in one event loop: the real apiserver + scheduler (fixtures), nos' ``PartitionerRunner``,
one ``AgentRunner`` per fake node and that node's ``FakeKubelet``, all as asyncio tasks.

Nodes and pods of one test carry the test's unique name: nodes are labelled ``nos-e2e=<unique>`` and
tainted ``nos-e2e=<unique>:NoSchedule``, and the test's pods select and tolerate exactly that, so
neither the real scheduler nor nos' planner mixes tests that share the control plane. ``close``
stops every task and deletes the test's pods (grace 0) and nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from lightkube import ApiError, AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, Node, Pod
from lightkube.resources.events_v1 import Event

from nos.agent.agent import MigAgent
from nos.agent.runner import AgentRunner
from nos.config import AgentConfig, DevicePluginConfig, NosConfig, load_config
from nos.gpu.simulated import SimulatedNvml
from nos.kube.client import LightkubeKube, RetryPolicy
from nos.partitioner.runner import PartitionerRunner
from nos.runtime.manager import Manager
from tests.e2e.fake_kubelet import PLUGIN_NAMESPACE, FakeKubelet, LockedNvml
from tests.realkube.control_plane import ControlPlane, eventually

log = logging.getLogger(__name__)
T = TypeVar("T")

A100_80GB = "NVIDIA-A100-SXM4-80GB"
SCOPE_KEY = "nos-e2e"
QUICK_RETRY = RetryPolicy(attempts=4, base_delay=0.05, max_delay=0.5)


def partitioner_config(batch_timeout_s: float = 5, **partitioner: Any) -> NosConfig:
    """The e2e tiers' partitioner settings: a 1 s idle / ``batch_timeout_s`` batch window, plus
    ``partitioner`` keys (config file spelling, e.g. ``leaderElection``)."""
    return load_config(
        None,
        env={},
        overrides={
            "partitioner": {
                "batchWindowIdleSeconds": 1,
                "batchWindowTimeoutSeconds": batch_timeout_s,
                **partitioner,
            }
        },
    )


def partitioner_process(
    kube: LightkubeKube, config: NosConfig, identity: str, *, watch_timeout_seconds: int, resync_seconds: float
) -> tuple[Manager, PartitionerRunner]:
    """What ``nos partitioner`` builds (a 0.2 s debounce); ``manager.run(runner, stop)`` runs it."""
    manager = Manager(
        kube,
        election=config.partitioner.leader_election,
        identity=identity,
        debounce_seconds=0.2,
        watch_timeout_seconds=watch_timeout_seconds,
    )
    return manager, PartitionerRunner(manager, config.partitioner, resync_seconds=resync_seconds)


@dataclass
class AgentHandle:
    agent: MigAgent
    runner: AgentRunner
    manager: Manager
    kube: LightkubeKube
    stop: asyncio.Event
    task: asyncio.Task[None]


@dataclass
class E2ECluster:
    cp: ControlPlane
    unique: str
    client: AsyncClient
    namespace: str
    partitioner_kube: LightkubeKube | None = None
    partitioner: PartitionerRunner | None = None
    partitioner_manager: Manager | None = None
    partitioner_stop: asyncio.Event = field(default_factory=asyncio.Event)
    partitioner_task: asyncio.Task[None] | None = None
    kubelets: dict[str, FakeKubelet] = field(default_factory=dict)
    nvml: dict[str, LockedNvml] = field(default_factory=dict)
    agents: dict[str, AgentHandle] = field(default_factory=dict)
    retired: list[AgentHandle] = field(default_factory=list)

    # -- set-up ------------------------------------------------------------------------------------
    @classmethod
    async def create(cls, cp: ControlPlane, unique: str) -> E2ECluster:
        client = cp.client()
        await client.create(Namespace(metadata=ObjectMeta(name=unique)))
        return cls(cp=cp, unique=unique, client=client, namespace=unique)

    @property
    def scope(self) -> dict[str, str]:
        return {SCOPE_KEY: self.unique}

    def node_name(self, suffix: str) -> str:
        return f"{self.unique}-{suffix}"

    async def add_node(self, suffix: str, gpus: int = 2, model: str = "A100-80GB") -> str:
        """A fake node with ``gpus`` empty simulated GPUs, its kubelet and device plugin, and its agent."""
        name = self.node_name(suffix)
        sim = SimulatedNvml.new(model, gpus, node=name)
        self.nvml[name] = LockedNvml(sim)
        labels = {
            "nos.nebuly.ai/gpu-partitioning": "mig",
            "nvidia.com/gpu.product": A100_80GB,
            "nvidia.com/gpu.count": str(gpus),
            "kubernetes.io/hostname": name,
            **self.scope,
        }
        taints = [{"key": SCOPE_KEY, "value": self.unique, "effect": "NoSchedule"}]
        kubelet = FakeKubelet(self.client, name, self.nvml[name], labels=labels, taints=taints)
        await kubelet.start()
        self.kubelets[name] = kubelet
        await self.start_agent(name)
        return name

    agent_watch_timeout_seconds = 60

    def agent_kube(self, node: str) -> LightkubeKube:
        return LightkubeKube(self.cp.client(), component="agent", instance=f"agent-{node}", retry=QUICK_RETRY)

    def agent_config(self) -> AgentConfig:
        return AgentConfig(
            report_interval_seconds=3.0,
            device_plugin=DevicePluginConfig(timeout_seconds=30, poll_seconds=0.1),
        )

    async def start_agent(self, node: str) -> AgentHandle:
        kube = self.agent_kube(node)
        manager = Manager(kube, debounce_seconds=0.1, watch_timeout_seconds=self.agent_watch_timeout_seconds)
        agent = MigAgent(
            node,
            self.nvml[node],
            kube,
            self.kubelets[node].podresources(),
            self.agent_config(),
            recorder=manager.recorder,
        )
        runner = AgentRunner(manager, agent)
        stop = asyncio.Event()
        task = asyncio.create_task(manager.run(runner, stop), name=f"agent-{node}")
        handle = AgentHandle(agent, runner, manager, kube, stop, task)
        self.agents[node] = handle
        return handle

    async def restart_agent(self, node: str) -> AgentHandle:
        """Kill the node's agent process (its task is cancelled if still running; its NVML handle dies)
        and start a new one on the GPU state it left behind."""
        old = self.agents.pop(node)
        old.task.cancel()
        await asyncio.gather(old.task, return_exceptions=True)
        self.retired.append(old)
        self.nvml[node] = self.nvml[node].restart()
        self.kubelets[node].nvml = self.nvml[node]
        return await self.start_agent(node)

    async def start_partitioner(self) -> PartitionerRunner:
        config = partitioner_config(reportTimeoutSeconds=60, leaderElection={"enabled": False})
        self.partitioner_kube = LightkubeKube(
            self.cp.client(), component="partitioner", instance="partitioner-e2e", retry=QUICK_RETRY
        )
        manager, self.partitioner = partitioner_process(
            self.partitioner_kube, config, "e2e", watch_timeout_seconds=60, resync_seconds=5
        )
        self.partitioner_manager = manager
        self.partitioner_task = asyncio.create_task(
            manager.run(self.partitioner, self.partitioner_stop), name="partitioner"
        )
        return self.partitioner

    # -- pods --------------------------------------------------------------------------------------
    async def create_pod(self, name: str, profile: str, count: int = 1, node: str | None = None) -> None:
        """A pod asking for ``count`` ``nvidia.com/mig-<profile>``, confined to this test's nodes
        (``node``: to that one)."""
        selector = dict(self.scope)
        if node is not None:
            selector["kubernetes.io/hostname"] = node
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {
                "containers": [
                    {
                        "name": "main",
                        "image": "busybox",
                        "resources": {"limits": {f"nvidia.com/mig-{profile}": str(count)}},
                    }
                ],
                "nodeSelector": selector,
                "tolerations": [{"key": SCOPE_KEY, "operator": "Equal", "value": self.unique, "effect": "NoSchedule"}],
            },
        }
        await self.client.create(cast(Pod, Pod.from_dict(body)))

    async def pod(self, name: str) -> Pod:
        return await self.client.get(Pod, name, namespace=self.namespace)

    async def node(self, name: str) -> Node:
        return await self.client.get(Node, name)

    async def wait_bound(self, names: list[str], timeout: float = 60) -> dict[str, str]:
        """pod -> node once every pod is bound and Running (the fake kubelet admitted it)."""

        async def probe() -> dict[str, str] | None:
            out: dict[str, str] = {}
            for n in names:
                p = await self.pod(n)
                if not (p.spec and p.spec.nodeName and p.status and p.status.phase == "Running"):
                    return None
                out[n] = p.spec.nodeName
            return out

        return await eventually(probe, timeout, f"pods {names} bound and Running")

    async def pod_events(self, pod: str) -> list[Event]:
        events = self.client.list(Event, namespace=self.namespace)
        return [e async for e in events if e.regarding is not None and e.regarding.name == pod]

    # -- tear-down ---------------------------------------------------------------------------------
    async def stop_agent(self, node: str, timeout: float = 15) -> None:
        handle = self.agents.pop(node)
        handle.stop.set()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(asyncio.shield(handle.task), timeout)
        handle.task.cancel()
        await asyncio.gather(handle.task, return_exceptions=True)
        self.retired.append(handle)

    async def close(self) -> None:
        for node in list(self.agents):
            await self.stop_agent(node)
        if self.partitioner_task is not None:
            self.partitioner_stop.set()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(self.partitioner_task), 15)
            self.partitioner_task.cancel()
            await asyncio.gather(self.partitioner_task, return_exceptions=True)
        for kubelet in self.kubelets.values():
            await kubelet.stop()
        for handle in self.retired:
            handle.agent.close()
            await handle.kube.close()
        if self.partitioner_kube is not None:
            await self.partitioner_kube.close()
        # Leave nothing this test's successors could schedule onto or plan around.
        with contextlib.suppress(ApiError):
            async for p in self.client.list(Pod, namespace=self.namespace):
                assert p.metadata is not None and p.metadata.name is not None
                await self.client.delete(Pod, p.metadata.name, namespace=self.namespace, grace_period=0)
        for name in self.kubelets:
            with contextlib.suppress(ApiError):
                async for p in self.client.list(Pod, namespace=PLUGIN_NAMESPACE, fields={"spec.nodeName": name}):
                    assert p.metadata is not None and p.metadata.name is not None
                    await self.client.delete(Pod, p.metadata.name, namespace=PLUGIN_NAMESPACE, grace_period=0)
            with contextlib.suppress(ApiError):
                await self.client.delete(Node, name)
        await self.client.close()
