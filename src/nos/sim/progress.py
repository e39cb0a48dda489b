"""Progress of ``nos simulate`` on stderr: a bar per policy on a terminal, otherwise a line every
few seconds (CI logs, ``2> file``), both with an estimate of the time left."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO


def _clock_text(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class LineProgress:
    """One line at each policy's start and end, and every ``every_s`` wall seconds in between:
    virtual time reached, wall time spent and the estimated time left for that policy (wall time so
    far scaled by the virtual time still to go)."""

    def __init__(self, stream: TextIO, every_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream, self.every_s, self.clock = stream, every_s, clock
        self.policy = ""
        self.label = ""
        self.end_s = 1.0
        self.started = self.last = 0.0

    def start(self, policy: str, index: int, count: int, end_s: float) -> None:
        self.policy, self.label, self.end_s = policy, f"[{index}/{count}] {policy}", max(end_s, 1e-9)
        self.started = self.last = self.clock()
        self._print(f"{self.label}: started ({end_s / 3600:.1f} h of virtual time at most)")

    def update(self, t: float) -> None:
        now = self.clock()
        if now - self.last < self.every_s:
            return
        self.last = now
        spent = now - self.started
        share = min(t / self.end_s, 1.0)
        left = spent * (1 - share) / share if share > 0 else float("nan")
        estimate = _clock_text(left) if share > 0 else "unknown"
        self._print(
            f"{self.label}: {100 * share:3.0f}% ({t / 3600:.2f} h virtual), {_clock_text(spent)} spent,"
            f" about {estimate} left"
        )

    def finish(self) -> None:
        self._print(f"{self.label}: done in {_clock_text(self.clock() - self.started)}")

    def _print(self, line: str) -> None:
        print(f"nos simulate {line}", file=self.stream, flush=True)
