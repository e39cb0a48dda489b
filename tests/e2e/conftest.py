"""The end-to-end tier: nos' partitioner and agents against a real kube-apiserver + kube-scheduler.

Every test here is marked ``realkube`` (and ``e2e``) and skipped, with the reason, when the binaries
are missing (``scripts/kube-control-plane``); ``NOS_REALKUBE_REQUIRED=1`` turns the skip into a
failure, as in tests/realkube. The control-plane fixtures are tests/realkube's, re-exported here.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Generator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.e2e.cluster import E2ECluster
from tests.realkube.conftest import control_plane, realkube_binaries, scheduler, unique
from tests.realkube.control_plane import ControlPlane, Process, attach_logs, find_binaries

__all__ = ["control_plane", "realkube_binaries", "scheduler", "unique"]

HERE = Path(__file__).parent
DEFAULT_TIMEOUT_S = 150


@pytest_asyncio.fixture
async def cluster(control_plane: ControlPlane, scheduler: Process, unique: str) -> AsyncIterator[E2ECluster]:
    """One test's e2e cluster (its own labelled, tainted nodes), closed after the test."""
    c = await E2ECluster.create(control_plane, unique)
    try:
        yield c
    finally:
        await c.close()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "realkube: needs a real etcd + kube-apiserver (scripts/kube-control-plane); skipped without"
    )
    config.addinivalue_line("markers", "e2e: partitioner + agents + fake kubelets against the real control plane")


def _in_tier(item: pytest.Item) -> bool:
    return HERE in Path(str(item.path)).parents


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    binaries, reason = find_binaries()
    required = os.environ.get("NOS_REALKUBE_REQUIRED") == "1"
    for item in items:
        if not _in_tier(item):
            continue
        item.add_marker(pytest.mark.realkube)
        item.add_marker(pytest.mark.e2e)
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DEFAULT_TIMEOUT_S))
        if required:
            continue
        if binaries is None:
            item.add_marker(pytest.mark.skip(reason=f"realkube: {reason}"))
        elif binaries.scheduler is None:
            item.add_marker(pytest.mark.skip(reason="realkube: no kube-scheduler next to kube-apiserver"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On a failing e2e test, attach the tails of the component logs to the report."""
    report: pytest.TestReport = yield
    if _in_tier(item):
        attach_logs(item, report)
    return report
