"""``nos simulate`` skips an agent's reconcile whose inputs are those of a ``settled`` one: every
figure of a run equals the run's that reconciles every time."""

from __future__ import annotations

from typing import Any

import pytest

from nos.agent.agent import MigAgent, ReconcileResult
from nos.gpu.port import Nvml
from nos.mig.catalog import GpuModel
from nos.sim import nodes as sim_nodes
from nos.sim.runner import simulate_policy
from tests.sim.test_runs import _small_mixed


def _figures(result: Any) -> dict[str, Any]:
    return {k: v for k, v in result.to_json().items() if "wall" not in k.lower()}


def no_skipping(model: GpuModel, gpus: int) -> Nvml:
    """The same simulated GPUs through another factory: the runner then reconciles every time."""
    return sim_nodes.simulated_nvml(model, gpus)


@pytest.mark.parametrize(("policy", "seed"), [("nos", 3), ("nos", 5), ("greedy", 3)])
def test_skipped_reconciles_change_no_figure(monkeypatch: pytest.MonkeyPatch, policy: str, seed: int) -> None:
    calls: list[bool] = []
    real = MigAgent.reconcile_once

    async def counted(self: MigAgent) -> ReconcileResult:
        result = await real(self)
        calls.append(result.settled)
        return result

    monkeypatch.setattr(MigAgent, "reconcile_once", counted)
    scenario = _small_mixed(seed)
    every = simulate_policy(scenario, scenario.all_pods(), policy, no_skipping)
    reconciles, settled = len(calls), sum(calls)
    calls.clear()
    skipping = simulate_policy(scenario, scenario.all_pods(), policy, sim_nodes.simulated_nvml)
    assert _figures(skipping) == _figures(every)
    assert every.node_reconfigurations > 0
    assert settled > reconciles // 4  # many reconciles do nothing ...
    assert len(calls) < reconciles - settled // 2  # ... and most of those are skipped
