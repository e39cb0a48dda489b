"""The agent against what real drivers do (issue 14), on the simulated GPUs: a caller without the
MIG monitor capability, processes outside the agent's PID namespace, GPU instance ids re-used by
placement, and GPU instances another tool split into several compute instances."""

from __future__ import annotations

import pytest

from nos.agent.apply import Applier
from nos.agent.reconcile import Op
from nos.contract.annotations import encode_spec
from nos.gpu.simulated import Caller, SimProcess, SimulatedNvml
from nos.mig.layout import Instance
from tests.agent.fake_kubelet import FakeKubelet
from tests.agent.helpers import provision
from tests.agent.test_agent import SPEC, make

CHART_BEFORE = Caller(config=True, monitor=False, pid_namespace="agent")
"""The chart's agent before issue 14: NVIDIA_MIG_CONFIG_DEVICES + SYS_ADMIN only, its own PID namespace."""
CHART_NOW = Caller(config=True, monitor=True, pid_namespace="agent")
"""NVIDIA_MIG_MONITOR_DEVICES=all added; hostPID off (the default)."""


@pytest.mark.asyncio
async def test_no_monitor_capability_degrades_the_busy_check_with_one_warning(kubelet: FakeKubelet) -> None:
    nvml = SimulatedNvml.new("A100-80GB", caller=CHART_BEFORE)
    provision(nvml, 0, "7g.80gb", 0)
    s = make(SPEC, nvml, kubelet)
    result = await s.agent.reconcile_once()  # used to abort with NO_PERMISSION on every MIG GPU
    assert result.applied is not None and result.applied.failures == []
    assert nvml.layout(0) == (Instance(0, "3g.40gb"), Instance(4, "3g.40gb"))
    await s.agent.reconcile_once()
    warnings = [e for e in s.kube.events if e.reason == "BusyProcessCheckUnavailable"]
    assert len(warnings) == 1 and warnings[0].type == "Warning"
    assert "NVML_ERROR_NO_PERMISSION" in warnings[0].note and "NVIDIA_MIG_MONITOR_DEVICES" in warnings[0].note
    await s.kube.settle()


@pytest.mark.asyncio
async def test_with_the_monitor_capability_there_is_no_warning(kubelet: FakeKubelet) -> None:
    s = make(SPEC, SimulatedNvml.new("A100-80GB", caller=CHART_NOW), kubelet)
    await s.agent.reconcile_once()
    assert "BusyProcessCheckUnavailable" not in [e.reason for e in s.kube.events]
    await s.kube.settle()


@pytest.mark.asyncio
@pytest.mark.parametrize("pid_namespace", ["agent", "host"])
async def test_busy_safety_net_needs_host_pid(kubelet: FakeKubelet, pid_namespace: str) -> None:
    """A process kubelet does not account for (no GPU request, e.g. a privileged debug pod) runs in
    an instance the spec drops. With hostPID the agent sees it and keeps the instance; without, only
    the driver's own IN_USE refusal saves it (the destroy is attempted and fails)."""
    nvml = SimulatedNvml.new("A100-80GB", caller=Caller(pid_namespace=pid_namespace))
    gi = provision(nvml, 0, "7g.80gb", 0)
    nvml.set_processes(0, [SimProcess(4242, gi.gi_id, pid_namespace="pod-debug")])
    s = make(SPEC, nvml, kubelet)
    result = await s.agent.reconcile_once()
    assert nvml.layout(0) == (Instance(0, "7g.80gb", used=True),)
    if pid_namespace == "host":
        assert all(o.kind != "destroy" for o in result.ops)
        assert "in use" in " ".join(str(k) for k in result.skipped)
    else:
        assert result.applied is not None
        failed = [f for f in result.applied.failures if f.op.kind == "destroy"]
        assert [f.error for f in failed] == [
            "NVML_ERROR_IN_USE: GPU 0: GPU instance 0 (7g.80gb@0) has running processes [4242]"
        ]
    await s.kube.settle()


def test_destroy_skips_an_instance_re_created_since_planning() -> None:
    """The driver gives an instance re-created at the same place the same id: only the MIG device
    UUID shows that the planned instance is gone and someone else's new one is there."""
    nvml = SimulatedNvml.new("A100-80GB")
    planned = provision(nvml, 0, "3g.40gb", 4)
    op = Op(0, "destroy", "3g.40gb", 4, 4, planned.gi_id, device_uuids=planned.device_uuids)
    nvml.destroy_gpu_instance(0, planned.gi_id)  # meanwhile, another tool re-creates it
    again = provision(nvml, 0, "3g.40gb", 4)
    assert (again.gi_id, again.start, again.size) == (planned.gi_id, planned.start, planned.size)
    [result] = Applier(nvml).apply([op]).results
    assert not result.ok and result.error == "the instance was re-created since planning (other MIG device UUID)"
    assert nvml.gpu_instances(0) == [again]


@pytest.mark.parametrize(
    ("change", "error"),
    [("gone", "the instance is gone since planning"), ("moved", "the instance changed since planning (now")],
)
def test_destroy_skips_an_instance_that_changed(change: str, error: str) -> None:
    nvml = SimulatedNvml.new("A100-80GB")
    planned = provision(nvml, 0, "4g.40gb", 0)
    op = Op(0, "destroy", "4g.40gb", 0, 4, planned.gi_id, device_uuids=planned.device_uuids)
    nvml.destroy_gpu_instance(0, planned.gi_id)
    if change == "moved":  # another profile now holds the same id (the 3g at 0 is partition 1 too)
        assert provision(nvml, 0, "3g.40gb", 0).gi_id == planned.gi_id
    [result] = Applier(nvml).apply([op]).results
    assert not result.ok and (result.error or "").startswith(error)


@pytest.mark.asyncio
async def test_a_free_split_instance_is_replaced_not_reused(kubelet: FakeKubelet) -> None:
    nvml = SimulatedNvml.new("A100-80GB")
    split = nvml.create_gpu_instance(0, "3g.40gb", 0).gi_id
    nvml.add_compute_instance(0, split, 1)
    nvml.add_compute_instance(0, split, 2)
    provision(nvml, 0, "3g.40gb", 4)
    s = make(SPEC, nvml, kubelet)
    result = await s.agent.reconcile_once()
    assert [(o.kind, o.start) for o in result.ops] == [("destroy", 0), ("create", 0)]
    assert "split into 2 compute instance(s)" in result.ops[0].reason
    assert [len(gi.compute_instances) for gi in nvml.gpu_instances(0)] == [1, 1]
    assert not any(gi.split for gi in nvml.gpu_instances(0))
    await s.kube.settle()


@pytest.mark.asyncio
async def test_a_split_instance_in_use_is_kept_reported_used_and_never_completed(kubelet: FakeKubelet) -> None:
    nvml = SimulatedNvml.new("A100-80GB")
    split = nvml.create_gpu_instance(0, "3g.40gb", 0).gi_id
    ci = nvml.add_compute_instance(0, split, 1)
    [(_, _, uuid)] = nvml.compute_instances(0, split)
    kubelet.allocations[("ml", "p", "c")] = {"nvidia.com/mig-1c.3g.40gb": [uuid]}
    nvml.set_processes(0, [SimProcess(7, split, ci)])
    s = make(encode_spec({0: [Instance(0, "3g.40gb"), Instance(4, "3g.40gb")]}, "p"), nvml, kubelet)
    result = await s.agent.reconcile_once()
    assert [(o.kind, o.start) for o in result.ops] == [("create", 4)]  # no "complete", no destroy
    assert any("split into 1 compute instances" in k.reason for k in result.skipped)
    assert s.annotations()["nos.nebuly.com/status-placement-gpu-0"] == "3g.40gb@0:used,3g.40gb@4:free"
    assert nvml.compute_instances(0, split) == [(ci, 1, uuid)]
    await s.kube.settle()
