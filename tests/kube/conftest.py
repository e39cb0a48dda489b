"""Fixtures for the Kubernetes adapter tests: the fake API server over HTTP and both ``Kube``s.

Every coroutine test in this folder gets ``pytest.mark.asyncio`` and a 10 s ``pytest.mark.timeout``
(unless it sets its own), so a hung watch fails fast instead of blocking the run.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from lightkube import AsyncClient, KubeConfig

from nos.kube.client import LightkubeKube, RetryPolicy
from nos.kube.fake.memory import MemoryKube
from nos.kube.fake.store import ObjectStore
from nos.kube.port import Kube
from tests.kube.fake_apiserver import FakeApiServer

DEFAULT_TIMEOUT_S = 10


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> None:
    """Mark coroutine tests before pytest-asyncio (strict mode) looks at them; collect as usual."""
    if name.startswith("test") and inspect.iscoroutinefunction(obj):
        pytest.mark.asyncio(obj)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        in_kube = "tests/kube/" in item.nodeid.replace("\\", "/")
        if in_kube and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DEFAULT_TIMEOUT_S))


async def _no_sleep(_: float) -> None:
    return None


FAST_RETRY = RetryPolicy(attempts=4, base_delay=0.0, max_delay=0.0, sleep=_no_sleep)


@pytest_asyncio.fixture
async def fake_server() -> AsyncIterator[FakeApiServer]:
    server = FakeApiServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def lightkube_client(server: FakeApiServer) -> AsyncClient:
    """A lightkube client for ``server`` (dummy-token user: lightkube refuses a config without one)."""
    return AsyncClient(KubeConfig.from_dict(server.kubeconfig()), trust_env=False)


@pytest_asyncio.fixture
async def http_kube(fake_server: FakeApiServer) -> AsyncIterator[tuple[FakeApiServer, LightkubeKube]]:
    kube = LightkubeKube(lightkube_client(fake_server), component="agent", instance="agent-test", retry=FAST_RETRY)
    try:
        yield fake_server, kube
    finally:
        await kube.close()


@dataclass
class Backend:
    """One ``Kube`` implementation plus the store behind it, for seeding and assertions."""

    name: str
    kube: Kube
    store: ObjectStore
    server: FakeApiServer | None = None


@pytest_asyncio.fixture(params=["memory", "http"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        mem = MemoryKube(component="agent", instance="agent-test")
        yield Backend("memory", mem, mem.store)
        return
    server = FakeApiServer()
    await server.start()
    kube = LightkubeKube(lightkube_client(server), component="agent", instance="agent-test", retry=FAST_RETRY)
    try:
        yield Backend("http", kube, server.store, server)
    finally:
        await kube.close()
        await server.stop()


def node(name: str, labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None) -> Any:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels or {}, "annotations": annotations or {}},
        "status": {"allocatable": {"cpu": "8", "nvidia.com/gpu": "1"}},
    }


def pod(
    name: str,
    namespace: str = "default",
    node_name: str | None = None,
    phase: str = "Running",
    labels: dict[str, str] | None = None,
) -> Any:
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": "busybox"}]}
    if node_name is not None:
        spec["nodeName"] = node_name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": spec,
        "status": {"phase": phase},
    }
