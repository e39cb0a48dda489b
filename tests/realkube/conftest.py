"""The real-control-plane tier: etcd + kube-apiserver (+ kube-scheduler) 1.20 on 127.0.0.1.

Every test in this folder is marked ``realkube`` and skipped, with the reason, when the binaries are
missing (build them with ``scripts/kube-control-plane``; see docs/testing.md). Set
``NOS_REALKUBE_REQUIRED=1`` (CI) to turn that skip into a failure.

Fixtures:
* ``control_plane`` (session): etcd + kube-apiserver, started once, stopped at the end;
* ``kube_client``: a lightkube ``AsyncClient`` for it, closed after the test;
* ``scheduler`` (module): a kube-scheduler against ``control_plane``, only while a module needs it
  (so pods created by other modules are never scheduled behind their back);
* ``unique``: a short name prefix unique to the test (objects are not deleted between tests: without
  a kubelet and the namespace controller, deletions of bound pods and namespaces never finish).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from lightkube import AsyncClient

from tests.realkube.control_plane import Binaries, ControlPlane, Process, attach_logs, find_binaries

HERE = Path(__file__).parent
DEFAULT_TIMEOUT_S = 120


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "realkube: needs a real etcd + kube-apiserver (scripts/kube-control-plane); skipped without"
    )


def _in_tier(item: pytest.Item) -> bool:
    return HERE in Path(str(item.path)).parents


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    binaries, reason = find_binaries()
    required = os.environ.get("NOS_REALKUBE_REQUIRED") == "1"
    for item in items:
        if not _in_tier(item):
            continue
        item.add_marker(pytest.mark.realkube)
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DEFAULT_TIMEOUT_S))
        if binaries is None and not required:
            item.add_marker(pytest.mark.skip(reason=f"realkube: {reason}"))
        elif binaries is not None and binaries.scheduler is None and "scheduler" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.skip(reason="realkube: no kube-scheduler next to kube-apiserver"))


@pytest.fixture(scope="session")
def realkube_binaries() -> Binaries:
    binaries, reason = find_binaries()
    if binaries is None:
        if os.environ.get("NOS_REALKUBE_REQUIRED") == "1":
            pytest.fail(f"NOS_REALKUBE_REQUIRED=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    return binaries


@pytest.fixture(scope="session")
def control_plane(realkube_binaries: Binaries, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd + kube-apiserver for the whole session; logs stay in the temp dir (printed on failure)."""
    cp = ControlPlane(workdir=tmp_path_factory.mktemp("realkube"), binaries=realkube_binaries)
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="module")
def scheduler(control_plane: ControlPlane) -> Iterator[Process]:
    proc = control_plane.start_scheduler()
    try:
        yield proc
    finally:
        control_plane.stop_process(proc)


@pytest_asyncio.fixture
async def kube_client(control_plane: ControlPlane) -> AsyncIterator[AsyncClient]:
    client = control_plane.client()
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def unique() -> str:
    return "t" + uuid.uuid4().hex[:8]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On a failing realkube test, attach the tails of the component logs to the report."""
    report: pytest.TestReport = yield
    if _in_tier(item):
        attach_logs(item, report)
    return report
