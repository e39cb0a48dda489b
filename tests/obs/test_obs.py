"""Metrics, health endpoints and JSON logs."""

from __future__ import annotations

import io
import json
import logging

import aiohttp

from nos.obs.health import ObservabilityServer
from nos.obs.logging import setup_logging
from nos.obs.metrics import Metrics


async def test_endpoints_answer_on_separate_ports() -> None:
    metrics = Metrics()
    metrics.plans.labels("written").inc()
    ready = {"now": False}
    server = ObservabilityServer(metrics, lambda: ready["now"], metrics_port=0, health_port=0, host="127.0.0.1")
    await server.start()
    try:
        m, h = server.ports["metrics"], server.ports["health"]
        assert m != h
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{m}/metrics") as resp:
                body = await resp.text()
                assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
            assert 'nos_partitioner_plans_total{outcome="written"} 1.0' in body
            for name in ("nos_agent_apply_duration_seconds", "nos_agent_nvml_errors_total", "process_cpu_seconds"):
                assert name in body
            async with http.get(f"http://127.0.0.1:{h}/healthz") as resp:
                assert resp.status == 200
            async with http.get(f"http://127.0.0.1:{h}/readyz") as resp:
                assert resp.status == 503
            ready["now"] = True
            async with http.get(f"http://127.0.0.1:{h}/readyz") as resp:
                assert resp.status == 200
            async with http.get(f"http://127.0.0.1:{h}/metrics") as resp:
                assert resp.status == 404  # metrics only on the metrics port
    finally:
        await server.stop()


def test_metrics_registries_are_independent() -> None:
    a, b = Metrics(), Metrics()
    a.nodes_changed.inc(3)
    assert b"nos_partitioner_nodes_changed_total 0.0" in b.exposition()
    assert b"nos_partitioner_nodes_changed_total 3.0" in a.exposition()


def test_json_logs_one_object_per_line_with_extra_fields() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        setup_logging("info", "json", stream)
        logging.getLogger("nos.test").info("plan %s written", "42", extra={"node": "gpu-1"})
        logging.getLogger("nos.test").debug("hidden")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("nos.test").exception("failed")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = stream.getvalue().splitlines()
    first, second = (json.loads(line) for line in lines[:2])
    assert len(lines) == 2  # the traceback stays inside the JSON line
    assert first["msg"] == "plan 42 written" and first["level"] == "info" and first["node"] == "gpu-1"
    assert first["logger"] == "nos.test" and first["time"].endswith("+00:00")
    assert second["level"] == "error" and "RuntimeError: boom" in second["exc"]
