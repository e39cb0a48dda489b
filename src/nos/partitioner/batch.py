"""Batching of candidate pods, as the original nos does it.

A batch opens when a candidate is first seen; it closes when no new candidate arrived for the idle
window, or when the timeout window has passed since it opened, whichever comes first. Planning on a
closed batch rather than on every pod event lets one plan serve a burst of pods, so nodes are
reconfigured (and device plugins restarted) once per burst, not once per pod.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class Batcher:
    idle_s: float = 10.0
    timeout_s: float = 60.0
    opened_at: float | None = None
    last_new_at: float | None = None
    seen: set[str] = field(default_factory=set)

    def observe(self, candidates: Iterable[str], now: float) -> None:
        """Record the current candidates (pod keys). New ones extend the idle window; when none
        is left (all scheduled or gone) the batch is dropped."""
        current = set(candidates)
        if not current:
            self.reset()
            return
        if current - self.seen:
            if self.opened_at is None:
                self.opened_at = now
            self.last_new_at = now
        self.seen = current

    def ready(self, now: float) -> bool:
        if self.opened_at is None or self.last_new_at is None:
            return False
        return now - self.last_new_at >= self.idle_s or now - self.opened_at >= self.timeout_s

    def next_deadline(self) -> float | None:
        """When the batch will close if nothing new arrives (for a controller's sleep)."""
        if self.opened_at is None or self.last_new_at is None:
            return None
        return min(self.last_new_at + self.idle_s, self.opened_at + self.timeout_s)

    def reset(self) -> None:
        """Close the batch. Pods still pending after a plan open the next batch only when new ones
        arrive or when they are observed again after the reset."""
        self.opened_at = self.last_new_at = None
        self.seen = set()
