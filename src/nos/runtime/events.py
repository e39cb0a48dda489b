"""The Event recorder: the one way nos' components emit Kubernetes Events.

Every Event a component sends goes through ``EventRecorder.record``, which

* drops it while this replica may not write (``fence``: a partitioner that may have lost its Lease
  says nothing either);
* says each thing once per change: with ``subject`` (what the Event is about, e.g. a pod or "the
  spec's problems") and ``topic`` (what is said about it), an Event whose subject was last told the
  same topic is not sent again; a new topic replaces the old one. The memory of subjects is bounded
  (least recently told forgotten first), so a partitioner that sees millions of pods over its life
  does not grow without end;
* never lets a failed Event stop a reconcile (logged, not raised).

Repeats that do get sent are folded into the first Event's ``series`` by the ``Kube`` adapters
(client-go's deduplication, ``nos.kube.events.EventSeries``): that needs the stored object, which
only the adapter has.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Hashable

from nos.kube.port import Event, Kube

log = logging.getLogger(__name__)

MAX_SUBJECTS = 16384
"""Subjects remembered at most (a pod key and its last topic are ~100 bytes: ~2 MB)."""

_ANY = object()


class EventRecorder:
    def __init__(self, kube: Kube, fence: Callable[[], bool] | None = None, max_subjects: int = MAX_SUBJECTS) -> None:
        self.kube, self.fence, self.max_subjects = kube, fence, max_subjects
        self._told: OrderedDict[Hashable, Hashable] = OrderedDict()
        self.sent = 0
        self.failed = 0

    def told(self, subject: Hashable, topic: Hashable = _ANY) -> bool:
        """``subject`` was last told ``topic`` (any topic when none is given)."""
        if subject not in self._told:
            return False
        return topic is _ANY or self._told[subject] == topic

    def remember(self, subject: Hashable, topic: Hashable = None) -> None:
        """Record ``topic`` as told to ``subject`` without sending anything (e.g. "nothing to say")."""
        self._told[subject] = topic
        self._told.move_to_end(subject)
        while len(self._told) > self.max_subjects:
            self._told.popitem(last=False)

    async def record(self, event: Event, subject: Hashable | None = None, topic: Hashable = None) -> bool:
        """Send ``event`` unless ``subject`` was last told ``topic`` or the fence is down; True when sent."""
        if self.fence is not None and not self.fence():
            return False
        if subject is not None:
            if self.told(subject, topic):
                self._told.move_to_end(subject)
                return False
            self.remember(subject, topic)
        try:
            await self.kube.create_event(event)
        except Exception as e:  # an Event explains; it must never stop the work it explains
            self.failed += 1
            log.warning("could not record event %s on %s: %s", event.reason, event.regarding.name, e)
            return False
        self.sent += 1
        return True
