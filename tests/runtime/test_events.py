"""The Event recorder (``nos.runtime.events``): once per change, bounded memory, fenced, best effort."""

from __future__ import annotations

from nos.kube.fake.memory import MemoryKube
from nos.kube.port import Event, KubeError, ObjectRef
from nos.runtime.events import EventRecorder


def event(name: str, reason: str = "MigUnplaceable", note: str = "no GPU fits") -> Event:
    return Event(ObjectRef("Pod", name, "default"), reason, note, "Warning")


def reasons(kube: MemoryKube) -> list[tuple[str, str]]:
    return [(e.regarding.name, e.note) for e in kube.events]


async def test_a_subject_hears_each_topic_once_per_change() -> None:
    kube = MemoryKube()
    rec = EventRecorder(kube)
    assert await rec.record(event("p1"), subject="p1", topic="full")
    assert not await rec.record(event("p1"), subject="p1", topic="full")  # said already
    assert await rec.record(event("p1", note="taints"), subject="p1", topic="taints")  # a new topic
    assert await rec.record(event("p1"), subject="p1", topic="full")  # changed back: said again
    assert await rec.record(event("p1")) and await rec.record(event("p1"))  # no subject: always sent
    assert (
        reasons(kube) == [("p1", "no GPU fits"), ("p1", "taints"), ("p1", "no GPU fits")] + [("p1", "no GPU fits")] * 2
    )


async def test_memory_is_bounded_least_recently_told_forgotten_first() -> None:
    kube = MemoryKube()
    rec = EventRecorder(kube, max_subjects=3)
    for name in ("a", "b", "c"):
        await rec.record(event(name), subject=name, topic="x")
    await rec.record(event("a"), subject="a", topic="x")  # a is used again: b is now the oldest
    await rec.record(event("d"), subject="d", topic="x")
    assert rec.told("a", "x") and not rec.told("b") and rec.told("c") and rec.told("d")
    assert await rec.record(event("b"), subject="b", topic="x")  # forgotten: said again


async def test_remember_records_a_topic_without_sending() -> None:
    kube = MemoryKube()
    rec = EventRecorder(kube)
    rec.remember("n1", "")
    assert rec.told("n1", "") and not rec.told("n1", "frozen") and kube.events == []


async def test_nothing_is_sent_while_the_fence_is_down_and_it_is_not_remembered() -> None:
    kube = MemoryKube()
    leading = {"now": False}
    rec = EventRecorder(kube, fence=lambda: leading["now"])
    assert not await rec.record(event("p1"), subject="p1", topic="full")
    leading["now"] = True
    assert await rec.record(event("p1"), subject="p1", topic="full")
    assert len(kube.events) == 1


async def test_a_failed_event_is_logged_not_raised() -> None:
    kube = MemoryKube()
    kube.fail_next("create_event", KubeError("apiserver down", 503))
    rec = EventRecorder(kube)
    assert not await rec.record(event("p1"))
    assert (rec.sent, rec.failed) == (0, 1)
    assert await rec.record(event("p1")) and rec.sent == 1
