"""Small scenarios for the simulator tests."""

from __future__ import annotations

from nos.sim.scenario import NodeGroup, PodSpec, Scenario, Timings, Workload


def tiny(
    pods: list[PodSpec],
    layout: dict[str, int] | None = None,
    gpus: int = 1,
    count: int = 1,
    cpu: float = 64,
    duration_s: float | None = None,
) -> Scenario:
    return Scenario(
        name="tiny",
        nodes=[NodeGroup(name="n", model="A100-80GB", count=count, gpus=gpus, cpu=cpu, initial_layout=layout)],
        workload=Workload(pods=pods),
        static_layout=layout or {"1g.10gb": 7},
        duration_s=duration_s,
        timings=Timings(device_plugin_restart_s=20),
    )


def pod(name: str, profile: str, at: float = 0, duration: float = 600, cpu: float = 1, priority: int = 0) -> PodSpec:
    return PodSpec(name=name, arrival_s=at, profile=profile, duration_s=duration, cpu=cpu, priority=priority)
