"""A deadline on every NVML call: a wedged driver must not wedge the agent silently.

NVML has no timeouts; a call stuck in the driver (a GPU falling off the bus, a hung reset) never
returns. ``DeadlineNvml`` runs each call of the wrapped ``Nvml`` on one dedicated thread and waits for
it at most ``timeout_s``; past it the call fails with ``NvmlTimeout`` (so the GPU is reported as
unreadable) and, while the stuck call has not returned, every later call fails at once (NVML is not
thread-safe, a second thread must not enter it). ``hung`` tells the liveness probe, which restarts
the container: the only way to get a fresh NVML handle. A stuck call that returns late clears it.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from nos.gpu.port import GpuInfo, GpuInstanceInfo, Nvml, NvmlTimeout, ProfileInfo


class DeadlineNvml:
    """An ``Nvml`` whose calls each fail with ``NvmlTimeout`` after ``timeout_s``."""

    def __init__(self, inner: Nvml, timeout_s: float) -> None:
        self.inner, self.timeout_s = inner, timeout_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nvml-call")
        self._lock = threading.Lock()
        self._stuck: tuple[str, Future[Any]] | None = None

    @property
    def hung(self) -> str | None:
        """The call that passed its deadline and has still not returned, if any."""
        with self._lock:
            if self._stuck is not None and self._stuck[1].done():
                self._stuck = None
            return None if self._stuck is None else self._stuck[0]

    def _call(self, name: str, *args: Any) -> Any:
        stuck = self.hung
        if stuck is not None:
            raise NvmlTimeout(f"NVML is unusable: {stuck} has not returned (the agent needs a restart)")
        future = self._executor.submit(getattr(self.inner, name), *args)
        try:
            return future.result(timeout=self.timeout_s)
        except FutureTimeout:
            call = f"{name}{args}"
            with self._lock:
                self._stuck = (call, future)
            raise NvmlTimeout(f"{call} did not return within {self.timeout_s:g}s") from None

    def gpus(self) -> list[GpuInfo]:
        return list(self._call("gpus"))

    def profiles(self, gpu: int) -> list[ProfileInfo]:
        return list(self._call("profiles", gpu))

    def gpu_instances(self, gpu: int) -> list[GpuInstanceInfo]:
        return list(self._call("gpu_instances", gpu))

    def create_gpu_instance(self, gpu: int, profile: str, start: int) -> GpuInstanceInfo:
        result: GpuInstanceInfo = self._call("create_gpu_instance", gpu, profile, start)
        return result

    def create_compute_instance(self, gpu: int, gi_id: int) -> GpuInstanceInfo:
        result: GpuInstanceInfo = self._call("create_compute_instance", gpu, gi_id)
        return result

    def destroy_gpu_instance(self, gpu: int, gi_id: int) -> None:
        self._call("destroy_gpu_instance", gpu, gi_id)

    def busy_gpu_instances(self, gpu: int) -> set[int]:
        return set(self._call("busy_gpu_instances", gpu))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
