"""Building events.k8s.io/v1 Event objects from the port's ``Event``.

Shared by both ``Kube`` implementations so the in-memory fake stores exactly what the HTTP client
sends. The apiserver requires eventTime (RFC 3339 with exactly six fractional digits),
reportingController, reportingInstance, action, reason and type, and caps note at 1 kB; names follow
client-go's recorder (``<regarding-name>.<hex time>``) so they are valid without ``generateName``.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

from nos.kube.port import Event

Obj = dict[str, Any]

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
