"""Benchmark runner: nos' planner against the original greedy and the exact optimum.

    python benchmarks/run.py            # every instance; rewrites the results in docs/benchmarks.md
    python benchmarks/run.py --quick    # small instances only (< 2 min), docs untouched

For each instance: nos' ``plan`` (timed end to end from the Node/Pod dicts), the original greedy
(``nos.sim.greedy``, both lacking modes; pods counted only on GPUs whose planned layout is
reachable), and the MIP optimum (``benchmarks.exact``) where it solves in the time limit. Every plan
is checked with ``check_plan``: a failing check of nos' plan (or of the optimum's) is a benchmark
failure (exit status 1). Targets: nos >= 98% of every proven optimum of the uniform instances, >= 97%
of each heterogeneous one and >= 99% summed over each heterogeneous family (counted by priority),
nos >= the greedy, and the 1000-node instances planned in < 10 s from the objects (``nos plan`` end
to end on files: ``benchmarks/snapshots.py``); instances missing one are saved as snapshots under
``benchmarks/cases/`` (``nos plan benchmarks/cases/NAME.yaml`` reproduces them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml

from benchmarks.generate import Spec, generate, synthetic_specs
from benchmarks.hetero import LARGE, HeteroSpec, generate_hetero, hetero_specs
from benchmarks.trace import TraceSpec, generate_trace, trace_specs
from nos.planner.checker import check_plan
from nos.planner.cluster import ClusterState, build_cluster
from nos.planner.plan import Plan
from nos.planner.planner import plan_state
from nos.sim.greedy import plan_greedy_state, reachable_gpus

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS = REPO_ROOT / "docs" / "benchmarks.md"
CASES = REPO_ROOT / "benchmarks" / "cases"
START_MARK = "<!-- benchmark-results:start -->"
END_MARK = "<!-- benchmark-results:end -->"
OPTIMUM_SHARE = 0.98
HETERO_SHARE = 0.97
FAMILY_SHARE = 0.99
TIME_TARGET_S = 10.0
TIME_TARGET_NODES = 1000

Objects = tuple[list[dict[str, Any]], list[dict[str, Any]]]


@dataclass
class Instance:
    name: str
    kind: str
    make: Callable[[], Objects]
    nodes: int
    family: str = ""


ByPriority = dict[int, int]


def by_priority(state: ClusterState, plan: Plan, reachable_only: bool = False) -> ByPriority:
    """Pods placed per priority (highest first); with ``reachable_only`` only those whose GPUs'
    planned layouts are reachable (for the original greedy, whose layouts may not be)."""
    priority = {p.key: p.priority for p in state.candidates}
    ok = reachable_gpus(state, plan) if reachable_only else None
    out = dict.fromkeys(sorted({p.priority for p in state.candidates}, reverse=True), 0)
    for p in plan.placed:
        if ok is None or all((p.node, d.gpu) in ok for d in p.devices):
            out[priority[p.pod]] += 1
    return out


def _vector(counts: ByPriority) -> tuple[int, ...]:
    return tuple(n for _, n in sorted(counts.items(), reverse=True))


def lex_ge(a: ByPriority, b: ByPriority) -> bool:
    """Whether ``a`` places at least as well as ``b``: more pods at the highest priority where
    they differ (a higher priority is never traded for more pods of lower ones)."""
    levels = sorted(set(a) | set(b), reverse=True)
    return tuple(a.get(p, 0) for p in levels) >= tuple(b.get(p, 0) for p in levels)


def lex_counted(nos: ByPriority, opt: ByPriority) -> tuple[int, int]:
    """(nos, optimum) pods counted for the share: every level from the highest priority down to
    the first where the two differ (lower levels only count while the higher ones are equal)."""
    got = want = 0
    for prio in sorted(set(nos) | set(opt), reverse=True):
        got, want = got + nos.get(prio, 0), want + opt.get(prio, 0)
        if nos.get(prio, 0) != opt.get(prio, 0):
            break
    return got, want


@dataclass
class Result:
    name: str
    kind: str
    nodes: int
    gpus: int
    candidates: int
    nos: int
    nos_s: float
    nos_errors: list[str]
    greedy_planned: int
    greedy_reachable: int
    greedy_s: float
    greedy_cum_planned: int
    greedy_cum_reachable: int
    exact_status: str
    exact: int | None
    exact_s: float | None
    exact_errors: list[str] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)
    family: str = ""
    multi: int = 0
    """Candidates with several MIG devices."""
    nos_multi: int = 0
    """Of those, placed by nos."""
    nos_by_priority: ByPriority = field(default_factory=dict)
    exact_by_priority: ByPriority = field(default_factory=dict)
    greedy_by_priority: ByPriority = field(default_factory=dict)
    greedy_cum_by_priority: ByPriority = field(default_factory=dict)
    passes: int = 0
    """Pods placed by nos' greedy passes alone (the planner before the optimizing stage)."""
    passes_by_priority: ByPriority = field(default_factory=dict)
    proven: bool = False
    """nos' plan says it is proven optimal."""

    @property
    def counted(self) -> tuple[int, int] | None:
        """(nos, optimum) counted lexicographically by priority (``lex_counted``)."""
        if self.exact_status != "optimal" or not self.exact:
            return None
        if not self.exact_by_priority:
            return self.nos, self.exact
        return lex_counted(self.nos_by_priority, self.exact_by_priority)

    @property
    def share(self) -> float | None:
        counted = self.counted
        if counted is None or not counted[1]:
            return None
        return counted[0] / counted[1]


def instances(quick: bool, seeds: Sequence[int] | None = None) -> list[Instance]:
    """The benchmark instances; with ``seeds``, only the heterogeneous families drawn with those seeds."""
    if seeds is not None:
        return [Instance(h.name, "hetero", _hetero(h), h.nodes, h.family) for h in hetero_specs(seeds=seeds)]
    out = [Instance(s.name, "synthetic", _synthetic(s), s.nodes) for s in synthetic_specs(quick)]
    out += [Instance(t.name, "trace", _trace(t), t.nodes) for t in trace_specs(quick)]
    out += [Instance(h.name, "hetero", _hetero(h), h.nodes, h.family) for h in hetero_specs(quick)]
    if not quick:
        out.append(Instance(LARGE.name, "hetero", _hetero(LARGE), LARGE.nodes))
    return out


def _hetero(spec: HeteroSpec) -> Callable[[], Objects]:
    return lambda: generate_hetero(spec)


def _synthetic(spec: Spec) -> Callable[[], Objects]:
    return lambda: generate(spec)


def _trace(spec: TraceSpec) -> Callable[[], Objects]:
    return lambda: generate_trace(spec)


def _plan_nos() -> Callable[..., Any]:
    from nos.planner.planner import plan  # the lead's module; imported late so the rest works without it

    return plan


def run_instance(inst: Instance, exact_limit: float, exact_max_nodes: int) -> Result:
    nodes, pods = inst.make()
    state = build_cluster(nodes, pods)
    plan = _plan_nos()
    started = time.perf_counter()
    nos_plan = plan(nodes, pods)
    nos_s = time.perf_counter() - started
    passes = plan_state(state, optimize=False, budget=float("inf"))  # the planner before this stage
    nos_errors = check_plan(state, nos_plan)
    started = time.perf_counter()
    greedy = plan_greedy_state(build_cluster(nodes, pods))
    greedy_s = time.perf_counter() - started
    greedy_cum = plan_greedy_state(state, lacking="cumulative")
    exact_status, exact, exact_s, exact_errors = "skipped (too large)", None, None, []
    exact_by: ByPriority = {}
    if inst.nodes <= exact_max_nodes:
        try:
            from benchmarks.exact import solve
        except ImportError:
            exact_status = "skipped (no highspy)"
        else:
            solved = solve(state, exact_limit)
            exact_status, exact, exact_s = solved.status, solved.placed, solved.seconds
            exact_by = solved.placed_by_priority
            if solved.plan is not None:
                exact_errors = check_plan(state, solved.plan)
    result = Result(
        name=inst.name,
        kind=inst.kind,
        nodes=len(state.nodes),
        gpus=sum(len(n.gpus) for n in state.nodes.values()),
        candidates=len(state.candidates),
        nos=len(nos_plan.placed),
        nos_s=nos_s,
        nos_errors=nos_errors,
        greedy_planned=len(greedy.placed),
        greedy_reachable=sum(by_priority(state, greedy, True).values()),
        greedy_s=greedy_s,
        greedy_cum_planned=len(greedy_cum.placed),
        greedy_cum_reachable=sum(by_priority(state, greedy_cum, True).values()),
        exact_status=exact_status,
        exact=exact,
        exact_s=exact_s,
        exact_errors=exact_errors,
        family=inst.family,
        multi=sum(1 for p in state.candidates if len(p.mig_devices) > 1),
        nos_multi=sum(1 for p in nos_plan.placed if p.extra),
        nos_by_priority=by_priority(state, nos_plan),
        exact_by_priority=exact_by,
        greedy_by_priority=by_priority(state, greedy, True),
        greedy_cum_by_priority=by_priority(state, greedy_cum, True),
        passes=len(passes.placed),
        passes_by_priority=by_priority(state, passes),
        proven=bool(nos_plan.search and nos_plan.search.optimal),
    )
    result.misses = misses(result)
    return result


def misses(r: Result) -> list[str]:
    """The targets this instance misses (empty when it meets all)."""
    out = []
    if r.nos_errors:
        out.append(f"nos' plan fails the check ({len(r.nos_errors)} error(s), first: {r.nos_errors[0]})")
    if r.exact_errors:
        out.append(f"the optimum's plan fails the check (model bug): {r.exact_errors[0]}")
    target = HETERO_SHARE if r.kind == "hetero" else OPTIMUM_SHARE
    if r.share is not None and r.counted is not None and r.share < target:
        got, want = r.counted
        out.append(f"nos places {got} < {target:.0%} of the optimum's {want}, counted by priority ({r.share:.1%})")
    for name, other in (
        ("greedy", r.greedy_by_priority),
        ("greedy's cumulative variant", r.greedy_cum_by_priority),
        ("greedy passes alone", r.passes_by_priority),
    ):
        if other and not lex_ge(r.nos_by_priority, other):
            out.append(f"nos places {_vector(r.nos_by_priority)} < the {name}'s {_vector(other)} (by priority)")
    if r.nodes >= TIME_TARGET_NODES and r.nos_s >= TIME_TARGET_S:
        out.append(f"nos plans in {r.nos_s:.1f} s >= {TIME_TARGET_S:.0f} s")
    return out


def save_case(inst: Instance) -> Path:
    """The instance as a snapshot ``nos plan`` reads (a ``kind: List`` of Nodes and Pods)."""
    nodes, pods = inst.make()
    CASES.mkdir(parents=True, exist_ok=True)
    path = CASES / f"{inst.name}.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": nodes + pods}, sort_keys=False))
    return path


def _fmt_s(s: float | None) -> str:
    return "-" if s is None else f"{s:.2f}"


def table(results: Sequence[Result]) -> str:
    """Markdown table of the results."""
    head = (
        "| instance | nodes | GPUs | candidates | multi-device (placed) | nos | nos passes alone | "
        "greedy reachable (planned) | greedy cumulative reachable (planned) | optimum | nos / optimum | "
        "nos proven | nos s | greedy s | optimum s |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|\n"
    )
    rows = []
    for r in results:
        opt = str(r.exact) if r.exact_status == "optimal" else (f"({r.exact}, {r.exact_status})" if r.exact else "-")
        share = "-" if r.share is None else f"{r.share:.1%}"
        rows.append(
            f"| {r.name} | {r.nodes} | {r.gpus} | {r.candidates} | {r.multi} ({r.nos_multi}) | {r.nos} | "
            f"{r.passes} | {r.greedy_reachable} ({r.greedy_planned}) | {r.greedy_cum_reachable} "
            f"({r.greedy_cum_planned}) | {opt} | {share} | {'yes' if r.proven else 'no'} | "
            f"{_fmt_s(r.nos_s)} | {_fmt_s(r.greedy_s)} | {_fmt_s(r.exact_s)} |"
        )
    return head + "\n".join(rows) + "\n"


def family_shares(results: Sequence[Result]) -> dict[str, tuple[int, int, int, float]]:
    """Per heterogeneous family: (instances solved, nos counted, optimum counted, lowest instance share)."""
    out: dict[str, tuple[int, int, int, float]] = {}
    for r in results:
        if not r.family or r.counted is None or r.share is None:
            continue
        n, got, want, low = out.get(r.family, (0, 0, 0, 1.0))
        out[r.family] = (n + 1, got + r.counted[0], want + r.counted[1], min(low, r.share))
    return out


def family_table(results: Sequence[Result]) -> str:
    rows = [
        f"| {fam} | {n} | {got} | {want} | {got / want:.1%} | {low:.1%} |"
        for fam, (n, got, want, low) in family_shares(results).items()
        if want
    ]
    if not rows:
        return ""
    return (
        "| family | instances solved | nos (counted) | optimum (counted) | nos / optimum | lowest instance |\n"
        "|---|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n"
    )


def family_misses(results: Sequence[Result]) -> list[str]:
    return [
        f"family {fam}: nos {got} < {FAMILY_SHARE:.0%} of the optimum {want} ({got / want:.1%})"
        for fam, (_, got, want, _) in family_shares(results).items()
        if want and got < FAMILY_SHARE * want
    ]


def write_docs(results: Sequence[Result], path: Path = DOCS) -> None:
    """Replace the generated block between the markers of ``docs/benchmarks.md``."""
    text = path.read_text() if path.exists() else f"# Planner benchmarks\n\n{START_MARK}\n{END_MARK}\n"
    if START_MARK not in text or END_MARK not in text:
        text += f"\n{START_MARK}\n{END_MARK}\n"
    head, rest = text.split(START_MARK, 1)
    _, tail = rest.split(END_MARK, 1)
    missed = [f"- {r.name}: {m}" for r in results for m in r.misses] + [f"- {m}" for m in family_misses(results)]
    families = family_table(results)
    block = (
        f"{START_MARK}\n<!-- generated by `python benchmarks/run.py`; do not edit by hand -->\n\n"
        + table(results)
        + (f"\nHeterogeneous families, summed:\n\n{families}" if families else "")
        + "\nTargets: "
        + ("all met.\n" if not missed else "missed on\n\n" + "\n".join(missed) + "\n")
        + END_MARK
    )
    path.write_text(head + block + tail)


def run(
    quick: bool = False,
    only: Sequence[str] = (),
    exact_limit: float = 60.0,
    exact_max_nodes: int = 100,
    echo: Callable[[str], None] = print,
    seeds: Sequence[int] | None = None,
) -> list[Result]:
    results = []
    for inst in instances(quick, seeds):
        if only and inst.name not in only:
            continue
        r = run_instance(inst, exact_limit, exact_max_nodes)
        share = "-" if r.share is None else f"{r.share:.1%}"
        echo(
            f"{r.name:<20} nodes {r.nodes:>5} GPUs {r.gpus:>5} cand {r.candidates:>5} | nos {r.nos:>5} "
            f"({r.nos_s:.2f}s) | greedy {r.greedy_reachable:>5}/{r.greedy_planned:<5} "
            f"cum {r.greedy_cum_reachable:>5}/{r.greedy_cum_planned:<5} ({r.greedy_s:.2f}s) | "
            f"opt {r.exact if r.exact is not None else '-'} [{r.exact_status}] ({_fmt_s(r.exact_s)}s) | {share}"
        )
        for m in r.misses:
            echo(f"    MISSED: {m}")
        results.append(r)
    return results


def _seeds(text: str) -> list[int]:
    """``4-7`` or ``4,9``: the seeds named."""
    out: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        out += range(int(low), int(high or low) + 1)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small instances only; docs are not rewritten")
    parser.add_argument("--only", action="append", default=[], help="run only this instance (repeatable)")
    parser.add_argument("--exact-limit", type=float, default=60.0, help="MIP time limit per instance, seconds")
    parser.add_argument("--exact-max-nodes", type=int, default=100, help="skip the MIP above this many nodes")
    parser.add_argument("--json", type=Path, help="results JSON (default benchmarks/results[-quick].json)")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.add_argument("--save-cases", action="store_true", help="save instances missing a target as snapshots")
    parser.add_argument(
        "--seeds",
        type=_seeds,
        help="only the heterogeneous families drawn with these seeds, e.g. 4-7 (generalization check; docs untouched)",
    )
    args = parser.parse_args(argv)
    results = run(args.quick, args.only, args.exact_limit, args.exact_max_nodes, seeds=args.seeds)
    print()
    print(table(results))
    print(family_table(results))
    for m in family_misses(results):
        print(f"MISSED: {m}")
    name = "results-seeds.json" if args.seeds is not None else "results-quick.json" if args.quick else "results.json"
    out = args.json or REPO_ROOT / "benchmarks" / name
    out.write_text(json.dumps([{**asdict(r), "share": r.share} for r in results], indent=1) + "\n")
    if not args.quick and not args.no_docs and not args.only and args.seeds is None:
        write_docs(results)
    if args.save_cases:
        by_name = {i.name: i for i in instances(args.quick, args.seeds)}
        for r in results:
            if r.misses:
                print(f"saved {save_case(by_name[r.name])}")
    broken = [r for r in results if r.nos_errors or r.exact_errors]
    missed = [r for r in results if r.misses]
    print(f"{len(results)} instance(s); {len(missed)} missing a target; {len(broken)} with a failing check")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
