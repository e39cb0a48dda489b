"""One simulated run of one policy: wires the cluster model to the production ``Partitioner`` and one
production ``MigAgent`` per node, drives them on the virtual clock and measures.

The partitioner and the agents run in the production control loop (``nos.runtime.loop.run_loop``)
on the virtual clock (``ClockTrigger``): the partitioner runs ``cycle()`` when a pod becomes
unschedulable or an agent reports (its watches), when the cycle asks for it (``requeue_after``: the open
batch closes, the report wait times out), and every ``partitioner_resync_s``; each agent runs
``reconcile_once()`` every ``agent_interval_s``. After every reconcile the invariants are checked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from functools import partial

from nos.agent.agent import MigAgent
from nos.config import AgentConfig, DevicePluginConfig, FairnessConfig, PartitionerConfig
from nos.gpu.simulated import SimulatedNvml
from nos.kube.port import Obj
from nos.partitioner.controller import Partitioner
from nos.runtime.loop import DEBOUNCE_SECONDS, run_loop
from nos.sim import nodes as sim_nodes
from nos.sim.clock import ClockTrigger, VirtualClock
from nos.sim.cluster import SimCluster
from nos.sim.device_plugin import SimPodResources
from nos.sim.invariants import check_bound_devices_exist, check_in_use_kept, check_layouts
from nos.sim.metrics import PolicyResult, by_profile, device_waits, pending_times, percentile
from nos.sim.nodes import NvmlFactory, SimNode
from nos.sim.policies import POOL_POLICIES, STATIC_POLICIES, greedy_planner, static_layouts
from nos.sim.scenario import DRAIN_S, POLICIES, PodSpec, Scenario, run_end

__all__ = ["DRAIN_S", "run_end", "simulate_policy"]

log = logging.getLogger(__name__)

PARTITIONER = "partitioner"
EVENT_TTL_S = 3600
Progress = Callable[[float], None]


@dataclass
class _Counters:
    reconfigurations: int = 0
    plans: int = 0
    agent_errors: int = 0


def simulate_policy(
    scenario: Scenario,
    pods: Sequence[PodSpec],
    policy: str,
    nvml_factory: NvmlFactory | None = None,
    progress: Progress | None = None,
) -> PolicyResult:
    """Run ``policy`` on ``pods``; raises ``InvariantViolation`` if the cluster reaches an unsafe state."""
    factory = nvml_factory or sim_nodes.simulated_nvml
    return asyncio.run(_simulate(scenario, pods, policy, factory, progress))


async def _simulate(
    scenario: Scenario,
    pods: Sequence[PodSpec],
    policy: str,
    nvml_factory: NvmlFactory,
    progress: Progress | None,
) -> PolicyResult:
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}")
    started = time.perf_counter()
    timings = scenario.timings
    clock = VirtualClock()
    gpu_layouts = (
        static_layouts(scenario, pods, hindsight=policy == "hindsight-static")
        if policy in ("best-static", "hindsight-static")
        else None
    )
    cluster = SimCluster(
        scenario,
        pods,
        clock,
        static=policy == "static",
        nvml_factory=nvml_factory,
        gpu_layouts=gpu_layouts,
        pool=policy if policy in POOL_POLICIES else None,
    )
    last_arrival = max((p.arrival_s for p in pods), default=0.0)
    if last_arrival > 0:
        cluster.metrics.window_end = last_arrival
    end = run_end(scenario, pods)
    counters = _Counters()

    agents: list[MigAgent] = []
    # settled reconciles are skipped only on the simulator's own GPUs, which only their agent changes
    stored = _StoredNodes(cluster) if nvml_factory is sim_nodes.simulated_nvml else None
    # agents only where a partitioner writes plans: with fixed layouts they would have nothing to do
    for node in cluster.nodes.values() if policy not in (*POOL_POLICIES, *STATIC_POLICIES) else ():
        agent = MigAgent(
            node.name,
            node.nvml,
            cluster.kube,
            SimPodResources(node, cluster.resource_of),
            AgentConfig(
                report_interval_seconds=timings.agent_interval_s,
                nvml_call_timeout_seconds=None,  # a wall-clock deadline means nothing on simulated GPUs
                device_plugin=DevicePluginConfig(poll_seconds=timings.device_plugin_poll_s, wait_allocatable=False),
            ),
            cluster.catalog,
            clock=clock.now,
            sleep=clock.sleep,
        )
        agents.append(agent)
        clock.spawn(f"agent-{node.name}", partial(_agent_loop, agent, node, cluster, clock, counters, stored))

    if policy not in (*STATIC_POLICIES, *POOL_POLICIES):
        planner = greedy_planner() if policy == "greedy" else None
        config = PartitionerConfig(
            batch_window_idle_seconds=timings.batch_window_idle_s,
            batch_window_timeout_seconds=timings.batch_window_timeout_s,
            report_timeout_seconds=timings.report_timeout_s,
            fairness=scenario.fairness
            if policy == "nos"
            else FairnessConfig(aging_step_seconds=None, reserve_after_seconds=None),
            profile_shares=scenario.profile_shares if policy == "nos" else 0.0,
            profile_mix=scenario.profile_mix if policy == "nos" else {},
        )
        store = cluster.kube.store

        async def snapshot() -> tuple[Sequence[Obj], Sequence[Obj]]:  # what a watch cache hands out: shared dicts
            return store.shared("nodes"), store.shared("pods")

        partitioner = Partitioner(cluster.kube, clock.now, config, cluster.catalog, planner=planner, source=snapshot)
        cluster.on_candidates = lambda: clock.kick(PARTITIONER)
        clock.spawn(PARTITIONER, lambda: _partitioner_loop(partitioner, clock, scenario, counters))

    old_events: list[tuple[str, str]] = []

    def expire_events() -> None:  # the API server's --event-ttl (1 h): events from an hour ago go
        nonlocal old_events
        store = cluster.kube.store
        for namespace, name in old_events:
            store.delete("events", name, namespace)
        old_events = [(e["metadata"]["namespace"], e["metadata"]["name"]) for e in store.shared("events")]
        clock.after(EVENT_TTL_S, expire_events)

    clock.after(EVENT_TTL_S, expire_events)

    def retry() -> None:  # kube-scheduler's periodic flush of unschedulable pods
        if cluster.pending:
            cluster.request_pass()
        clock.after(timings.scheduler_retry_s, retry)

    clock.after(timings.scheduler_retry_s, retry)

    def sample() -> None:
        cluster.metrics.sample(clock.t, list(cluster.pending.values()), len(cluster.running))
        if progress is not None:
            progress(clock.t)
        if clock.t + timings.sample_s <= end:
            clock.after(timings.sample_s, sample)

    clock.at(0, sample)
    stop_early = scenario.duration_s is None
    try:
        await clock.run_until(end, stop=lambda: stop_early and clock.t >= last_arrival and cluster.all_done())
    finally:
        await clock.close()
        for a in agents:
            a.close()
    t_end = clock.t
    cluster.metrics.sample(t_end, list(cluster.pending.values()), len(cluster.running))
    if progress is not None:
        progress(end)
    all_pods = list(cluster.pods.values())
    waits = pending_times(all_pods, t_end)
    device = device_waits(all_pods)
    finished = [p.finished_at for p in all_pods if p.finished_at is not None]
    layouts: dict[str, int] = {}
    for node in cluster.nodes.values():
        if policy not in STATIC_POLICIES:
            break
        for gpu in range(node.gpus):
            gis = node.nvml.gpu_instances(gpu)
            key = ",".join(f"{p}={n}" for p, n in sorted(Counter(gi.profile for gi in gis).items()))
            layouts[key or "empty"] = layouts.get(key or "empty", 0) + 1
    return PolicyResult(
        policy=policy,
        pods=len(all_pods),
        completed=len(finished),
        never_scheduled=sum(1 for p in all_pods if p.bound_at is None),
        mean_pending_s=sum(waits) / len(waits) if waits else 0.0,
        p50_pending_s=percentile(waits, 50),
        p95_pending_s=percentile(waits, 95),
        max_pending_s=max(waits, default=0.0),
        mean_device_wait_s=sum(device) / len(device) if device else 0.0,
        p95_device_wait_s=percentile(device, 95),
        allocation=cluster.metrics.allocation(t_end),
        device_plugin_restarts=sum(cluster.plugins.restarts.values()),
        node_reconfigurations=counters.reconfigurations,
        plans=counters.plans,
        admission_failures=cluster.admission_failures,
        agent_errors=counters.agent_errors,
        end_s=t_end,
        makespan_s=max(finished) if len(finished) == len(all_pods) and finished else None,
        wall_s=time.perf_counter() - started,
        samples=cluster.metrics.samples,
        layouts=layouts,
        by_profile=by_profile(all_pods, t_end),
    )


class _StoredNodes:
    """Each Node object as the in-memory API server holds it, without a copy: a write replaces
    it, so the same object means the same Node (``MemoryStore.shared``)."""

    def __init__(self, cluster: SimCluster) -> None:
        self._store = cluster.kube.store
        self._seen: tuple[Obj, ...] | None = None
        self._by_name: dict[str, Obj] = {}

    def __call__(self, name: str) -> Obj | None:
        nodes = self._store.shared("nodes")
        if nodes is not self._seen:
            self._seen = nodes
            self._by_name = {n["metadata"]["name"]: n for n in nodes}
        return self._by_name.get(name)


def _agent_inputs(node: SimNode, stored: _StoredNodes) -> Hashable:
    """Everything a reconcile of ``node``'s agent reads: its Node object, its GPUs (in the
    simulator only the agent changes them, and each change is a line of the simulated NVML's
    ``log``) and kubelet's device allocations. The clock is not in it: a ``settled`` reconcile
    waits on no settling window."""
    nvml = node.nvml
    assert isinstance(nvml, SimulatedNvml)
    return stored(node.name), len(nvml.log), frozenset(node.allocated.items())


async def _agent_loop(
    agent: MigAgent,
    node: SimNode,
    cluster: SimCluster,
    clock: VirtualClock,
    counters: _Counters,
    stored: _StoredNodes | None,
) -> None:
    settled_on: Hashable = None
    """The inputs of the last reconcile when it was ``settled`` (None: it was not, or no skipping)."""

    async def reconcile() -> float | None:
        nonlocal settled_on
        inputs = _agent_inputs(node, stored) if stored is not None else None
        if settled_on is not None and inputs == settled_on:
            # the same inputs as a reconcile that did nothing and left nothing pending: this one
            # would do exactly the same nothing, and the invariants were checked on this state
            return None
        settled_on = None
        before = cluster.devices_in_use(node.name)
        try:
            result = await agent.reconcile_once()
        except Exception:  # as in the cluster: a failed reconcile is logged, the loop goes on
            log.exception("reconcile of node %s failed", node.name)
            counters.agent_errors += 1
            result = None
        after = cluster.devices_in_use(node.name)
        check_in_use_kept(node.name, before, after, node.nvml, clock.t)
        check_bound_devices_exist(node.name, after, node.nvml, clock.t)
        check_layouts(node.name, node.model, node.nvml, clock.t)
        if result is not None:
            if result.settled and stored is not None and inputs == _agent_inputs(node, stored):
                settled_on = inputs
            if result.applied is not None and result.applied.changed:
                counters.reconfigurations += 1
            if result.patch:
                clock.kick(PARTITIONER)  # the partitioner watches nodes
        return None

    trigger = ClockTrigger(clock, f"agent-{node.name}")
    await run_loop(
        reconcile, trigger, resync_seconds=agent.config.report_interval_seconds, debounce_seconds=DEBOUNCE_SECONDS
    )


async def _partitioner_loop(
    partitioner: Partitioner, clock: VirtualClock, scenario: Scenario, counters: _Counters
) -> None:
    async def reconcile() -> float | None:
        result = await partitioner.cycle()
        if result.plan is not None and result.written:
            counters.plans += 1
        for name in result.written:  # each agent watches its own Node: a new spec wakes it
            clock.kick(f"agent-{name}")
        return result.requeue_after

    trigger = ClockTrigger(clock, PARTITIONER)
    await run_loop(
        reconcile, trigger, resync_seconds=scenario.timings.partitioner_resync_s, debounce_seconds=DEBOUNCE_SECONDS
    )
