"""Lease leader election: MemoryKube on virtual time (looptime), plus the HTTP adapter on real time."""

from __future__ import annotations

import asyncio

import pytest

from nos.config import LeaderElectionConfig
from nos.kube.client import LightkubeKube
from nos.kube.fake.memory import MemoryKube
from nos.kube.port import Conflict, Kube, KubeError
from nos.runtime.leader import LeaderElector, LeadershipLost
from tests.kube.fake_apiserver import FakeApiServer
from tests.runtime.helpers import eventually

CFG = LeaderElectionConfig(
    lease_name="nos",
    namespace="nos-system",
    lease_duration_seconds=15,
    renew_deadline_seconds=10,
    retry_period_seconds=2,
)
FAST = LeaderElectionConfig(
    lease_name="nos",
    namespace="nos-system",
    lease_duration_seconds=1.0,
    renew_deadline_seconds=0.6,
    retry_period_seconds=0.1,
)


class Candidate:
    """An elector whose work runs until cancelled, recording when it led."""

    def __init__(self, kube: Kube, name: str, cfg: LeaderElectionConfig = CFG) -> None:
        self.elector = LeaderElector(kube, name, cfg)
        self.stop = asyncio.Event()
        self.led_at: float | None = None
        self.work_cancelled = False
        self.task: asyncio.Task[None] = asyncio.create_task(self.elector.run(self._work, self.stop))

    async def _work(self) -> None:
        self.led_at = asyncio.get_running_loop().time()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.work_cancelled = True
            raise

    async def crash(self) -> None:
        """Die without releasing (cancel = the process vanished)."""
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def holder(kube: MemoryKube) -> str | None:
    return kube.store.get("leases", "nos", "nos-system")["spec"].get("holderIdentity")


@pytest.mark.looptime
async def test_two_candidates_one_leader() -> None:
    kube = MemoryKube()
    a, b = Candidate(kube, "a"), Candidate(kube, "b")
    await asyncio.sleep(60)  # many renewals on virtual time
    leaders = [c for c in (a, b) if c.elector.is_leader]
    assert len(leaders) == 1 and holder(kube) == leaders[0].elector.identity
    assert kube.store.get("leases", "nos", "nos-system")["spec"]["leaseTransitions"] == 0
    await a.crash()
    await b.crash()


@pytest.mark.looptime
async def test_takeover_only_after_the_lease_expired_by_local_observation() -> None:
    kube = MemoryKube()
    a = Candidate(kube, "a")
    await asyncio.sleep(1)
    assert a.elector.is_leader
    b = Candidate(kube, "b")
    await asyncio.sleep(30)
    assert b.led_at is None  # a keeps renewing
    await a.crash()
    crashed_at = asyncio.get_running_loop().time()
    await asyncio.sleep(30)
    assert b.led_at is not None and holder(kube) == "b"
    # b saw a's last renewal at most one retry period before the crash; it must wait a full lease after it
    assert b.led_at - crashed_at >= CFG.lease_duration_seconds - CFG.retry_period_seconds * 1.2
    assert kube.store.get("leases", "nos", "nos-system")["spec"]["leaseTransitions"] == 1
    await b.crash()


@pytest.mark.looptime
async def test_conflict_on_renew_steps_down_at_once_and_cancels_the_work() -> None:
    kube = MemoryKube()
    a = Candidate(kube, "a")
    await asyncio.sleep(1)
    assert a.elector.is_leader
    kube.fail_next("replace leases", Conflict("someone else wrote the lease"))
    started = asyncio.get_running_loop().time()
    with pytest.raises(LeadershipLost):
        await a.task
    assert a.work_cancelled and not a.elector.is_leader
    assert asyncio.get_running_loop().time() - started <= CFG.retry_period_seconds * 1.2 + 0.1


@pytest.mark.looptime
async def test_failing_renewals_step_down_after_the_renew_deadline() -> None:
    kube = MemoryKube()
    a = Candidate(kube, "a")
    await asyncio.sleep(1)
    kube.fail_next("replace leases", KubeError("etcd unavailable", 500), times=1000)
    started = asyncio.get_running_loop().time()
    with pytest.raises(LeadershipLost):
        await a.task
    took = asyncio.get_running_loop().time() - started
    assert CFG.renew_deadline_seconds <= took <= CFG.renew_deadline_seconds + 2 * CFG.retry_period_seconds + 0.1
    assert a.work_cancelled
    # stepping down happened before the lease could expire for others: no two leaders
    assert took < CFG.lease_duration_seconds


@pytest.mark.looptime
async def test_a_transient_renew_failure_is_survived() -> None:
    kube = MemoryKube()
    a = Candidate(kube, "a")
    await asyncio.sleep(1)
    kube.fail_next("replace leases", KubeError("blip", 503), times=2)
    await asyncio.sleep(30)
    assert a.elector.is_leader and not a.task.done()
    await a.crash()


@pytest.mark.looptime
async def test_graceful_stop_releases_and_standby_takes_over_quickly() -> None:
    kube = MemoryKube()
    a = Candidate(kube, "a")
    await asyncio.sleep(1)
    b = Candidate(kube, "b")
    await asyncio.sleep(5)
    a.stop.set()
    await a.task  # returns normally
    assert a.work_cancelled and holder(kube) in (None, "b")
    released_at = asyncio.get_running_loop().time()
    await asyncio.sleep(5)
    assert b.led_at is not None and b.led_at - released_at <= CFG.retry_period_seconds * 1.2 + 0.1
    await b.crash()


def test_config_is_checked() -> None:
    with pytest.raises(ValueError):
        LeaderElectionConfig(lease_duration_seconds=10, renew_deadline_seconds=10, retry_period_seconds=2)


async def test_over_http_one_leader_then_409_on_renew_steps_down(server: FakeApiServer, http: LightkubeKube) -> None:
    server.store.create("leases", {"metadata": {"name": "seed", "namespace": "nos-system"}}, "nos-system")
    a = Candidate(http, "a", FAST)
    await eventually(lambda: a.elector.is_leader, what="a leads")
    b = Candidate(http, "b", FAST)
    await asyncio.sleep(0.5)
    assert not b.elector.is_leader and a.elector.is_leader
    lease = server.store.get("leases", "nos", "nos-system")
    assert lease["spec"]["holderIdentity"] == "a" and lease["spec"]["renewTime"].endswith("Z")
    server.fail_next(r"/leases/nos$", 409, method="PUT")
    with pytest.raises(LeadershipLost):
        await asyncio.wait_for(a.task, 3)
    await eventually(lambda: b.elector.is_leader, what="b takes over after the lease expired")
    b.stop.set()
    await asyncio.wait_for(b.task, 3)
    assert not server.store.get("leases", "nos", "nos-system")["spec"].get("holderIdentity")


async def test_over_http_500s_step_down_within_the_deadline(server: FakeApiServer, http: LightkubeKube) -> None:
    a = Candidate(http, "a", FAST)
    await eventually(lambda: a.elector.is_leader, what="a leads")
    server.fail_next(r"/leases/nos$", 500, times=1000)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(LeadershipLost):
        await asyncio.wait_for(a.task, 3)
    assert loop.time() - started < FAST.lease_duration_seconds
