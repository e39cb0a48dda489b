"""kube-scheduler, reduced to what decides where a MIG pod runs.

Rules (one pass over every pending pod, highest priority first, then oldest):

* **Filter** (NodeResourcesFit): the node's allocatable ``nvidia.com/mig-<profile>`` (as the device
  plugin model published it) minus the requests of the pods running there is at least 1, and the same
  holds for cpu, memory and the pod count. The simulated nodes have no taints or selectors.
* **Score** (LeastAllocated, the default): the feasible node with the largest mean free share of cpu and
  memory wins; ties go to the node name.
* **Bind**, then kubelet admission: the device plugin model allocates one device; if none is left (a
  stale advertisement) admission fails and the pod stays pending.
* A pod that fits nowhere gets ``PodScheduled=False, reason=Unschedulable``: exactly what makes it a
  partitioner candidate. It is retried on every pass.

A pass runs when a pod arrives, when one finishes and when a device plugin publishes devices (the
cluster events that move unschedulable pods back to kube-scheduler's active queue). Binding is
instantaneous and containers start at once.
"""

from __future__ import annotations

from collections.abc import Iterable

from nos.sim.nodes import SimNode
from nos.sim.workload import SimPod


def queue_order(pod: SimPod) -> tuple[int, float, str]:
    return (-pod.spec.priority, pod.spec.arrival_s, pod.name)


def choose_node(pod: SimPod, nodes: Iterable[SimNode]) -> SimNode | None:
    feasible = [n for n in nodes if n.fits(pod.cpu_m, pod.memory_b, pod.resource)]
    if not feasible:
        return None
    return max(feasible, key=lambda n: (n.least_allocated_score(pod.cpu_m, pod.memory_b), _reverse(n.name)))


def _reverse(name: str) -> tuple[int, ...]:
    """Sort key that makes ``max`` prefer the smaller name on equal scores."""
    return tuple(-ord(c) for c in name)
