"""Fixtures for the runtime tests (reflector, elector, config, observability, runners).

Every test here gets a pytest-timeout (20 s unless it sets its own) so a stuck watch or election
fails instead of hanging the run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from nos.kube.client import LightkubeKube
from tests.kube.conftest import FAST_RETRY, lightkube_client
from tests.kube.fake_apiserver import FakeApiServer

HERE = Path(__file__).parent
DEFAULT_TIMEOUT_S = 20


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DEFAULT_TIMEOUT_S))


@pytest_asyncio.fixture
async def server() -> AsyncIterator[FakeApiServer]:
    fake = FakeApiServer()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest_asyncio.fixture
async def http(server: FakeApiServer) -> AsyncIterator[LightkubeKube]:
    kube = LightkubeKube(lightkube_client(server), component="partitioner", instance="test", retry=FAST_RETRY)
    try:
        yield kube
    finally:
        await kube.close()
