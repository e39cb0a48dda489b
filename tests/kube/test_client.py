"""LightkubeKube specifics over real HTTP: retries, error mapping, config loading, wire formats."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from lightkube import AsyncClient, KubeConfig

from nos.kube.client import LightkubeKube, RetryPolicy, from_kubeconfig
from nos.kube.port import Conflict, Event, KubeError, NotFound, ObjectRef, annotations_patch
from tests.kube.conftest import FAST_RETRY, lightkube_client, node, pod
from tests.kube.fake_apiserver import FakeApiServer

HttpKube = tuple[FakeApiServer, LightkubeKube]


class RecordingSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


async def test_429_then_success_is_retried(http_kube: HttpKube) -> None:
    server, kube = http_kube
    server.store.create("nodes", node("n1"))
    server.fail_next(r"^/api/v1/nodes/n1$", 429, times=2)
    assert (await kube.get("nodes", "n1"))["metadata"]["name"] == "n1"
    assert server.count("GET", r"^/api/v1/nodes/n1$") == 3


async def test_503_on_list_and_patch_is_retried(http_kube: HttpKube) -> None:
    server, kube = http_kube
    server.store.create("nodes", node("n1"))
    server.store.create("pods", pod("p", node_name="n1"), "default")
    server.fail_next(r"^/api/v1/pods$", 503)
    server.fail_next(r"^/api/v1/nodes/n1$", 500, method="PATCH")
    assert len(await kube.list("pods", field_selector="spec.nodeName=n1")) == 1
    patched = await kube.patch("nodes", "n1", annotations_patch({"k": "v"}))
    assert patched["metadata"]["annotations"] == {"k": "v"}
    assert server.count("PATCH", r"^/api/v1/nodes/n1$") == 2


async def test_persistent_5xx_gives_up_after_the_configured_attempts(http_kube: HttpKube) -> None:
    server, kube = http_kube
    server.fail_next(r"^/api/v1/nodes$", 503, times=100)
    with pytest.raises(KubeError) as exc:
        await kube.list("nodes")
    assert exc.value.status == 503
    assert server.count("GET", r"^/api/v1/nodes$") == FAST_RETRY.attempts


async def test_retry_after_header_sets_the_delay(fake_server: FakeApiServer) -> None:
    sleep = RecordingSleep()
    kube = LightkubeKube(lightkube_client(fake_server), retry=RetryPolicy(attempts=3, max_delay=2.0, sleep=sleep))
    try:
        fake_server.store.create("nodes", node("n1"))
        fake_server.fail_next(r"/nodes/n1$", 429, retry_after=1.5)
        fake_server.fail_next(r"/nodes/n1$", 429, retry_after=30)
        await kube.get("nodes", "n1")
    finally:
        await kube.close()
    assert sleep.delays == [1.5, 2.0]  # the second one capped at max_delay


@pytest.mark.parametrize(("status", "exc_type"), [(404, NotFound), (409, Conflict), (403, KubeError), (422, KubeError)])
async def test_client_errors_are_mapped_and_not_retried(
    http_kube: HttpKube, status: int, exc_type: type[KubeError]
) -> None:
    server, kube = http_kube
    server.store.create("nodes", node("n1"))
    server.fail_next(r"^/api/v1/nodes/n1$", status, method="PATCH")
    with pytest.raises(exc_type) as exc:
        await kube.patch("nodes", "n1", annotations_patch({"k": "v"}))
    assert exc.value.status == status
    assert server.count("PATCH", r"^/api/v1/nodes/n1$") == 1


async def test_replayed_delete_that_already_landed_counts_as_success(http_kube: HttpKube) -> None:
    server, kube = http_kube
    # The pod is already gone and the first answer is lost (503): the replay sees 404 → success.
    server.fail_next(r"/pods/dp$", 503, method="DELETE")
    await kube.delete("pods", "dp", "nvidia")
    assert server.count("DELETE", r"/pods/dp$") == 2
    # Without a prior failure a 404 is a real NotFound.
    with pytest.raises(NotFound):
        await kube.delete("pods", "dp", "nvidia")


async def test_replayed_event_create_is_created_once(http_kube: HttpKube) -> None:
    server, kube = http_kube
    server.fail_next(r"/events$", 500, method="POST")
    await kube.create_event(Event(ObjectRef("Node", "n1"), reason="R", note="n"))
    assert len(server.store.list("events")[0]) == 1


async def test_invalid_event_is_rejected_with_422(http_kube: HttpKube) -> None:
    server, kube = http_kube
    with pytest.raises(KubeError) as exc:
        await kube.create_event(Event(ObjectRef("Node", "n1"), reason="", note="n"))
    assert exc.value.status == 422
    assert "reason" in str(exc.value)
    assert server.count("POST", r"/events$") == 1


async def test_event_time_with_zero_microseconds_stays_valid(fake_server: FakeApiServer) -> None:
    # msgspec would encode ...:00Z without a fraction, which the apiserver's MicroTime rejects.
    clock = lambda: datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)  # noqa: E731
    kube = LightkubeKube(lightkube_client(fake_server), component="partitioner", clock=clock)
    try:
        await kube.create_event(Event(ObjectRef("Node", "n1"), reason="R", note="n"))
    finally:
        await kube.close()
    (event,) = fake_server.store.list("events")[0]
    assert event["eventTime"] == "2026-01-01T12:00:00.000001Z"
    assert event["reportingController"] == "nos.nebuly.com/partitioner"
    assert event["reportingInstance"].startswith("partitioner-")


async def test_selector_strings_pass_through_unchanged(http_kube: HttpKube) -> None:
    server, kube = http_kube
    server.store.create("nodes", node("a", labels={"gpu": "a100"}))
    server.store.create("nodes", node("b", labels={"gpu": "h100"}))
    server.store.create("nodes", node("c", labels={"gpu": "t4"}))
    got = await kube.list("nodes", label_selector="gpu in (a100, h100)")
    assert sorted(n["metadata"]["name"] for n in got) == ["a", "b"]
    assert server.requests[-1].query["labelSelector"] == "gpu in (a100, h100)"


async def test_unsupported_field_selector_is_a_400(http_kube: HttpKube) -> None:
    _, kube = http_kube
    with pytest.raises(KubeError) as exc:
        await kube.list("pods", field_selector="spec.priority=3")
    assert exc.value.status == 400


async def test_connection_refused_becomes_kube_error_status_0() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = {
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    kube = LightkubeKube(AsyncClient(KubeConfig.from_dict(conf), trust_env=False), retry=FAST_RETRY)
    try:
        with pytest.raises(KubeError) as exc:
            await kube.get("nodes", "n1")
    finally:
        await kube.close()
    assert exc.value.status == 0


async def test_from_kubeconfig_file_and_env(
    fake_server: FakeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(fake_server.kubeconfig()))
    fake_server.store.create("nodes", node("n1"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    async with from_kubeconfig(str(path), component="partitioner") as kube:
        assert (await kube.get("nodes", "n1"))["metadata"]["name"] == "n1"
        assert kube.component == "partitioner"
    monkeypatch.setenv("KUBECONFIG", str(path))
    async with from_kubeconfig(None) as kube:
        assert len(await kube.list("nodes")) == 1
