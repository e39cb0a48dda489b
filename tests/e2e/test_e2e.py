"""nos end to end: real kube-apiserver 1.20 + real kube-scheduler, ``PartitionerRunner``, one
``AgentRunner``/``MigAgent`` per fake node on ``SimulatedNvml`` GPUs, and a fake kubelet + device
plugin per node (tests/e2e/fake_kubelet.py), all in this event loop.

The loop under test: a pod asks for ``nvidia.com/mig-<profile>`` → the scheduler marks it
Unschedulable → the partitioner batches and plans, writes the node's spec annotations and explains
itself with Events on the pod → the agent creates the instance through NVML, restarts the device
plugin, reports the status annotations → the plugin publishes the device → the scheduler binds the
pod and the kubelet gives it a specific MIG device.
"""

from __future__ import annotations

from collections import Counter

import pytest

from nos.contract.annotations import SPEC_PLAN, STATUS_PLAN, decode_spec, decode_status
from nos.gpu.simulated import SimulatedCrash
from tests.e2e.cluster import E2ECluster
from tests.realkube.control_plane import eventually

pytestmark = [pytest.mark.timeout(150)]


async def unschedulable_message(cluster: E2ECluster, pod: str) -> str | None:
    p = await cluster.pod(pod)
    for cond in (p.status.conditions or []) if p.status else []:
        if cond.type == "PodScheduled" and cond.status == "False" and cond.reason == "Unschedulable":
            return cond.message or ""
    return None


async def _true_if(condition: bool) -> bool | None:
    return True if condition else None


async def node_annotations(cluster: E2ECluster, node: str) -> dict[str, str]:
    got = await cluster.node(node)
    return dict((got.metadata.annotations or {}) if got.metadata else {})


async def wait_reported(cluster: E2ECluster, node: str, timeout: float = 30) -> None:
    """Until the node's agent has reported the plan its spec names."""

    async def probe() -> bool | None:
        got = await cluster.node(node)
        ann = (got.metadata.annotations or {}) if got.metadata else {}
        return True if ann.get(SPEC_PLAN) and ann.get(STATUS_PLAN) == ann[SPEC_PLAN] else None

    await eventually(probe, timeout, f"node {node} reports its spec plan")


async def assert_node_converged(cluster: E2ECluster, node: str) -> dict[str, str]:
    """The agent's status annotations say exactly what the spec asks, for the plan the spec names, and
    match the node's GPUs (complete instances only); returns the annotations."""
    got = await cluster.node(node)
    assert got.metadata is not None
    ann = dict(got.metadata.annotations or {})
    assert ann.get(SPEC_PLAN) and ann.get(STATUS_PLAN) == ann[SPEC_PLAN], ann
    spec, status = decode_spec(ann), decode_status(ann)
    assert not spec.problems and not status.problems, (spec.problems, status.problems)
    sim = cluster.nvml[node].sim
    for gpu in range(len(sim.gpus())):
        want, have = spec.gpu(gpu), status.gpu(gpu)
        assert +want.profile_counts() == +have.profile_counts(), (node, gpu, want, have)
        assert want.placements is not None and have.placements is not None
        spec_layout = sorted((i.start, i.profile) for i in want.placements)
        status_layout = sorted((i.start, i.profile) for i in have.placements)
        actual = sorted((i.start, i.profile) for i in sim.layout(gpu, complete_only=True))
        assert spec_layout == status_layout == actual, (node, gpu, spec_layout, status_layout, actual)
    return ann


async def test_pending_pod_gets_a_mig_device_and_the_real_scheduler_binds_it(cluster: E2ECluster) -> None:
    nodes = [await cluster.add_node("a"), await cluster.add_node("b")]
    await cluster.start_partitioner()
    await cluster.create_pod("job", "1g.10gb")

    message = await eventually(lambda: unschedulable_message(cluster, "job"), 30, "job marked Unschedulable")
    assert "Insufficient nvidia.com/mig-1g.10gb" in message, message

    node = (await cluster.wait_bound(["job"], timeout=60))["job"]
    assert node in nodes
    ann = await assert_node_converged(cluster, node)
    spec = decode_spec(ann)
    gpus = [i for i, g in spec.gpus.items() if g.profile_counts()["1g.10gb"] == 1]
    assert len(gpus) == 1, spec.gpus

    async def reported_used() -> bool | None:  # the next report (every 3 s) sees the pod's device in use
        got = await cluster.node(node)
        annotations = (got.metadata.annotations or {}) if got.metadata else {}
        return True if decode_status(annotations).gpu(gpus[0]).counts[("1g.10gb", True)] == 1 else None

    await eventually(reported_used, 20, "the agent reports the 1g.10gb as used")

    expected = f"creating 1g.10gb on node {node} GPU {gpus[0]} for this pod, plan {ann[SPEC_PLAN]}"
    events = await cluster.pod_events("job")
    planned = [(e.reason, e.type, e.note) for e in events if e.reportingController == "nos.nebuly.com/partitioner"]
    assert ("MigPlanned", "Normal", expected) in planned, planned

    kubelet = cluster.kubelets[node]
    (device,) = kubelet.allocated_to(cluster.namespace, "job")
    assert device in {uuid for *_, resource, uuid in cluster.nvml[node].devices() if resource.endswith("1g.10gb")}
    assert kubelet.plugin_restarts >= 1
    # The other node got the contract's initial layout (whole-GPU instances), nothing for this pod.
    other = next(n for n in nodes if n != node)
    await wait_reported(cluster, other)
    await assert_node_converged(cluster, other)
    assert "1g.10gb" not in {gi.profile for gi in cluster.nvml[other].all_instances()}


async def test_many_pods_and_profiles_are_all_bound_and_an_unoffered_profile_is_explained(
    cluster: E2ECluster,
) -> None:
    nodes = [await cluster.add_node("a"), await cluster.add_node("b")]
    await cluster.start_partitioner()
    wanted = {"s1": "1g.10gb", "s2": "1g.10gb", "s3": "1g.10gb", "m": "2g.20gb", "l": "3g.40gb", "x": "7g.80gb"}
    for name, profile in wanted.items():
        await cluster.create_pod(name, profile)
    await cluster.create_pod("bad", "3g.20gb")  # an A100-40GB profile: no GPU here offers it

    bound = await cluster.wait_bound(sorted(wanted), timeout=90)
    assert set(bound.values()) <= set(nodes)
    for name, node in bound.items():
        devices = {uuid: resource for *_, resource, uuid in cluster.nvml[node].devices()}
        allocated = cluster.kubelets[node].allocated_to(cluster.namespace, name)
        assert len(allocated) == 1, (name, allocated)
        assert devices.get(next(iter(allocated))) == f"nvidia.com/mig-{wanted[name]}", (name, devices)
    for node in nodes:
        await wait_reported(cluster, node)
        await assert_node_converged(cluster, node)

    async def reported_used() -> Counter[str] | None:  # the agents' next reports see every device in use
        used = Counter[str]()
        for node in nodes:
            got = await cluster.node(node)
            status = decode_status((got.metadata.annotations or {}) if got.metadata else {})
            for gpu in status.gpus.values():
                used.update({p: n for (p, is_used), n in gpu.counts.items() if is_used})
        return used if +used == Counter(wanted.values()) else None

    await eventually(reported_used, 20, f"the agents report {sorted(wanted.values())} as used")

    async def explained() -> list[str] | None:
        notes = [e.note or "" for e in await cluster.pod_events("bad") if e.reason == "MigUnplaceable"]
        return notes or None

    notes = await eventually(explained, 30, "a MigUnplaceable Event on pod bad")
    warnings = [e for e in await cluster.pod_events("bad") if e.reason == "MigUnplaceable"]
    assert all(e.type == "Warning" for e in warnings)
    assert any("nvidia.com/mig-3g.20gb" in n and "no GPU model in the cluster offers" in n for n in notes), notes
    bad = await cluster.pod("bad")
    assert bad.spec is not None and not bad.spec.nodeName
    assert await unschedulable_message(cluster, "bad") is not None


@pytest.mark.parametrize("kill", ["crash_between_gi_and_ci", "cancel_after_new_spec"])
async def test_agent_killed_mid_apply_restarts_and_converges(cluster: E2ECluster, kill: str) -> None:
    node = await cluster.add_node("a")
    await cluster.start_partitioner()
    await cluster.create_pod("first", "1g.10gb")
    await cluster.wait_bound(["first"], timeout=60)
    await wait_reported(cluster, node)
    kubelet = cluster.kubelets[node]
    (first_device,) = kubelet.allocated_to(cluster.namespace, "first")
    first_plan = (await node_annotations(cluster, node))[SPEC_PLAN]
    before = cluster.nvml[node].all_instances()
    old = cluster.agents[node]
    if kill == "crash_between_gi_and_ci":  # kill -9 between the two halves of the next create
        cluster.nvml[node].sim.crash_after_gpu_instance(1)
    else:  # the agent's first NVML change for the new plan waits, then the process is killed
        cluster.nvml[node].hold()
    await cluster.create_pod("second", "3g.40gb")
    await cluster.create_pod("third", "2g.20gb")

    if kill == "crash_between_gi_and_ci":

        async def died() -> BaseException | None:
            return old.task.exception() if old.task.done() else None

        crash = await eventually(died, 60, "the agent dies in the middle of its apply")
        assert isinstance(crash, SimulatedCrash), repr(crash)
        half = [gi for gi in cluster.nvml[node].all_instances() if not gi.compute_instances]
        assert len(half) == 1, cluster.nvml[node].all_instances()  # a GPU instance without its compute instance
        ann = await node_annotations(cluster, node)
        assert ann[SPEC_PLAN] != first_plan and ann[STATUS_PLAN] == first_plan  # the new plan was never reported
    else:

        async def new_spec() -> bool | None:
            return True if (await node_annotations(cluster, node)).get(SPEC_PLAN) != first_plan else None

        await eventually(new_spec, 60, "the partitioner writes a new spec")
        held = cluster.nvml[node].held
        await eventually(lambda: _true_if(held.is_set()), 30, "the agent starts applying the new spec")
        assert not old.task.done()
        assert cluster.nvml[node].all_instances() == before  # nothing changed yet

    await cluster.restart_agent(node)  # on what the dead agent left on the GPUs

    await cluster.wait_bound(["first", "second", "third"], timeout=90)
    await wait_reported(cluster, node)
    await assert_node_converged(cluster, node)
    nvml = cluster.nvml[node]
    instances = nvml.all_instances()
    assert all(gi.compute_instances for gi in instances), instances  # no half-created instance left
    assert first_device in {uuid for gi in instances for uuid in gi.device_uuids}  # in use: never destroyed
    assert kubelet.allocated_to(cluster.namespace, "first") == {first_device}
    devices = {uuid: resource for *_, resource, uuid in nvml.devices()}
    for pod, profile in (("second", "3g.40gb"), ("third", "2g.20gb")):
        (device,) = kubelet.allocated_to(cluster.namespace, pod)
        assert devices[device] == f"nvidia.com/mig-{profile}"
