"""Process lifecycle helpers of the runtime manager: SIGTERM/SIGINT → a stop Event, the elector's identity."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import uuid
from collections.abc import Iterator

log = logging.getLogger(__name__)


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """While inside, SIGTERM (kubelet stopping the pod) and SIGINT set ``stop`` instead of killing the
    process, so the current cycle/apply can finish and the Lease is released."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread / platform
            loop.add_signal_handler(sig, _on_signal, stop, sig)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _on_signal(stop: asyncio.Event, sig: signal.Signals) -> None:
    log.info("received %s, shutting down", sig.name)
    stop.set()


def default_identity() -> str:
    """``<pod name>_<random>`` as client-go does: unique even if a pod name is reused."""
    base = os.environ.get("POD_NAME") or socket.gethostname()
    return f"{base}_{uuid.uuid4().hex[:12]}"
