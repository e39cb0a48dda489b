"""The Helm chart, rendered by the real Helm engine, checked object by object.

Each rendered manifest is validated against the Kubernetes OpenAPI JSON schemas (kubernetes-validate,
strict: unknown fields fail) and the properties the issue asks for are asserted: least-privilege RBAC,
pod security of both components, node selection through either opt-in label, the kubelet mounts.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from nos.contract.annotations import PARTITIONING_LABELS
from nos.mig.catalog import default_catalog
from nos.mig.geometries import parse_known_geometries
from tests.chart.config_schema import validate_config
from tests.chart.conftest import CHART, NAMESPACE, RELEASE, Manifest, Render, find, render_chart, render_notes, require

SCHEMA_VERSIONS = ("1.30.0", "1.37.0")  # oldest with admissionregistration.k8s.io/v1 VAP, newest bundled

# Everything switched away from its default, to prove the knobs are wired through.
CUSTOM: dict[str, Any] = {
    "fullnameOverride": "gpu",
    "image": {"repository": "registry.example/nos", "digest": "sha256:" + "a" * 64},
    "server": {"metricsPort": 9090, "healthPort": 9091},
    "log": {"level": "debug", "format": "text"},
    "gpuPartitioner": {
        "replicas": 2,
        "batchWindowIdleSeconds": 5,
        "fillSpare": True,
        "profileShares": 0.5,
        "profileMix": {"7g.80gb": 6, "4g.40gb": 1.5},
        "planBudgetSeconds": 0.5,
        "fairness": {"agingStepSeconds": 600, "reserveAfterSeconds": 1800},
        "leaderElection": {"leaseName": "custom-lease"},
        "priorityClassName": "system-cluster-critical",
        "serviceAccount": {"name": "planner"},
        "knownMigGeometries": [{"models": ["NVIDIA-A30"], "allowedGeometries": [{"1g.6gb": 4}]}],
    },
    "migAgent": {
        "privileged": True,
        "hostPID": True,
        "runtimeClassName": "",
        "priorityClassName": "gpu-critical",
        "podResourcesHostPath": "/var/lib/k0s/kubelet/pod-resources",
        "nvmlCallTimeoutSeconds": 30,
        "livenessTimeoutSeconds": 1200,
        "devicePlugin": {
            "namespace": "nvidia-device-plugin",
            "labelSelector": "app.kubernetes.io/name=nvidia-device-plugin",
        },
        "tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoExecute"},
        ],
        "nodeSelector": {"pool": "gpu"},
        "admissionPolicy": {"enabled": True},
    },
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
}


@pytest.fixture(scope="module")
def default() -> list[Manifest]:
    return render_chart()


@pytest.fixture(scope="module")
def custom() -> list[Manifest]:
    return render_chart(CUSTOM, release="gpu", namespace="mig")


def _pod_spec(workload: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def _container(workload: Manifest) -> dict[str, Any]:
    containers = _pod_spec(workload)["containers"]
    assert len(containers) == 1
    c: dict[str, Any] = containers[0]
    return c


def _rules(manifests: list[Manifest], kind: str, suffix: str) -> set[tuple[str, str, tuple[str, ...], tuple[str, ...]]]:
    """(apiGroup, resource, resourceNames, verbs) per rule of one Role/ClusterRole."""
    out = set()
    for rule in find(manifests, kind, suffix)["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                names = tuple(sorted(rule.get("resourceNames", [])))
                out.add((group, resource, names, tuple(sorted(rule["verbs"]))))
    return out


# --- the renderer and the schemas ------------------------------------------------------------------


def test_helm_lint_strict_passes() -> None:
    from tests.chart.conftest import _helm

    helm = _helm()
    for values in ({}, CUSTOM):
        report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE)
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert not problems and not report["errors"], report


@pytest.mark.parametrize("which", ["default", "custom"])
@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_every_manifest_is_valid_against_the_kubernetes_schema(
    which: str, version: str, request: pytest.FixtureRequest
) -> None:
    kv = require("kubernetes_validate", "Kubernetes JSON schemas (kubernetes-validate)")
    manifests: list[Manifest] = request.getfixturevalue(which)
    checked = 0
    for m in manifests:
        if m["apiVersion"] == "monitoring.coreos.com/v1":
            continue  # a CRD: no schema in the Kubernetes set; checked by test_service_monitor
        try:
            kv.validate(m, version, strict=True)
        except kv.ValidationError as e:
            pytest.fail(f"{m['kind']} {m['metadata']['name']} invalid for Kubernetes {version}: {e}")
        checked += 1
    assert checked >= 14


def test_default_and_custom_render_the_expected_objects(default: list[Manifest], custom: list[Manifest]) -> None:
    kinds = sorted(m["kind"] for m in default)
    assert kinds == sorted(
        ["ConfigMap"] * 2
        + ["Deployment", "DaemonSet", "Service", "Service"]
        + ["ServiceAccount"] * 2
        + ["ClusterRole", "ClusterRoleBinding"] * 2
        + ["Role", "RoleBinding"] * 2
        + ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"] * 3
    )
    extra = {m["kind"] for m in custom} - {m["kind"] for m in default}
    assert extra == {"ServiceMonitor"}
    for m in default:
        assert m["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
        cluster_scoped = (
            "ClusterRole",
            "ClusterRoleBinding",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        )
        if m["kind"] not in cluster_scoped:
            assert m["metadata"]["namespace"] in (NAMESPACE, "gpu-operator")


# --- RBAC --------------------------------------------------------------------------------------------


def test_rbac_is_exactly_the_least_privilege_listed(default: list[Manifest]) -> None:
    assert _rules(default, "ClusterRole", "-partitioner") == {
        ("", "pods", (), ("get", "list", "watch")),
        ("", "nodes", (), ("get", "list", "patch", "watch")),
        ("events.k8s.io", "events", (), ("create", "patch")),
        ("", "events", (), ("create", "patch")),
    }
    assert _rules(default, "Role", "-partitioner-leader-election") == {
        ("coordination.k8s.io", "leases", (), ("create",)),
        ("coordination.k8s.io", "leases", ("nos-partitioner",), ("get", "update")),
    }
    assert find(default, "Role", "-partitioner-leader-election")["metadata"]["namespace"] == NAMESPACE
    assert _rules(default, "ClusterRole", "-mig-agent") == {
        ("", "nodes", (), ("get", "list", "patch", "watch")),
        ("events.k8s.io", "events", (), ("create", "patch")),
        ("", "events", (), ("create", "patch")),
    }
    dp_role = find(default, "Role", "-mig-agent-device-plugin")
    assert dp_role["metadata"]["namespace"] == "gpu-operator"
    assert _rules(default, "Role", "-mig-agent-device-plugin") == {("", "pods", (), ("delete", "list"))}


@pytest.mark.parametrize("which", ["default", "custom"])
def test_no_wildcards_and_no_secrets_anywhere(which: str, request: pytest.FixtureRequest) -> None:
    manifests: list[Manifest] = request.getfixturevalue(which)
    roles = [m for m in manifests if m["kind"] in ("Role", "ClusterRole")]
    assert len(roles) == 4
    for role in roles:
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], (role["metadata"]["name"], rule)
            assert not {"secrets", "configmaps", "pods/exec", "nodes/proxy"} & set(rule["resources"])
            assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(rule["verbs"])


def test_bindings_point_at_the_service_accounts_the_pods_use(custom: list[Manifest]) -> None:
    deployment, daemonset = find(custom, "Deployment"), find(custom, "DaemonSet")
    planner_sa = _pod_spec(deployment)["serviceAccountName"]
    agent_sa = _pod_spec(daemonset)["serviceAccountName"]
    assert planner_sa == "planner" and agent_sa == "gpu-mig-agent"
    assert {m["metadata"]["name"] for m in custom if m["kind"] == "ServiceAccount"} == {planner_sa, agent_sa}
    for binding in (m for m in custom if m["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        (subject,) = binding["subjects"]
        expected = planner_sa if "partitioner" in binding["metadata"]["name"] else agent_sa
        assert subject == {"kind": "ServiceAccount", "name": expected, "namespace": "mig"}
        role = find(custom, binding["roleRef"]["kind"], binding["roleRef"]["name"])
        if binding["kind"] == "RoleBinding":
            assert role["metadata"]["namespace"] == binding["metadata"]["namespace"]
    assert find(custom, "Role", "-device-plugin")["metadata"]["namespace"] == "nvidia-device-plugin"
    assert ("coordination.k8s.io", "leases", ("custom-lease",), ("get", "update")) in _rules(
        custom, "Role", "-leader-election"
    )


# --- the partitioner -------------------------------------------------------------------------------


def test_partitioner_runs_non_root_read_only_without_capabilities(default: list[Manifest]) -> None:
    deployment = find(default, "Deployment", "-partitioner")
    pod, c = _pod_spec(deployment), _container(deployment)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert not sc.get("privileged", False)
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert "hostPath" not in str(pod["volumes"])


def test_partitioner_command_probes_and_config(default: list[Manifest]) -> None:
    deployment = find(default, "Deployment", "-partitioner")
    assert deployment["spec"]["replicas"] == 1
    c = _container(deployment)
    assert c["args"] == ["partitioner", "--config", "/etc/nos/config.yaml"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    _assert_config_mounted(default, deployment)


def test_two_replicas_need_leader_election() -> None:
    ha = render_chart({"gpuPartitioner": {"replicas": 2}})
    assert find(ha, "Deployment")["spec"]["replicas"] == 2
    config = _config(ha)
    assert config["partitioner"]["leaderElection"]["enabled"] is True
    with pytest.raises(Exception, match="leaderElection"):
        render_chart({"gpuPartitioner": {"replicas": 2, "leaderElection": {"enabled": False}}})
    solo = render_chart({"gpuPartitioner": {"leaderElection": {"enabled": False}}})
    assert not [m for m in solo if m["kind"] == "Role" and "leader" in m["metadata"]["name"]]


# --- the MIG agent ---------------------------------------------------------------------------------


def test_agent_has_sys_admin_only_and_the_nvidia_env(default: list[Manifest]) -> None:
    daemonset = find(default, "DaemonSet", "-mig-agent")
    pod, c = _pod_spec(daemonset), _container(daemonset)
    sc = c["securityContext"]
    assert not sc.get("privileged", False)
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["SYS_ADMIN"]}
    assert sc["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not pod.get("hostPID") and not pod.get("hostNetwork") and not pod.get("hostIPC")
    env = {e["name"]: e for e in c["env"]}
    assert env["NVIDIA_MIG_CONFIG_DEVICES"]["value"] == "all"
    assert env["NVIDIA_MIG_MONITOR_DEVICES"]["value"] == "all"  # else NO_PERMISSION on the process list
    assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["priorityClassName"] == "system-node-critical"
    assert c["args"] == ["agent", "--config", "/etc/nos/config.yaml"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}


def test_agent_privileged_mode_and_other_knobs(custom: list[Manifest]) -> None:
    daemonset = find(custom, "DaemonSet", "-mig-agent")
    pod, c = _pod_spec(daemonset), _container(daemonset)
    assert c["securityContext"]["privileged"] is True
    assert pod["hostPID"] is True
    assert "runtimeClassName" not in pod
    assert pod["priorityClassName"] == "gpu-critical"
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoExecute"} in pod["tolerations"]
    assert c["image"] == "registry.example/nos@sha256:" + "a" * 64
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": 9090, "health": 9091}


def test_agent_tolerates_the_gpu_taint_by_default(default: list[Manifest]) -> None:
    pod = _pod_spec(find(default, "DaemonSet"))
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]


def _affinity_admits(pod: dict[str, Any], labels: dict[str, str]) -> bool:
    """Required node affinity as the scheduler evaluates it: terms ORed, expressions ANDed."""
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    for term in terms:
        ok = True
        for e in term["matchExpressions"]:
            assert e["operator"] == "In"
            ok = ok and labels.get(e["key"]) in e["values"]
        if ok:
            return True
    return False


@pytest.mark.parametrize("which", ["default", "custom"])
def test_agent_runs_on_nodes_with_either_opt_in_label(which: str, request: pytest.FixtureRequest) -> None:
    pod = _pod_spec(find(request.getfixturevalue(which), "DaemonSet"))
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert len(terms) == 2
    assert {t["matchExpressions"][0]["key"] for t in terms} == set(PARTITIONING_LABELS)
    for key in PARTITIONING_LABELS:
        assert _affinity_admits(pod, {key: "mig"})
        assert not _affinity_admits(pod, {key: "mps"})
    assert not _affinity_admits(pod, {"nvidia.com/gpu.present": "true"})


@pytest.mark.parametrize("which", ["default", "custom"])
def test_agent_mounts_the_pod_resources_directory(which: str, request: pytest.FixtureRequest) -> None:
    manifests: list[Manifest] = request.getfixturevalue(which)
    daemonset = find(manifests, "DaemonSet")
    pod, c = _pod_spec(daemonset), _container(daemonset)
    (volume,) = [v for v in pod["volumes"] if "hostPath" in v]
    host = volume["hostPath"]
    assert host["type"] == "Directory"
    assert host["path"].endswith("/pod-resources") and not host["path"].endswith(".sock")
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == volume["name"]]
    socket = _config(manifests)["agent"]["podResourcesSocket"]
    assert socket == f"{mount['mountPath']}/kubelet.sock"
    assert not mount.get("subPath")
    if which == "default":
        assert host["path"] == "/var/lib/kubelet/pod-resources"
        assert socket == "/var/lib/kubelet/pod-resources/kubelet.sock"
    _assert_config_mounted(manifests, daemonset)


def test_agent_can_be_disabled() -> None:
    manifests = render_chart({"migAgent": {"enabled": False}})
    assert not [m for m in manifests if "mig-agent" in m["metadata"]["name"]]


# --- selectors, services, monitoring ---------------------------------------------------------------


@pytest.mark.parametrize("which", ["default", "custom"])
def test_selectors_match_the_pod_template_labels(which: str, request: pytest.FixtureRequest) -> None:
    manifests: list[Manifest] = request.getfixturevalue(which)
    pods = {}
    for kind in ("Deployment", "DaemonSet"):
        workload = find(manifests, kind)
        selector = workload["spec"]["selector"]["matchLabels"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()
        pods[workload["metadata"]["labels"]["app.kubernetes.io/component"]] = workload
    services = [m for m in manifests if m["kind"] == "Service"]
    assert len(services) == 2
    for service in services:
        component = service["metadata"]["labels"]["app.kubernetes.io/component"]
        selected = [
            w
            for w in pods.values()
            if service["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert selected == [pods[component]]
        (port,) = service["spec"]["ports"]
        assert port["targetPort"] == "metrics"
        assert port["port"] == _config(manifests)["server"]["metricsPort"]
        assert "metrics" in {p["name"] for p in _container(pods[component])["ports"]}


def test_service_monitor_off_by_default_and_selects_both_services(
    default: list[Manifest], custom: list[Manifest]
) -> None:
    assert not [m for m in default if m["kind"] == "ServiceMonitor"]
    monitor = find(custom, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    selector = monitor["spec"]["selector"]
    (expr,) = selector["matchExpressions"]
    selected = []
    for service in (m for m in custom if m["kind"] == "Service"):
        labels = service["metadata"]["labels"]
        if selector["matchLabels"].items() <= labels.items() and labels.get(expr["key"]) in expr["values"]:
            selected.append(service["metadata"]["name"])
    assert sorted(selected) == ["gpu-mig-agent-metrics", "gpu-partitioner-metrics"]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["mig"]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"


# --- admission policy ------------------------------------------------------------------------------


def test_admission_policy_can_be_turned_off() -> None:
    off = {"admissionPolicy": {"enabled": False}}
    manifests = render_chart({"migAgent": off, "gpuPartitioner": off})
    assert not [m for m in manifests if m["apiVersion"].startswith("admissionregistration")]


def test_admission_policy_limits_the_agent_to_status_annotations(custom: list[Manifest]) -> None:
    policy = find(custom, "ValidatingAdmissionPolicy", "-mig-agent-node-writes")
    binding = find(custom, "ValidatingAdmissionPolicyBinding", "-mig-agent-node-writes")
    assert policy["apiVersion"] == binding["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["nodes"] and rule["operations"] == ["UPDATE"]
    (condition,) = policy["spec"]["matchConditions"]
    assert condition["expression"] == "request.userInfo.username == 'system:serviceaccount:mig:gpu-mig-agent'"
    expressions = " ".join(v["expression"] for v in policy["spec"]["validations"])
    assert "nos.nebuly.com/status-" in expressions
    assert "authentication.kubernetes.io/node-name" in expressions
    loose = render_chart({"migAgent": {"admissionPolicy": {"enabled": True, "ownNodeOnly": False}}})
    loose_policy = find(loose, "ValidatingAdmissionPolicy", "-mig-agent-node-writes")
    loose_expr = " ".join(v["expression"] for v in loose_policy["spec"]["validations"])
    assert "node-name" not in loose_expr and "status-" in loose_expr


# --- config files ----------------------------------------------------------------------------------


def _config(manifests: list[Manifest]) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(find(manifests, "ConfigMap", "-config")["data"]["config.yaml"])
    return loaded


def _assert_config_mounted(manifests: list[Manifest], workload: Manifest) -> None:
    pod, c = _pod_spec(workload), _container(workload)
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/etc/nos"]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    sources = {s["configMap"]["name"]: s["configMap"]["items"] for s in volume["projected"]["sources"]}
    config_cm = find(manifests, "ConfigMap", "-config")["metadata"]["name"]
    geometries_cm = find(manifests, "ConfigMap", "-known-mig-geometries")["metadata"]["name"]
    assert sources == {
        config_cm: [{"key": "config.yaml", "path": "config.yaml"}],
        geometries_cm: [{"key": "known-mig-geometries.yaml", "path": "known-mig-geometries.yaml"}],
    }
    assert _config(manifests)["partitioner"]["knownGeometriesFile"] == "/etc/nos/known-mig-geometries.yaml"
    annotations = workload["spec"]["template"]["metadata"]["annotations"]
    assert len(annotations["checksum/config"]) == 64  # pods roll when the config changes


def test_default_config_matches_the_runtime_contract(default: list[Manifest]) -> None:
    config = _config(default)
    validate_config(config)
    assert config == {
        "partitioner": {
            "batchWindowIdleSeconds": 10,
            "batchWindowTimeoutSeconds": 60,
            "reportTimeoutSeconds": 300,
            "fillSpare": False,
            "profileShares": 0,
            "profileMix": {},
            "planBudgetSeconds": 2,
            "knownGeometriesFile": "/etc/nos/known-mig-geometries.yaml",
            "livenessTimeoutSeconds": 600,
            "fairness": {"agingStepSeconds": None, "reserveAfterSeconds": None, "maxReservedShare": 0.25},
            "leaderElection": {
                "enabled": True,
                "leaseName": "nos-partitioner",
                "namespace": NAMESPACE,
                "leaseDurationSeconds": 15,
                "renewDeadlineSeconds": 10,
                "retryPeriodSeconds": 2,
            },
        },
        "agent": {
            "reportIntervalSeconds": 60,
            "podResourcesSocket": "/var/lib/kubelet/pod-resources/kubelet.sock",
            "nvmlCallTimeoutSeconds": 60,
            "livenessTimeoutSeconds": 900,
            "devicePlugin": {
                "namespace": "gpu-operator",
                "labelSelector": "app=nvidia-device-plugin-daemonset",
                "timeoutSeconds": 180,
            },
        },
        "server": {"metricsPort": 8080, "healthPort": 8081},
        "log": {"level": "info", "format": "json"},
    }


def test_custom_values_reach_the_config(custom: list[Manifest]) -> None:
    config = _config(custom)
    validate_config(config)
    assert config["partitioner"]["batchWindowIdleSeconds"] == 5
    assert config["partitioner"]["fillSpare"] is True
    assert config["partitioner"]["profileShares"] == 0.5
    assert config["partitioner"]["profileMix"] == {"7g.80gb": 6, "4g.40gb": 1.5}
    assert config["partitioner"]["planBudgetSeconds"] == 0.5
    assert config["partitioner"]["leaderElection"]["leaseName"] == "custom-lease"
    assert config["partitioner"]["fairness"] == {
        "agingStepSeconds": 600,
        "reserveAfterSeconds": 1800,
        "maxReservedShare": 0.25,
    }
    assert (config["agent"]["nvmlCallTimeoutSeconds"], config["agent"]["livenessTimeoutSeconds"]) == (30, 1200)
    assert config["partitioner"]["leaderElection"]["namespace"] == "mig"
    assert config["agent"]["devicePlugin"]["namespace"] == "nvidia-device-plugin"
    assert config["agent"]["devicePlugin"]["labelSelector"] == "app.kubernetes.io/name=nvidia-device-plugin"
    assert config["server"] == {"metricsPort": 9090, "healthPort": 9091}
    assert config["log"] == {"level": "debug", "format": "text"}


@pytest.mark.parametrize("which", ["default", "custom"])
def test_known_geometries_config_map_is_placeable(which: str, request: pytest.FixtureRequest) -> None:
    manifests: list[Manifest] = request.getfixturevalue(which)
    text = find(manifests, "ConfigMap", "-known-mig-geometries")["data"]["known-mig-geometries.yaml"]
    geometries, warnings = parse_known_geometries(text)
    assert warnings == []
    every = {m.name for m in default_catalog().models}
    expected = {"default": every, "custom": {"A30-24GB"}}
    assert set(geometries) == expected[which]


def test_notes_tell_how_to_check_the_install() -> None:
    notes = render_notes()
    assert "nos doctor --namespace nos-system" in notes
    assert "nos.nebuly.ai/gpu-partitioning=mig" in notes
    assert "--agent-selector" not in notes
    assert "--agent-selector app.kubernetes.io/name=other" in render_notes({"nameOverride": "other"})


def test_rendered_objects_have_valid_names(default: list[Manifest], custom: list[Manifest], render: Render) -> None:
    long_release = render(release="a-very-long-release-name-that-goes-on-and-on-and-on")
    for m in [*default, *custom, *long_release]:
        name = m["metadata"]["name"]
        assert len(name) <= 63 and name == name.lower(), name
