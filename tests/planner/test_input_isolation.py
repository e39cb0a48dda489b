"""Issue 10, planner inputs: what a bad node or GPU says is frozen and reported, never planned over."""

from __future__ import annotations

from nos.contract.annotations import encode_status
from nos.mig.layout import Instance
from nos.planner.cluster import build_cluster
from tests.planner.test_cluster_state import node


def test_gpu_the_agent_cannot_read_is_frozen() -> None:
    status = {
        **encode_status({1: [Instance(0, "7g.80gb")]}, "p", {0: "NVML_ERROR_GPU_IS_LOST: GPU 0 is lost"}),
    }
    state = build_cluster([node(annotations=status)], [])
    gpus = {g.index: g for g in state.nodes["n1"].gpus}
    assert gpus[0].frozen is not None and "GPU_IS_LOST" in gpus[0].frozen
    assert gpus[1].frozen is None and gpus[1].instances == (Instance(0, "7g.80gb"),)
    assert any("GPU 0" in p and "cannot read" in p for p in state.problems)
