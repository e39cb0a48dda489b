"""The agent's status annotations: what exists on each GPU, used or free, and where.

Only instances with a compute instance are reported: they are the MIG devices the device plugin
advertises. A half-created instance is a transient the next reconcile removes or completes.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence

from nos.contract.annotations import encode_status, merge_patch
from nos.gpu.port import GpuInstanceInfo
from nos.kube.port import Kube, annotations_patch
from nos.mig.layout import Instance

log = logging.getLogger(__name__)


def status_instances(actual: Sequence[GpuInstanceInfo], in_use: Collection[int]) -> tuple[Instance, ...]:
    """The instances of one GPU as the status reports them (``used`` = allocated or busy). An
    instance split into compute instances by another tool counts as used: it is no device of its
    profile the partitioner could place a pod on."""
    return tuple(
        sorted(Instance(g.start, g.profile, g.gi_id in in_use or g.split) for g in actual if g.compute_instances)
    )


def advertised_instances(actual: Sequence[GpuInstanceInfo]) -> tuple[Instance, ...]:
    """The instances the device plugin advertises as ``nvidia.com/mig-<profile>`` devices: complete
    ones (a split instance's devices are ``<n>c.<profile>`` ones)."""
    return status_instances([g for g in actual if not g.split], set())


def status_annotations(
    gpus: Mapping[int, Sequence[Instance]], plan_id: str | None, unreadable: Mapping[int, str] | None = None
) -> dict[str, str]:
    """Contract counts + placement extension + the spec plan id the agent processed; a GPU NVML cannot
    read is reported with its error instead of a layout (its old layout is removed, not kept)."""
    return encode_status(gpus, plan_id, unreadable)


class Reporter:
    """Patches the node's status annotations when they differ from the desired ones."""

    def __init__(self, kube: Kube, node_name: str) -> None:
        self._kube, self._node = kube, node_name

    async def report(
        self,
        gpus: Mapping[int, Sequence[Instance]],
        plan_id: str | None,
        current: Mapping[str, str] | None = None,
        unreadable: Mapping[int, str] | None = None,
    ) -> dict[str, str | None]:
        """Patch what changed (reading the node unless ``current`` annotations are given); returns the
        patch, empty when nothing changed."""
        if current is None:
            node = await self._kube.get("nodes", self._node)
            current = node.get("metadata", {}).get("annotations") or {}
        desired = status_annotations(gpus, plan_id, unreadable)
        patch = merge_patch(current, desired, owned="status")
        if patch:
            log.info("reporting status of node %s: %s", self._node, patch)
            await self._kube.patch("nodes", self._node, annotations_patch(patch))
        return patch
