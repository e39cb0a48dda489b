"""Benchmarks: the exact optimum on cases where it is obvious, and a smoke run
of the quick benchmark asserting the planner's targets (nos >= greedy, nos >= 98% of optimum).

Runs under pytest, or alone: ``python tests/test_benchmarks.py``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.generate import PRODUCTS, pending_pod
from benchmarks.trace import profile_for_task

from nos.contract.annotations import COUNT_LABEL, PARTITIONING_LABELS, PRODUCT_LABEL, encode_status
from nos.mig.catalog import default_catalog
from nos.mig.layout import Instance as I
from nos.planner.checker import check_plan
from nos.planner.cluster import build_cluster

try:
    import highspy  # noqa: F401

    HAVE_HIGHS = True
except ImportError:
    HAVE_HIGHS = False


def _node(
    name: str, layouts: Mapping[int, Sequence[I]], cpu: str = "64", model: str = "A100-80GB", **labels: str
) -> dict[str, Any]:
    return {
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                PARTITIONING_LABELS[0]: "mig",
                PRODUCT_LABEL: PRODUCTS[model],
                COUNT_LABEL: str(len(layouts)),
                **labels,
            },
            "annotations": encode_status(layouts, "0"),
        },
        "status": {"allocatable": {"cpu": cpu, "memory": "512Gi", "pods": "110"}},
    }


def _pods(
    profile: str, n: int, prefix: str = "p", cpu: str = "1", priority: int = 0, **kw: Any
) -> list[dict[str, Any]]:
    return [pending_pod(f"{prefix}-{i}", profile, cpu, "1Gi", priority, **kw) for i in range(n)]


A100 = default_catalog().model("A100-80GB")


# ----------------------------------------------------------------------------- trace mapping


def test_trace_mapping() -> None:
    assert profile_for_task(A100, 100) == "1g.10gb"
    assert profile_for_task(A100, 140) == "1g.20gb"  # 0.98 slice, 11.2 GB
    assert profile_for_task(A100, 250) == "2g.20gb"
    assert profile_for_task(A100, 470) == "4g.40gb"  # 3.3 slices -> 4
    assert profile_for_task(A100, 1000) == "7g.80gb"


# ----------------------------------------------------------------------------- heterogeneous


def test_hetero_families_have_what_they_claim() -> None:
    from benchmarks.hetero import FAMILIES, HeteroSpec, generate_hetero

    for family in FAMILIES:
        spec = HeteroSpec(f"t-{family}", family, 30, 4, seed=1)
        nodes, pods = generate_hetero(spec)
        assert (nodes, pods) == generate_hetero(spec), "deterministic"
        state = build_cluster(nodes, pods)
        assert len(state.nodes) == 30 and len(state.candidates) == 120
        assert not state.problems
        models = {n.model.name for n in state.nodes.values() if n.model}
        counts = {len(n.gpus) for n in state.nodes.values()}
        assert len(models) >= 2 and len(counts) >= 2, family
        assert any(n.info.taints for n in state.nodes.values())
        assert any(p.scheduling_class.tolerations for p in state.candidates)
        assert any(p.scheduling_class.node_selector for p in state.candidates)
        assert any(len(p.mig_devices) > 1 for p in state.candidates)
        assert len({p.priority for p in state.candidates}) >= 3
        assert any(i.used for n in state.nodes.values() for g in n.gpus for i in g.instances)
        assert any(not i.used for n in state.nodes.values() for g in n.gpus for i in g.instances)
    _, pods = generate_hetero(HeteroSpec("t", "pools", 30, 4))
    assert any(p.scheduling_class.affinity for p in build_cluster([], pods).candidates)


def test_shares_compare_by_priority_first() -> None:
    from benchmarks.run import lex_counted, lex_ge

    # more pods in all, but one fewer of the highest priority: worse, and counted at that level only
    assert not lex_ge({100: 4, 0: 20}, {100: 5, 0: 1})
    assert lex_counted({100: 4, 0: 20}, {100: 5, 0: 1}) == (4, 5)
    assert lex_counted({100: 5, 0: 9}, {100: 5, 0: 10}) == (14, 15)
    assert lex_counted({100: 5, 0: 10}, {100: 5, 0: 10}) == (15, 15)


# ----------------------------------------------------------------------------- exact


def _exact(nodes: list[dict[str, Any]], pods: list[dict[str, Any]]) -> tuple[int, dict[int, int]]:
    from benchmarks.exact import solve

    state = build_cluster(nodes, pods)
    result = solve(state, 30)
    assert result.optimal
    assert result.plan is not None and check_plan(state, result.plan) == []
    return result.placed, result.placed_by_priority


def _skip_without_highs() -> bool:
    if not HAVE_HIGHS:
        try:
            import pytest
        except ImportError:
            return True
        pytest.skip("highspy is not installed")
    return False


def test_exact_obvious_cases() -> None:
    if _skip_without_highs():
        return
    whole = {0: [I(0, "7g.80gb")]}
    assert _exact([_node("n", whole)], _pods("1g.10gb", 9))[0] == 7
    used_at_0 = {0: [I(0, "1g.10gb", True)]}
    assert _exact([_node("n", used_at_0)], _pods("4g.40gb", 1))[0] == 0
    assert _exact([_node("n", used_at_0)], _pods("3g.40gb", 2))[0] == 1
    assert _exact([_node("n", whole, cpu="2")], _pods("1g.10gb", 5))[0] == 2
    assert _exact([_node("n", whole, zone="a")], _pods("1g.10gb", 2, node_selector={"zone": "b"}))[0] == 0
    placed, by_priority = _exact(
        [_node("n", whole)], _pods("1g.10gb", 7) + _pods("7g.80gb", 1, prefix="big", priority=100)
    )
    assert (placed, by_priority) == (1, {100: 1, 0: 0})
    # a pod with two devices: both on one node or none; two nodes with one free 4g each host none
    from benchmarks.hetero import hetero_pod

    pair = [hetero_pod("pair", ["4g.40gb", "4g.40gb"], "1", "1Gi", 0, "2024-01-01T00:00:00Z", {})]
    half = {0: [I(4, "3g.40gb", True)]}
    assert _exact([_node("a", half), _node("b", half)], pair)[0] == 0
    assert _exact([_node("a", {**half, 1: [I(4, "3g.40gb", True)]})], pair)[0] == 1


# ----------------------------------------------------------------------------- smoke


def test_quick_benchmark_meets_targets() -> None:
    """The planner's targets on the first tiny instances of the quick benchmark."""
    if _skip_without_highs():
        return
    from benchmarks.run import instances, run_instance

    for inst in instances(quick=True)[:3]:
        r = run_instance(inst, exact_limit=30, exact_max_nodes=100)
        assert r.nos_errors == [] and r.exact_errors == [], inst.name
        assert r.nos >= r.greedy_reachable, f"{inst.name}: nos {r.nos} < greedy {r.greedy_reachable}"
        assert r.exact_status == "optimal" and r.exact is not None
        assert r.nos >= 0.98 * r.exact, f"{inst.name}: nos {r.nos} < 98% of the optimum {r.exact}"


def test_hetero_smallest_instances_meet_targets() -> None:
    """The smallest instance of each heterogeneous family: nos >= 97% of the optimum (counted by
    priority), never below its own greedy passes or the original greedy, every device placed whole."""
    if _skip_without_highs():
        return
    from benchmarks.run import HETERO_SHARE, instances, lex_ge, run_instance

    for inst in instances(quick=True):
        if inst.kind != "hetero" or not inst.name.endswith("-0"):
            continue
        r = run_instance(inst, exact_limit=30, exact_max_nodes=100)
        assert r.nos_errors == [] and r.exact_errors == [], inst.name
        assert r.share is not None and r.share >= HETERO_SHARE, f"{inst.name}: {r.share}"
        assert lex_ge(r.nos_by_priority, r.passes_by_priority), inst.name
        assert lex_ge(r.nos_by_priority, r.greedy_by_priority), inst.name


def test_other_seeds_draw_other_clusters_of_every_family() -> None:
    """``run.py --seeds 4-7``: every family again with other seeds (the generalization check),
    sizes cycling through the same four; the default set is seeds 0-3."""
    from benchmarks.hetero import FAMILIES, generate_hetero, hetero_specs
    from benchmarks.run import _seeds, instances

    assert _seeds("4-7") == [4, 5, 6, 7] and _seeds("4,9") == [4, 9]
    assert hetero_specs() == hetero_specs(seeds=range(4))
    other = hetero_specs(seeds=[4, 5])
    assert {s.family for s in other} == set(FAMILIES) and {s.name for s in other}.isdisjoint(
        {s.name for s in hetero_specs()}
    )
    first = {s.family: s for s in hetero_specs() if s.seed == 0}
    for spec in other:
        if spec.seed == 4:
            assert spec.nodes == first[spec.family].nodes
            assert generate_hetero(spec) != generate_hetero(first[spec.family])
    assert [i.name for i in instances(False, [5])] == [s.name for s in hetero_specs(seeds=[5])]


def test_write_docs_replaces_the_generated_block(tmp_path: Path) -> None:
    from benchmarks.run import END_MARK, START_MARK, Result, write_docs

    doc = tmp_path / "b.md"
    doc.write_text(f"intro\n{START_MARK}\nold\n{END_MARK}\noutro\n")
    r = Result("x", "synthetic", 1, 8, 3, 3, 0.1, [], 2, 2, 0.1, 2, 2, "optimal", 3, 0.1)
    write_docs([r], doc)
    write_docs([r], doc)
    text = doc.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old" not in text
    assert text.count(START_MARK) == 1 and "| x | 1 | 8 | 3 | 0 (0) | 3 | 0 |" in text


if __name__ == "__main__":
    import tempfile

    failed = 0
    for name, fn in sorted(globals().items()):
        if name.startswith("test_") and callable(fn):
            try:
                if name == "test_write_docs_replaces_the_generated_block":
                    with tempfile.TemporaryDirectory() as d:
                        fn(Path(d))
                else:
                    fn()
                print(f"ok   {name}")
            except AssertionError as e:
                failed += 1
                print(f"FAIL {name}: {e}")
    sys.exit(1 if failed else 0)
