"""The checks of ``nos doctor``, as pure functions over API objects (plain dicts).

Each names the misconfiguration that most often keeps nos from working, in the order a user meets
them: node opt-in, GPU discovery, the device plugin's MIG strategy, NVIDIA's MIG manager fighting
over the same GPUs, the agent, and whether the agent has caught up with the partitioner's spec.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from nos.contract.annotations import (
    COUNT_LABEL,
    PARTITIONING_LABELS,
    PRODUCT_LABEL,
    decode_spec,
    decode_status,
    is_mig_partitioned,
    is_spec_key,
    is_status_key,
)
from nos.contract.pods import is_mig_resource
from nos.doctor.collect import ClusterFacts
from nos.doctor.report import Finding, Report, Status
from nos.kube.port import Obj
from nos.kube.views.quantity import parse_quantity
from nos.mig.catalog import Catalog, default_catalog

MIG_CONFIG_LABEL = "nvidia.com/mig.config"
MIG_STRATEGY_LABEL = "nvidia.com/mig.strategy"
GPU_RESOURCE = "nvidia.com/gpu"
PENDING_GRACE_S = 300.0
"""A plan the agent has not reported after this long is worth a warning (the partitioner's
default reportTimeoutSeconds)."""


def _name(obj: Obj) -> str:
    return str(obj.get("metadata", {}).get("name", "?"))


def _labels(obj: Obj) -> Mapping[str, str]:
    return obj.get("metadata", {}).get("labels") or {}


def _annotations(obj: Obj) -> Mapping[str, str]:
    return obj.get("metadata", {}).get("annotations") or {}


def _on_node(pods: Iterable[Obj], node: str) -> list[Obj]:
    return [p for p in pods if (p.get("spec") or {}).get("nodeName") == node]


def _positive(allocatable: Mapping[str, Any], resource: str) -> int:
    try:
        return int(parse_quantity(allocatable.get(resource, 0)))
    except ValueError:
        return 0


def check_labelled_nodes(nodes: Sequence[Obj]) -> Finding:
    labelled = [_name(n) for n in nodes if is_mig_partitioned(_labels(n))]
    if not labelled:
        keys = " or ".join(f"{k}=mig" for k in PARTITIONING_LABELS)
        return Finding("labelled-nodes", Status.FAILURE, f"no node is labelled {keys}: nos manages no GPU")
    return Finding("labelled-nodes", Status.OK, f"{len(labelled)} node(s) opted in: {', '.join(sorted(labelled))}")


def check_gpu_model(node: Obj, catalog: Catalog) -> Finding:
    labels = _labels(node)
    product = labels.get(PRODUCT_LABEL)
    if not product:
        return Finding(
            "gpu-model",
            Status.FAILURE,
            f"no {PRODUCT_LABEL} label: GPU feature discovery (GPU Operator) is not running on this node",
            _name(node),
        )
    model = catalog.model_for_product(product)
    if model is None:
        return Finding(
            "gpu-model",
            Status.FAILURE,
            f"{product} is not a MIG-capable model nos knows (see `nos models`)",
            _name(node),
        )
    count = labels.get(COUNT_LABEL)
    if count is None:
        return Finding(
            "gpu-model", Status.WARNING, f"{product} is {model.name}, but no {COUNT_LABEL} label", _name(node)
        )
    return Finding("gpu-model", Status.OK, f"{product} is {model.name}, {count} GPU(s)", _name(node))


def check_mig_resources(node: Obj) -> Finding:
    """The device plugin must use the mixed strategy: one ``nvidia.com/mig-<profile>`` per profile."""
    labels = _labels(node)
    allocatable: Mapping[str, Any] = (node.get("status") or {}).get("allocatable") or {}
    mig = {r: _positive(allocatable, r) for r in allocatable if is_mig_resource(r)}
    shown = ", ".join(f"{r}: {n}" for r, n in sorted(mig.items()) if n) or "none"
    strategy = labels.get(MIG_STRATEGY_LABEL)
    if strategy is not None and strategy != "mixed":
        return Finding(
            "mig-resources",
            Status.FAILURE,
            f"{MIG_STRATEGY_LABEL}={strategy}: install the device plugin with mig.strategy=mixed",
            _name(node),
        )
    whole = _positive(allocatable, GPU_RESOURCE)
    if whole:
        return Finding(
            "mig-resources",
            Status.FAILURE,
            f"{whole} whole GPU(s) advertised as {GPU_RESOURCE} (MIG resources: {shown}): MIG mode is off on "
            "some GPU (nvidia-smi -mig 1) or the device plugin does not use mig.strategy=mixed",
            _name(node),
        )
    if not any(mig.values()):
        return Finding(
            "mig-resources",
            Status.WARNING,
            "no nvidia.com/mig-* resource advertised yet (the agent creates the initial layout, then restarts "
            "the device plugin)",
            _name(node),
        )
    return Finding("mig-resources", Status.OK, f"advertised: {shown}", _name(node))


def check_mig_manager(node: Obj, mig_manager_pods: Sequence[Obj]) -> Finding:
    """NVIDIA's MIG manager applies whole-node layouts from a label; it would undo nos' work."""
    problems = []
    config = _labels(node).get(MIG_CONFIG_LABEL)
    if config is not None:
        problems.append(f"label {MIG_CONFIG_LABEL}={config} is set")
    pods = _on_node(mig_manager_pods, _name(node))
    if pods:
        problems.append(f"MIG manager pod {pods[0]['metadata'].get('namespace')}/{_name(pods[0])} runs here")
    if problems:
        return Finding(
            "mig-manager",
            Status.WARNING,
            "; ".join(problems) + ": NVIDIA's MIG manager may overwrite the layout nos applies "
            "(install the GPU Operator with migManager.enabled=false)",
            _name(node),
        )
    return Finding("mig-manager", Status.OK, "NVIDIA's MIG manager does not manage this node", _name(node))


def _ready(pod: Obj) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def check_agent(node: Obj, agent_pods: Sequence[Obj]) -> Finding:
    pods = _on_node(agent_pods, _name(node))
    if not pods:
        return Finding(
            "agent",
            Status.FAILURE,
            "no MIG agent pod on this node (is the chart installed? check the DaemonSet's tolerations and "
            "--agent-selector / --namespace)",
            _name(node),
        )
    running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
    where = f"{pods[0]['metadata'].get('namespace')}/{_name(pods[0])}"
    if not running:
        phase = (pods[0].get("status") or {}).get("phase", "Unknown")
        waiting = _waiting_reason(pods[0])
        return Finding("agent", Status.FAILURE, f"agent pod {where} is {phase}{waiting}", _name(node))
    if not any(_ready(p) for p in running):
        return Finding("agent", Status.WARNING, f"agent pod {where} runs but is not ready", _name(node))
    return Finding("agent", Status.OK, f"agent pod {where} is running", _name(node))


def _waiting_reason(pod: Obj) -> str:
    for c in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (c.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason"):
            return f" ({waiting['reason']})"
    return ""


def check_status_reported(node: Obj) -> Finding:
    annotations = _annotations(node)
    status = decode_status(annotations)
    spec = decode_spec(annotations)
    if status.problems:
        return Finding("status-reported", Status.FAILURE, f"malformed status: {status.problems[0]}", _name(node))
    if not any(is_status_key(k) for k in annotations):
        return Finding(
            "status-reported",
            Status.FAILURE,
            "no nos.nebuly.com/status-* annotation: the agent has not reported this node's MIG devices",
            _name(node),
        )
    if status.plan_id is None:
        if spec.plan_id is None:
            return Finding("status-reported", Status.OK, "MIG devices reported; no plan written yet", _name(node))
        return Finding(
            "status-reported",
            Status.WARNING,
            "MIG devices reported, but no status-partitioning-plan: the agent has not processed any plan",
            _name(node),
        )
    devices = sum(sum(g.counts.values()) for g in status.gpus.values())
    return Finding(
        "status-reported", Status.OK, f"{devices} MIG device(s) reported for plan {status.plan_id}", _name(node)
    )


def _plan_age(plan_id: str, now: float) -> float | None:
    """Age of a time-based plan id (Unix seconds, as the original nos writes them), else None."""
    try:
        return now - float(plan_id)
    except ValueError:
        return None


def _counts(gpus: Mapping[int, Any]) -> dict[int, Counter[str]]:
    return {i: +g.profile_counts() for i, g in gpus.items()}


def check_spec_status(node: Obj, now: float, pending_grace_s: float = PENDING_GRACE_S) -> Finding:
    """Counts per GPU and profile equal once the agent has processed the spec's plan."""
    annotations = _annotations(node)
    spec, status = decode_spec(annotations), decode_status(annotations)
    if spec.problems:
        return Finding("spec-status", Status.FAILURE, f"malformed spec: {spec.problems[0]}", _name(node))
    if not any(is_spec_key(k) for k in annotations):
        return Finding("spec-status", Status.OK, "no spec written yet (no pending pod needed this node)", _name(node))
    if spec.plan_id != status.plan_id:
        age = _plan_age(spec.plan_id or "", now)
        late = age is not None and age > pending_grace_s
        text = f"plan {spec.plan_id} pending (agent reported {status.plan_id or 'none'})"
        if late:
            return Finding("spec-status", Status.WARNING, f"{text} for {int(age or 0)} s", _name(node))
        return Finding("spec-status", Status.OK, text, _name(node))
    want, have = _counts(spec.gpus), _counts(status.gpus)
    differ = []
    for gpu in sorted(set(want) | set(have)):
        w, h = want.get(gpu, Counter()), have.get(gpu, Counter())
        if w != h:
            differ.append(f"GPU {gpu}: spec {_show(w)}, actual {_show(h)}")
    if differ:
        return Finding(
            "spec-status",
            Status.WARNING,
            f"plan {spec.plan_id} applied only in part (instances in use are never destroyed): " + "; ".join(differ),
            _name(node),
        )
    return Finding("spec-status", Status.OK, f"layout matches plan {spec.plan_id}", _name(node))


def _show(counts: Counter[str]) -> str:
    return ", ".join(f"{p}×{n}" for p, n in sorted(counts.items())) or "nothing"


def check_node(
    node: Obj, facts: ClusterFacts, catalog: Catalog, now: float, pending_grace_s: float = PENDING_GRACE_S
) -> list[Finding]:
    return [
        check_gpu_model(node, catalog),
        check_mig_resources(node),
        check_mig_manager(node, facts.mig_manager_pods),
        check_agent(node, facts.agent_pods),
        check_status_reported(node),
        check_spec_status(node, now, pending_grace_s),
    ]


def run_checks(
    facts: ClusterFacts,
    catalog: Catalog | None = None,
    now: float | None = None,
    pending_grace_s: float = PENDING_GRACE_S,
) -> Report:
    catalog = catalog or default_catalog()
    now = time.time() if now is None else now
    findings = [check_labelled_nodes(facts.nodes)]
    for node in sorted(facts.nodes, key=_name):
        if is_mig_partitioned(_labels(node)):
            findings += check_node(node, facts, catalog, now, pending_grace_s)
    return Report(tuple(findings))
