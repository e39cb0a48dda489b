"""Building events.k8s.io/v1 Event objects from the port's ``Event``.

Shared by both ``Kube`` implementations so the in-memory fake stores exactly what the HTTP client
sends. The apiserver requires eventTime (RFC 3339 with exactly six fractional digits),
reportingController, reportingInstance, action, reason and type, and caps note at 1 kB; names follow
client-go's recorder (``<regarding-name>.<hex time>``) so they are valid without ``generateName``.
A repeated Event updates the first one's ``series`` instead of creating an object (``EventSeries``).
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from nos.kube.port import Event, NotFound, Obj

CONTROLLER_PREFIX = "nos.nebuly.com/"
NOTE_LIMIT_BYTES = 1024
_counter = itertools.count()


def micro_time(when: datetime) -> str:
    """RFC 3339 with microseconds, UTC (metav1.MicroTime's wire format)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def truncate_utf8(text: str, limit: int) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[:limit].decode(errors="ignore")


def event_name(regarding_name: str, when: datetime) -> str:
    """``<name>.<hex nanoseconds><counter>``: unique per process even within one clock tick."""
    nanos = int(when.timestamp() * 1_000_000) * 1000 + next(_counter) % 1000
    suffix = f".{nanos:x}"
    return regarding_name[: 253 - len(suffix)] + suffix


def event_body(event: Event, component: str, instance: str, when: datetime) -> Obj:
    """The events.k8s.io/v1 object for ``event``; a Node (cluster-scoped) gets namespace default."""
    if when.microsecond == 0:
        # lightkube (msgspec) drops a zero fraction, and the apiserver's MicroTime parser then
        # rejects the event; one microsecond keeps the wire format valid.
        when = when.replace(microsecond=1)
    ref = event.regarding
    regarding: Obj = {"kind": ref.kind, "name": ref.name, "apiVersion": ref.api_version}
    if ref.namespace:
        regarding["namespace"] = ref.namespace
    if ref.uid:
        regarding["uid"] = ref.uid
    return {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": event_name(ref.name, when), "namespace": ref.namespace or "default"},
        "eventTime": micro_time(when),
        "reportingController": (CONTROLLER_PREFIX + component)[:128],
        "reportingInstance": instance[:128],
        "action": event.action[:128],
        "reason": event.reason[:128],
        "note": truncate_utf8(event.note, NOTE_LIMIT_BYTES),
        "type": event.type,
        "regarding": regarding,
    }


SERIES_WINDOW_S = 6 * 60.0
"""client-go's window for isomorphic events: a repeat within it updates the first Event's series."""


@dataclass
class _Seen:
    name: str
    namespace: str
    count: int
    last: datetime


class EventSeries:
    """client-go's event deduplication for events.k8s.io/v1: an Event equal to one sent less than
    ``window_s`` ago (same regarding object, reason, type, action and note) is not a new object; the
    first one's ``series`` (``count``, ``lastObservedTime``) is patched instead. Shared by both
    ``Kube`` implementations through ``send``."""

    def __init__(self, window_s: float = SERIES_WINDOW_S, max_entries: int = 4096) -> None:
        self.window_s, self.max_entries = window_s, max_entries
        self._seen: dict[tuple[str, ...], _Seen] = {}

    @staticmethod
    def _key(event: Event) -> tuple[str, ...]:
        ref = event.regarding
        return (
            ref.kind,
            ref.namespace or "",
            ref.name,
            ref.uid or "",
            event.reason,
            event.type,
            event.action,
            event.note,
        )

    def repeat(self, event: Event, when: datetime) -> tuple[str, str, Obj] | None:
        """(name, namespace, merge patch) that records ``event`` as a repeat; None: create a new one."""
        key = self._key(event)
        seen = self._seen.get(key)
        if seen is None or (when - seen.last).total_seconds() > self.window_s:
            return None
        seen.count += 1
        seen.last = when
        self._seen[key] = self._seen.pop(key)  # most recently seen last: the first entry is the oldest
        return seen.name, seen.namespace, {"series": {"count": seen.count, "lastObservedTime": micro_time(when)}}

    def created(self, event: Event, body: Obj, when: datetime) -> None:
        key = self._key(event)
        self._seen.pop(key, None)
        if len(self._seen) >= self.max_entries:  # bounded: forget the least recently seen, the first
            # (O(1): a minimum over 4,096 entries on every new Event was most of a busy simulation's time)
            del self._seen[next(iter(self._seen))]
        meta = body["metadata"]
        self._seen[key] = _Seen(meta["name"], meta["namespace"], 1, when)

    def forget(self, event: Event) -> None:
        """The Event object is gone (expired): the next repeat creates a new one."""
        self._seen.pop(self._key(event), None)

    async def send(
        self,
        event: Event,
        when: datetime,
        component: str,
        instance: str,
        patch: Callable[[str, str, Obj], Awaitable[object]],
        create: Callable[[Obj], Awaitable[object]],
    ) -> None:
        """Send ``event`` through an adapter's calls: a repeat patches the first Event's series
        (``patch(name, namespace, body)``); a new Event, or a repeat whose first one expired (404),
        is created (``create(body)``)."""
        repeat = self.repeat(event, when)
        if repeat is not None:
            name, namespace, series = repeat
            try:
                await patch(name, namespace, series)
                return
            except NotFound:
                self.forget(event)
        body = event_body(event, component, instance, when)
        await create(body)
        self.created(event, body, when)
