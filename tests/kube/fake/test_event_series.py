"""Issue 10 finding 7: a repeated Event is counted on the first one's series, not a new object.
Over real HTTP against the fake API server, and on MemoryKube (same ``EventSeries``)."""

from __future__ import annotations

from nos.kube.fake.memory import MemoryKube
from nos.kube.port import Event, ObjectRef
from tests.kube.test_client import HttpKube


async def test_repeated_event_updates_its_series_over_http(http_kube: HttpKube) -> None:
    server, kube = http_kube
    same = Event(ObjectRef("Node", "n1"), "MalformedSpec", "annotation x: bad", "Warning")
    for _ in range(3):
        await kube.create_event(same)
    await kube.create_event(Event(ObjectRef("Node", "n1"), "MalformedSpec", "annotation y: bad", "Warning"))
    events = sorted(server.store.list("events")[0], key=lambda e: e["note"])
    assert [e["note"] for e in events] == ["annotation x: bad", "annotation y: bad"]
    assert events[0]["series"]["count"] == 3 and events[0]["series"]["lastObservedTime"].endswith("Z")
    assert "series" not in events[1]
    assert server.count("POST", r"/events$") == 2


async def test_an_expired_event_is_created_again() -> None:
    kube = MemoryKube()
    event = Event(ObjectRef("Node", "n1"), "R", "n")
    await kube.create_event(event)
    [stored] = kube.store.list("events")[0]
    kube.store.delete("events", stored["metadata"]["name"], stored["metadata"]["namespace"])
    await kube.create_event(event)
    await kube.create_event(event)
    [again] = kube.store.list("events")[0]
    assert again["series"]["count"] == 2
