"""Small helpers for the runtime tests: waiting on a condition, reading a metric from the exposition."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from nos.obs.metrics import Metrics


async def eventually(check: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll ``check`` until true; fail with ``what`` after ``timeout`` seconds (loop time)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    """The value of one sample, read from the public Prometheus exposition (what ``/metrics`` serves)."""
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    raise AssertionError(f"no sample {name}{labels} in the exposition")
