"""Issue 10 finding 5: least privilege by default. The chart renders, with default values, the
ValidatingAdmissionPolicies that confine the agent (status annotations of its own Node, the device
plugin pod of its own node) and the partitioner (spec annotations of labelled Nodes), and mounts
the pod-resources directory read-only. The real control plane tier runs Kubernetes 1.20, which has
no ValidatingAdmissionPolicy, so the policies' CEL is evaluated here with cel-python on admission
requests shaped like the apiserver's (and the objects are schema-checked by test_chart.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.chart.conftest import Manifest, find, render_chart, require

AGENT = "system:serviceaccount:nos-system:nos-mig-agent"
PARTITIONER = "system:serviceaccount:nos-system:nos-partitioner"
NODE_CLAIM = "authentication.kubernetes.io/node-name"


@pytest.fixture(scope="module")
def default() -> list[Manifest]:
    return render_chart()


def admit(policy: Manifest, request: dict[str, Any]) -> list[str] | None:
    """The messages of the failed validations (empty: admitted); None when the policy does not
    apply (a match condition is false). Variables are evaluated in order, as the apiserver does."""
    celpy = require("celpy", "CEL evaluator (cel-python)")
    env = celpy.Environment()

    def evaluate(expression: str, variables: dict[str, Any]) -> Any:
        program = env.program(env.compile(expression))
        return program.evaluate(celpy.json_to_cel({**request, "variables": variables}))

    spec = policy["spec"]
    for condition in spec.get("matchConditions", []):
        if not evaluate(condition["expression"], {}):
            return None
    variables: dict[str, Any] = {}
    for v in spec.get("variables", []):
        variables[v["name"]] = _plain(evaluate(v["expression"], variables))
    return [v["message"] for v in spec["validations"] if not evaluate(v["expression"], variables)]


def _plain(value: Any) -> Any:
    """A CEL value back to JSON-ish Python (for the next expression's activation)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, str) else value


def node(name: str = "gpu-1", labelled: bool = True, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    labels = {"kubernetes.io/hostname": name, **({"nos.nebuly.com/gpu-partitioning": "mig"} if labelled else {})}
    return {
        "metadata": {"name": name, "labels": labels, "annotations": dict(annotations or {"keep": "me"})},
        "spec": {"taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]},
    }


def update(user: str, old: dict[str, Any], change: Any, node_name: str | None = "gpu-1") -> dict[str, Any]:
    new = copy.deepcopy(old)
    change(new)
    extra = {NODE_CLAIM: [node_name]} if node_name else {}
    return {"object": new, "oldObject": old, "request": {"userInfo": {"username": user, "extra": extra}}}


def set_annotation(key: str, value: str | None) -> Any:
    def change(obj: dict[str, Any]) -> None:
        if value is None:
            obj["metadata"]["annotations"].pop(key, None)
        else:
            obj["metadata"]["annotations"][key] = value

    return change


def test_policies_are_on_by_default_and_the_mount_is_read_only(default: list[Manifest]) -> None:
    names = {m["metadata"]["name"] for m in default if m["kind"] == "ValidatingAdmissionPolicy"}
    assert names == {"nos-mig-agent-node-writes", "nos-mig-agent-pod-deletes", "nos-partitioner-node-writes"}
    for binding in (m for m in default if m["kind"] == "ValidatingAdmissionPolicyBinding"):
        assert binding["spec"]["policyName"] in names and binding["spec"]["validationActions"] == ["Deny"]
    daemonset = find(default, "DaemonSet")
    container = daemonset["spec"]["template"]["spec"]["containers"][0]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "pod-resources"]
    assert mount["readOnly"] is True


def test_agent_writes_only_status_annotations_of_its_own_node(default: list[Manifest]) -> None:
    policy = find(default, "ValidatingAdmissionPolicy", "-mig-agent-node-writes")
    n = node(annotations={"keep": "me", "nos.nebuly.com/status-gpu-0-1g.10gb-free": "1"})
    assert admit(policy, update(AGENT, n, set_annotation("nos.nebuly.com/status-gpu-0-1g.10gb-free", "2"))) == []
    assert admit(policy, update(AGENT, n, set_annotation("nos.nebuly.com/status-error-gpu-1", "lost"))) == []
    assert admit(policy, update(AGENT, n, set_annotation("nos.nebuly.com/status-gpu-0-1g.10gb-free", None))) == []
    denied = {
        "spec annotation": set_annotation("nos.nebuly.com/spec-gpu-0-7g.80gb", "1"),
        "other annotation": set_annotation("keep", "changed"),
        "removal": set_annotation("keep", None),
        "label": lambda o: o["metadata"]["labels"].update({"nos.nebuly.com/gpu-partitioning": "no"}),
        "taint": lambda o: o["spec"].update({"taints": []}),
    }
    for what, change in denied.items():
        assert admit(policy, update(AGENT, n, change)), what
    other_node = update(AGENT, n, set_annotation("nos.nebuly.com/status-gpu-0-1g.10gb-free", "2"), "gpu-2")
    assert admit(policy, other_node) == ["the nos MIG agent may only write the Node its own pod runs on"]
    no_claim = update(AGENT, n, set_annotation("nos.nebuly.com/status-gpu-0-1g.10gb-free", "2"), None)
    assert admit(policy, no_claim)
    assert admit(policy, update(PARTITIONER, n, set_annotation("keep", "x"))) is None  # not its business


def test_agent_deletes_only_the_device_plugin_pod_of_its_own_node(default: list[Manifest]) -> None:
    policy = find(default, "ValidatingAdmissionPolicy", "-mig-agent-pod-deletes")

    def delete(namespace: str, labels: dict[str, str], node_name: str) -> dict[str, Any]:
        pod = {"metadata": {"name": "p", "namespace": namespace, "labels": labels}, "spec": {"nodeName": node_name}}
        return {
            "object": None,
            "oldObject": pod,
            "request": {"userInfo": {"username": AGENT, "extra": {NODE_CLAIM: ["gpu-1"]}}},
        }

    plugin = {"app": "nvidia-device-plugin-daemonset"}
    assert admit(policy, delete("gpu-operator", plugin, "gpu-1")) == []
    assert admit(policy, delete("gpu-operator", plugin, "gpu-2"))  # another node's plugin
    assert admit(policy, delete("gpu-operator", {"app": "dcgm-exporter"}, "gpu-1"))  # another pod
    assert admit(policy, delete("kube-system", plugin, "gpu-1"))


def test_partitioner_writes_only_spec_annotations_of_labelled_nodes(default: list[Manifest]) -> None:
    policy = find(default, "ValidatingAdmissionPolicy", "-partitioner-node-writes")
    n = node(annotations={"keep": "me", "nos.nebuly.com/spec-gpu-0-1g.10gb": "7"})
    assert admit(policy, update(PARTITIONER, n, set_annotation("nos.nebuly.com/spec-gpu-0-7g.80gb", "1"), None)) == []
    assert admit(policy, update(PARTITIONER, n, set_annotation("nos.nebuly.com/spec-gpu-0-1g.10gb", None), None)) == []
    unlabelled = node(labelled=False)
    assert admit(policy, update(PARTITIONER, unlabelled, set_annotation("nos.nebuly.com/spec-gpu-0-7g.80gb", "1"))) == [
        "the nos partitioner may only write Nodes labelled for MIG partitioning"
    ]
    for change in (
        set_annotation("nos.nebuly.com/status-gpu-0-7g.80gb-free", "1"),
        set_annotation("keep", None),
        lambda o: o["metadata"]["labels"].update({"x": "y"}),
        lambda o: o["spec"].update({"unschedulable": True}),
    ):
        assert admit(policy, update(PARTITIONER, n, change, None))
