"""Issue 10 finding 7: a repeated Event is counted on the first one's series, not a new object.
Over real HTTP against the fake API server, and on MemoryKube (same ``EventSeries``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from nos.kube.events import EventSeries, micro_time
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


def test_a_full_series_table_forgets_the_least_recently_seen_event() -> None:
    series = EventSeries(window_s=3600, max_entries=2)
    t0 = datetime(2026, 11, 30, tzinfo=UTC)
    a, b, c = (Event(ObjectRef("Node", "n1"), "R", note) for note in "abc")

    def create(event: Event, name: str, at: int) -> None:
        assert series.repeat(event, t0 + timedelta(seconds=at)) is None
        series.created(event, {"metadata": {"name": name, "namespace": "default"}}, t0 + timedelta(seconds=at))

    create(a, "a", 0)
    create(b, "b", 1)
    assert series.repeat(a, t0 + timedelta(seconds=2)) is not None  # a seen again: b is now the oldest
    create(c, "c", 3)  # the table is full: b is forgotten
    assert series.repeat(b, t0 + timedelta(seconds=4)) is None
    assert series.repeat(a, t0 + timedelta(seconds=4)) == (
        "a",
        "default",
        {"series": {"count": 3, "lastObservedTime": micro_time(t0 + timedelta(seconds=4))}},
    )
