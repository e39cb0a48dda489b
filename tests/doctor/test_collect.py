"""``nos doctor`` against the fake API server over real HTTP (lightkube), and the command itself."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from click.testing import CliRunner

from nos.cli.doctor import diagnose, doctor
from nos.doctor import DEFAULT_AGENT_SELECTOR, DEFAULT_MIG_MANAGER_SELECTOR, collect
from nos.kube.client import LightkubeKube
from tests.doctor.factories import agent_pod, gpu_node, mig_manager_pod
from tests.kube.conftest import FAST_RETRY, lightkube_client
from tests.kube.fake_apiserver import FakeApiServer

pytestmark = pytest.mark.timeout(20)


def seed(server: FakeApiServer) -> None:
    """Two opted-in nodes (one per key), one with both keys, one plain, one MPS; agents and a MIG manager."""
    store = server.store
    store.create("nodes", gpu_node("gpu-ai"))
    store.create("nodes", gpu_node("gpu-com", opt_in="nos.nebuly.com/gpu-partitioning"))
    both = gpu_node("gpu-both", labels={"nos.nebuly.com/gpu-partitioning": "mig", "nvidia.com/mig.config": "all-1g"})
    store.create("nodes", both)
    store.create("nodes", gpu_node("plain", opt_in=None))
    store.create("nodes", gpu_node("mps", opt_in=None, labels={"nos.nebuly.com/gpu-partitioning": "mps"}))
    for node in ("gpu-ai", "gpu-com", "plain"):
        store.create("pods", agent_pod(node))
    store.create("pods", agent_pod("gpu-both", namespace="elsewhere"))  # found only without --namespace
    store.create("pods", mig_manager_pod("gpu-both"))


@pytest_asyncio.fixture
async def kube() -> AsyncIterator[tuple[FakeApiServer, LightkubeKube]]:
    server = FakeApiServer()
    await server.start()
    seed(server)
    client = LightkubeKube(lightkube_client(server), component="doctor", instance="doctor-test", retry=FAST_RETRY)
    try:
        yield server, client
    finally:
        await client.close()
        await server.stop()


async def test_collect_reads_labelled_nodes_once_and_the_pods(kube: tuple[FakeApiServer, LightkubeKube]) -> None:
    server, client = kube
    facts = await collect(client, "nos-system")
    assert [n["metadata"]["name"] for n in facts.nodes] == ["gpu-ai", "gpu-both", "gpu-com"]
    assert sorted(p["spec"]["nodeName"] for p in facts.agent_pods) == ["gpu-ai", "gpu-com", "plain"]
    assert [p["metadata"]["name"] for p in facts.mig_manager_pods] == ["nvidia-mig-manager-gpu-both"]
    assert {r.method for r in server.requests} == {"GET"}, "doctor must never write"
    selectors = {r.query.get("labelSelector") for r in server.requests}
    assert selectors == {
        "nos.nebuly.ai/gpu-partitioning=mig",
        "nos.nebuly.com/gpu-partitioning=mig",
        DEFAULT_AGENT_SELECTOR,
        DEFAULT_MIG_MANAGER_SELECTOR,
    }


async def test_diagnose_over_http(kube: tuple[FakeApiServer, LightkubeKube]) -> None:
    _, client = kube
    report = await diagnose(client, "nos-system", DEFAULT_AGENT_SELECTOR, DEFAULT_MIG_MANAGER_SELECTOR)
    by = {(f.node, f.check): f for f in report.findings}
    assert by[("gpu-ai", "agent")].status.word == "ok"
    assert by[("gpu-both", "agent")].status.word == "failure"  # its agent is in another namespace
    assert by[("gpu-both", "mig-manager")].status.word == "warning"
    assert "plain" not in {f.node for f in report.findings}
    assert report.exit_code == 2
    everywhere = await diagnose(client, None, DEFAULT_AGENT_SELECTOR, DEFAULT_MIG_MANAGER_SELECTOR)
    assert everywhere.exit_code == 1
    assert [f.check for f in everywhere.findings if f.status.word != "ok"] == ["mig-manager"]


async def test_api_errors_surface_as_kube_errors(kube: tuple[FakeApiServer, LightkubeKube]) -> None:
    from nos.kube.port import KubeError

    server, client = kube
    server.fail_next(r"/api/v1/nodes", 403, times=10)
    with pytest.raises(KubeError) as info:
        await collect(client)
    assert info.value.status == 403


# --- the click command, against a server on its own loop (the command runs asyncio.run itself) ----


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Path]:
    loop = asyncio.new_event_loop()
    server = FakeApiServer()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    seed(server)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(server.kubeconfig()))
    try:
        yield kubeconfig
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(doctor, list(args), catch_exceptions=False)


def test_command_json_and_exit_codes(served: Path) -> None:
    result = _invoke("--kubeconfig", str(served), "--json")
    assert result.exit_code == 1  # the MIG manager warning; the agent in "elsewhere" counts without -n
    data = json.loads(result.output)
    assert data["exitCode"] == 1 and data["summary"]["failure"] == 0
    failing = _invoke("--kubeconfig", str(served), "-n", "nos-system", "--json")
    assert failing.exit_code == 2
    assert json.loads(failing.output)["summary"]["failure"] == 1


def test_command_text_report(served: Path) -> None:
    result = _invoke("--kubeconfig", str(served), "--agent-selector", "app=none")
    assert result.exit_code == 2
    assert "node gpu-ai" in result.output and "✘ agent" in result.output
    assert "✔ labelled-nodes" in result.output and "3 node(s) opted in" in result.output


def test_command_without_a_cluster_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(doctor, ["--kubeconfig", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert result.output.startswith("nos doctor: cannot read the cluster:")
