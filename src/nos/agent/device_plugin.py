"""Restart the NVIDIA device plugin on this node so it re-advertises the MIG devices.

The plugin enumerates MIG devices only when it starts (k8s-device-plugin #992), so after a change
its pod on this node is deleted and the DaemonSet recreates it. Restarting it does not disturb
running containers: kubelet keeps its allocation checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from nos.config import DevicePluginConfig
from nos.kube.port import Event, Kube, NotFound, ObjectRef
from nos.mig.catalog import MIG_RESOURCE_PREFIX
from nos.runtime.events import EventRecorder

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


def _running(pod: dict[str, Any]) -> bool:
    return bool(pod.get("status", {}).get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp"))


class DevicePluginRestarter:
    def __init__(
        self,
        kube: Kube,
        node_name: str,
        config: DevicePluginConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        recorder: EventRecorder | None = None,
    ) -> None:
        self._kube, self._node = kube, node_name
        self._recorder = recorder or EventRecorder(kube)
        self.config = config or DevicePluginConfig()
        self._clock, self._sleep = clock, sleep

    async def _pods(self) -> list[dict[str, Any]]:
        return await self._kube.list(
            "pods",
            namespace=self.config.namespace,
            label_selector=self.config.label_selector,
            field_selector=f"spec.nodeName={self._node}",
        )

    async def _warn(self, reason: str, note: str) -> None:
        log.warning("%s: %s", reason, note)
        await self._recorder.record(
            Event(ObjectRef("Node", self._node), reason, note, type="Warning", action="RestartDevicePlugin")
        )

    async def restart(self) -> bool:
        """Delete the plugin pod of this node and wait for a different one to run. False (with a
        Warning Event on the Node) when there was not exactly one pod or the new one did not run in time."""
        cfg = self.config
        pods: list[dict[str, Any]] = []
        for attempt in range(cfg.find_attempts):
            pods = await self._pods()
            if len(pods) == 1:
                break
            if attempt + 1 < cfg.find_attempts:
                await self._sleep(cfg.poll_seconds)
        if len(pods) != 1:
            names = ", ".join(sorted(p["metadata"]["name"] for p in pods)) or "none"
            await self._warn(
                "DevicePluginNotFound",
                f"expected one device plugin pod ({cfg.label_selector}) in {cfg.namespace} on this node, "
                f"found {len(pods)} ({names}); MIG changes may not be advertised",
            )
            return False
        old = pods[0]["metadata"]
        log.info("deleting device plugin pod %s/%s", cfg.namespace, old["name"])
        with contextlib.suppress(NotFound):  # already going away: wait for its replacement all the same
            await self._kube.delete("pods", old["name"], cfg.namespace)
        deadline = self._clock() + cfg.timeout_seconds
        while True:
            replacement = [
                p
                for p in await self._pods()
                if (p["metadata"].get("uid"), p["metadata"]["name"]) != (old.get("uid"), old["name"]) and _running(p)
            ]
            if replacement:
                log.info("device plugin pod %s is running", replacement[0]["metadata"]["name"])
                return True
            if self._clock() >= deadline:
                await self._warn(
                    "DevicePluginRestartTimeout",
                    f"no new device plugin pod running on this node {cfg.timeout_seconds:g}s "
                    f"after deleting {old['name']}",
                )
                return False
            await self._sleep(cfg.poll_seconds)

    async def wait_allocatable(self, expected: Mapping[str, int]) -> bool:
        """Poll the Node until every ``nvidia.com/mig-*`` resource in its allocatable equals ``expected``
        (missing = 0). Pods are only schedulable on the new devices from then on. False (Warning Event)
        after ``timeout_seconds``; True at once when ``wait_allocatable`` is off."""
        if not self.config.wait_allocatable:
            return True
        timeout = self.config.timeout_seconds
        deadline = self._clock() + timeout
        while True:
            node = await self._kube.get("nodes", self._node)
            actual = mig_allocatable(node)
            if advertises(actual, expected):
                return True
            if self._clock() >= deadline:
                await self._warn(
                    "DevicePluginAllocatableTimeout",
                    f"node allocatable still shows {dict(sorted(actual.items()))} {timeout:g}s after the device "
                    f"plugin restart, expected {dict(sorted(expected.items()))}",
                )
                return False
            await self._sleep(self.config.poll_seconds)


def advertises(actual: Mapping[str, int], expected: Mapping[str, int]) -> bool:
    """The allocatable shows exactly the expected MIG devices (a vanished profile may linger at 0)."""
    return all(actual.get(r, 0) == n for r, n in expected.items()) and all(
        n == 0 for r, n in actual.items() if r not in expected
    )


def mig_allocatable(node: dict[str, Any]) -> dict[str, int]:
    """``nvidia.com/mig-*`` counts in the node's allocatable (unparsable values count as 0)."""
    out: dict[str, int] = {}
    for name, value in ((node.get("status") or {}).get("allocatable") or {}).items():
        if name.startswith(MIG_RESOURCE_PREFIX):
            try:
                out[name] = int(str(value))
            except ValueError:
                out[name] = 0
    return out
