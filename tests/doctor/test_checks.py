"""Each doctor check on its own: the healthy case, then the misconfiguration it is there to catch."""

from __future__ import annotations

import json
from typing import Any

import pytest

from nos.contract.annotations import STATUS_PLAN
from nos.doctor import ClusterFacts, Status, run_checks
from nos.doctor.checks import (
    check_agent,
    check_gpu_model,
    check_labelled_nodes,
    check_mig_manager,
    check_mig_resources,
    check_spec_status,
    check_status_reported,
)
from nos.mig.catalog import default_catalog
from nos.mig.layout import Instance
from tests.doctor.factories import agent_pod, gpu_node, healthy_annotations, mig_manager_pod

CATALOG = default_catalog()
NOW = 1_700_000_000.0


# --- labelled nodes ------------------------------------------------------------------------------


def test_no_labelled_node_is_a_failure() -> None:
    finding = check_labelled_nodes(
        [gpu_node(opt_in=None), gpu_node("mps", labels={"nos.nebuly.com/gpu-partitioning": "mps"}, opt_in=None)]
    )
    assert finding.status is Status.FAILURE
    assert "nos.nebuly.ai/gpu-partitioning=mig or nos.nebuly.com/gpu-partitioning=mig" in finding.message


def test_either_label_key_opts_a_node_in() -> None:
    nodes = [gpu_node("a"), gpu_node("b", opt_in="nos.nebuly.com/gpu-partitioning"), gpu_node("c", opt_in=None)]
    finding = check_labelled_nodes(nodes)
    assert finding.status is Status.OK
    assert finding.message == "2 node(s) opted in: a, b"


# --- GPU model -----------------------------------------------------------------------------------


def test_known_product_is_ok_even_with_the_gfd_suffix() -> None:
    assert check_gpu_model(gpu_node(), CATALOG).status is Status.OK
    suffixed = gpu_node(labels={"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB-MIG-1g.10gb"})
    finding = check_gpu_model(suffixed, CATALOG)
    assert finding.status is Status.OK and "A100-80GB" in finding.message


def test_missing_or_unknown_product_fails() -> None:
    node = gpu_node()
    del node["metadata"]["labels"]["nvidia.com/gpu.product"]
    missing = check_gpu_model(node, CATALOG)
    assert missing.status is Status.FAILURE and "feature discovery" in missing.message
    unknown = check_gpu_model(gpu_node(labels={"nvidia.com/gpu.product": "Tesla-T4"}), CATALOG)
    assert unknown.status is Status.FAILURE and "Tesla-T4" in unknown.message


def test_missing_gpu_count_warns() -> None:
    node = gpu_node()
    del node["metadata"]["labels"]["nvidia.com/gpu.count"]
    assert check_gpu_model(node, CATALOG).status is Status.WARNING


# --- MIG resources -------------------------------------------------------------------------------


def test_mixed_strategy_resources_are_ok() -> None:
    finding = check_mig_resources(gpu_node())
    assert finding.status is Status.OK
    assert finding.message == "advertised: nvidia.com/mig-1g.10gb: 2, nvidia.com/mig-3g.40gb: 1"


def test_whole_gpus_advertised_fail() -> None:
    node = gpu_node(allocatable={"nvidia.com/gpu": "1"})
    node["metadata"]["labels"].pop("nvidia.com/mig.strategy")
    finding = check_mig_resources(node)
    assert finding.status is Status.FAILURE
    assert "1 whole GPU(s)" in finding.message and "mixed" in finding.message


def test_single_strategy_fails_even_with_mig_devices() -> None:
    node = gpu_node(labels={"nvidia.com/mig.strategy": "single"}, allocatable={"nvidia.com/gpu": "7"})
    finding = check_mig_resources(node)
    assert finding.status is Status.FAILURE and "mig.strategy=mixed" in finding.message


@pytest.mark.parametrize("allocatable", [{}, {"nvidia.com/mig-1g.10gb": "0", "nvidia.com/gpu": "0"}])
def test_no_mig_device_yet_warns(allocatable: dict[str, str]) -> None:
    assert check_mig_resources(gpu_node(allocatable=allocatable)).status is Status.WARNING


# --- NVIDIA MIG manager --------------------------------------------------------------------------


def test_mig_manager_label_or_pod_warns() -> None:
    assert check_mig_manager(gpu_node(), []).status is Status.OK
    labelled = check_mig_manager(gpu_node(labels={"nvidia.com/mig.config": "all-1g.10gb"}), [])
    assert labelled.status is Status.WARNING and "nvidia.com/mig.config=all-1g.10gb" in labelled.message
    running = check_mig_manager(gpu_node(), [mig_manager_pod("gpu-1")])
    assert running.status is Status.WARNING and "gpu-operator/nvidia-mig-manager-gpu-1" in running.message
    assert check_mig_manager(gpu_node(), [mig_manager_pod("other")]).status is Status.OK


# --- agent ---------------------------------------------------------------------------------------


def test_agent_running_and_ready_is_ok() -> None:
    finding = check_agent(gpu_node(), [agent_pod("gpu-1")])
    assert finding.status is Status.OK and "nos-system/nos-mig-agent-gpu-1" in finding.message


def test_agent_missing_or_only_elsewhere_fails() -> None:
    assert check_agent(gpu_node(), []).status is Status.FAILURE
    assert check_agent(gpu_node(), [agent_pod("gpu-2")]).status is Status.FAILURE


def test_agent_not_running_fails_with_the_reason() -> None:
    finding = check_agent(gpu_node(), [agent_pod("gpu-1", phase="Pending", ready=False, waiting="CrashLoopBackOff")])
    assert finding.status is Status.FAILURE and "Pending (CrashLoopBackOff)" in finding.message


def test_agent_running_but_not_ready_warns() -> None:
    assert check_agent(gpu_node(), [agent_pod("gpu-1", ready=False)]).status is Status.WARNING


# --- status reported -----------------------------------------------------------------------------


def test_status_reported_for_the_plan() -> None:
    finding = check_status_reported(gpu_node())
    assert finding.status is Status.OK and finding.message == "3 MIG device(s) reported for plan p1"


def test_no_status_annotation_fails() -> None:
    assert check_status_reported(gpu_node(annotations={})).status is Status.FAILURE


def test_malformed_status_fails() -> None:
    node = gpu_node(annotations={"nos.nebuly.com/status-gpu-0-1g.10gb-free": "many"})
    finding = check_status_reported(node)
    assert finding.status is Status.FAILURE and "status-gpu-0-1g.10gb-free" in finding.message


def test_status_without_plan_is_ok_until_a_spec_exists() -> None:
    status_only = {k: v for k, v in healthy_annotations().items() if "status-" in k and k != STATUS_PLAN}
    assert check_status_reported(gpu_node(annotations=status_only)).status is Status.OK
    with_spec = {k: v for k, v in healthy_annotations().items() if k != STATUS_PLAN}
    assert check_status_reported(gpu_node(annotations=with_spec)).status is Status.WARNING


# --- spec and status -----------------------------------------------------------------------------


def test_spec_equal_to_status_is_ok() -> None:
    finding = check_spec_status(gpu_node(), NOW)
    assert finding.status is Status.OK and finding.message == "layout matches plan p1"


def test_no_spec_yet_is_ok() -> None:
    status_only = {k: v for k, v in healthy_annotations().items() if "status-" in k}
    assert check_spec_status(gpu_node(annotations=status_only), NOW).status is Status.OK


def test_pending_plan_is_ok_while_recent_and_warns_when_late() -> None:
    recent = {**healthy_annotations(), "nos.nebuly.com/spec-partitioning-plan": str(int(NOW - 30))}
    finding = check_spec_status(gpu_node(annotations=recent), NOW)
    assert finding.status is Status.OK and "pending (agent reported p1)" in finding.message
    late = {**healthy_annotations(), "nos.nebuly.com/spec-partitioning-plan": str(int(NOW - 900))}
    finding = check_spec_status(gpu_node(annotations=late), NOW)
    assert finding.status is Status.WARNING and "for 900 s" in finding.message
    assert check_spec_status(gpu_node(annotations=late), NOW, pending_grace_s=1000).status is Status.OK


def test_applied_plan_with_different_counts_warns_per_gpu() -> None:
    annotations = healthy_annotations()
    actual = (Instance(0, "1g.10gb", used=True), Instance(4, "4g.40gb", used=True))
    annotations.update({k: v for k, v in healthy_annotations(layout=actual).items() if "status-" in k})
    for key in [k for k in annotations if k.startswith("nos.nebuly.com/status-gpu-0-3g") or "1g.10gb-free" in k]:
        annotations.pop(key)
    finding = check_spec_status(gpu_node(annotations=annotations), NOW)
    assert finding.status is Status.WARNING
    assert "GPU 0: spec 1g.10gb×2, 3g.40gb×1, actual 1g.10gb×1, 4g.40gb×1" in finding.message


def test_malformed_spec_fails() -> None:
    annotations = {**healthy_annotations(), "nos.nebuly.com/spec-gpu-0-1g.10gb": "-1"}
    assert check_spec_status(gpu_node(annotations=annotations), NOW).status is Status.FAILURE


# --- the whole report ----------------------------------------------------------------------------


def _facts(*nodes: dict[str, Any], agents: bool = True) -> ClusterFacts:
    pods = [agent_pod(n["metadata"]["name"]) for n in nodes] if agents else []
    return ClusterFacts(nodes=list(nodes), agent_pods=pods)


def test_healthy_cluster_exits_zero() -> None:
    report = run_checks(_facts(gpu_node("a"), gpu_node("b", opt_in="nos.nebuly.com/gpu-partitioning")), now=NOW)
    assert report.exit_code == 0
    assert len(report.findings) == 1 + 2 * 6
    assert {f.node for f in report.findings} == {None, "a", "b"}


def test_worst_finding_sets_the_exit_code() -> None:
    warn = run_checks(_facts(gpu_node(labels={"nvidia.com/mig.config": "all-disabled"})), now=NOW)
    assert warn.exit_code == 1
    fail = run_checks(_facts(gpu_node(), agents=False), now=NOW)
    assert fail.exit_code == 2
    assert run_checks(ClusterFacts(), now=NOW).exit_code == 2


def test_nodes_without_the_label_are_not_checked() -> None:
    report = run_checks(_facts(gpu_node("a"), gpu_node("plain", opt_in=None, annotations={})), now=NOW)
    assert "plain" not in {f.node for f in report.findings}


def test_text_and_json_renderings() -> None:
    report = run_checks(_facts(gpu_node("a"), gpu_node("b", labels={"nvidia.com/mig.config": "x"})), now=NOW)
    text = report.to_text()
    assert text.splitlines()[0] == "cluster"
    assert "node a" in text and "node b" in text
    assert "  ✔ labelled-nodes " in text and "  ⚠ mig-manager " in text
    assert text.endswith("12 ok, 1 warning(s), 0 failure(s)")
    data = json.loads(report.to_json())
    assert data["exitCode"] == 1
    assert data["summary"] == {"ok": 12, "warning": 1, "failure": 0}
    (warning,) = [f for f in data["findings"] if f["status"] == "warning"]
    assert warning["node"] == "b" and warning["check"] == "mig-manager"
