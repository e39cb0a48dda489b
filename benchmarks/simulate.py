"""Benchmark of ``nos simulate``: its speed, and nos against the baselines at three loads.

    python benchmarks/simulate.py speed [--repeat 3]   # wall times, best of --repeat, against the targets
    python benchmarks/simulate.py loads                # light, busy, overloaded replays of the shipped trace
    python benchmarks/simulate.py spread [--seeds 1-8] [--shares X] [--mix M]  # the same on several samples

Every run is the installed ``nos simulate`` command in a subprocess, as a user runs it, with
``--json``; wall time is measured around the whole command. Targets (docs/simulate.md): the default
scenario < 60 s, 600 sampled trace tasks <= 30 s, the full shipped trace (7,002 tasks) <= 600 s, each
for every default policy. ``loads`` prints, per load, each policy's mean/p95 pending time, never
scheduled pods and allocation, and nos' distance to the ideal; it checks nos' mean pending time
against the greedy's and best-static's and its never-scheduled count against the ideal's, and exits
1 when one does not hold (the numbers are printed either way); ``hindsight-static`` runs beside
them for comparison, not as a target. ``spread`` replays each load on
several samples of the trace (``--seed``) and prints, per load, each policy's mean pending time over
the samples and how often nos is below best-static and the greedy: one sample's order of two
policies is within what any timing change moves (docs/simulate.md, "How far one replay can be
trusted").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from nos.sim.report import left_over

NOS = str(Path(sys.executable).parent / "nos")
SPEED = {
    "default scenario": ([], 60.0),
    "600 sampled trace tasks": (["--trace"], 30.0),
    "full shipped trace (7,002 tasks)": (["--trace", "--sample", "all"], 600.0),
}
LOADS = ("light", "busy", "overloaded")
LOAD_POLICIES = "ideal,best-static,hindsight-static,whole-gpu,greedy,nos"
"""The default policies and ``hindsight-static`` (best-static chosen for the replayed sample itself)."""


def run(args: list[str]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    out = subprocess.run([NOS, "simulate", *args, "--json"], check=True, capture_output=True, text=True)
    return time.perf_counter() - started, json.loads(out.stdout)


def speed(repeat: int, only: str | None) -> int:
    failed = 0
    for name, (args, target) in SPEED.items():
        if only and only not in name:
            continue
        times = []
        for _ in range(repeat):
            wall, doc = run(args)
            times.append(wall)
        best = min(times)
        per_policy = ", ".join(f"{p} {s:.1f}s" for p, s in doc["wallSeconds"].items())
        ok = best <= target
        failed += not ok
        print(
            f"{name}: best of {repeat} {best:.1f}s (all: {', '.join(f'{t:.1f}' for t in times)}; target {target:g}s)"
            f" {'ok' if ok else 'MISSED'} [{per_policy}]"
        )
    return 1 if failed else 0


def _h(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.2f} h"


def _never(result: dict[str, Any]) -> str:
    """The never-scheduled count, and which profiles it is made of."""
    n = result["neverScheduled"]
    return f"{n} ({left_over(result['byProfile'])})" if n else "0"


def loads(sample: str) -> int:
    failed = 0
    print("| load | offered | policy | mean pending | p95 pending | never scheduled | allocation | vs ideal |")
    print("|---|---|---|---|---|---|---|---|")
    for load in LOADS:
        _, doc = run(["--trace", "--sample", sample, "--load", load, "--policies", LOAD_POLICIES])
        pol = doc["policies"]
        nodes = doc["scenario"]["nodes"][0]["count"]
        for name, r in pol.items():
            v = r.get("vsIdeal") or {}
            ratios = ", ".join(str(v.get(k)) for k in ("meanPendingRatio", "p95PendingRatio", "allocationRatio"))
            print(
                f"| {load} ({nodes} nodes) | {doc['scenario']['offeredLoad']} | {name} | {_h(r['meanPendingSeconds'])}"
                f" | {_h(r['p95PendingSeconds'])} | {_never(r)} | {r['allocationPercent']:.1f}% | {ratios} |"
            )
        nos = pol["nos"]
        checks = {
            "mean <= greedy": nos["meanPendingSeconds"] <= pol["greedy"]["meanPendingSeconds"],
            "mean <= best-static": nos["meanPendingSeconds"] <= pol["best-static"]["meanPendingSeconds"],
            "never scheduled == ideal": nos["neverScheduled"] == pol["ideal"]["neverScheduled"],
        }
        missed = [k for k, ok in checks.items() if not ok]
        failed += bool(missed)
        hindsight = nos["meanPendingSeconds"] <= pol["hindsight-static"]["meanPendingSeconds"]
        print(
            f"<!-- {load}: {'all targets met' if not missed else 'MISSED: ' + ', '.join(missed)}"
            f" (not a target: nos {'<=' if hindsight else '>'} hindsight-static) -->"
        )
    return 1 if failed else 0


def _seeds(text: str) -> list[int]:
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


def spread(seeds: list[int], sample: str, shares: str | None, mix: str | None) -> int:
    policies = ("ideal", "hindsight-static", "best-static", "greedy", "nos")
    extra = ["--shares", shares] if shares is not None else []
    extra += ["--mix", mix] if mix is not None else []
    options = f"; nos {' '.join(extra)}" if extra else ""
    print(f"seeds {seeds[0]}-{seeds[-1]} ({len(seeds)} samples of {sample} tasks{options}); mean pending in minutes")
    head = " | nos < best-static | nos < greedy | nos < hindsight-static | nos / best-static |"
    print("| load | " + " | ".join(policies) + head)
    print("|---|" + "---|" * (len(policies) + 4))
    for load in LOADS:
        means: dict[str, list[float]] = {p: [] for p in policies}
        for seed in seeds:
            args = ["--trace", "--sample", sample, "--load", load, "--seed", str(seed), *extra]
            _, doc = run([*args, "--policies", ",".join(policies)])
            for p in policies:
                means[p].append(doc["policies"][p]["meanPendingSeconds"] / 60)
        nos = means["nos"]
        ratios = sorted(n / s for n, s in zip(nos, means["best-static"], strict=True))
        cells = " | ".join(f"{sum(v) / len(v):.1f}" for v in means.values())
        below = " | ".join(
            f"{sum(n < o for n, o in zip(nos, means[p], strict=True))}/{len(seeds)}"
            for p in ("best-static", "greedy", "hindsight-static")
        )
        median = ratios[len(ratios) // 2]
        print(f"| {load} | {cells} | {below} | {ratios[0]:.2f}-{ratios[-1]:.2f} (median {median:.2f}) |")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--repeat", type=int, default=3)
    s.add_argument("--only", default=None, help="run the cases whose name contains this")
    ld = sub.add_parser("loads")
    ld.add_argument("--sample", default="600")
    sp = sub.add_parser("spread")
    sp.add_argument("--seeds", default="1-8", help="samples of the trace, FIRST-LAST")
    sp.add_argument("--sample", default="600")
    sp.add_argument("--shares", default=None, help="nos' --shares (default: nos simulate's)")
    sp.add_argument("--mix", default=None, help="nos' --mix, e.g. known (default: nos simulate's)")
    args = parser.parse_args()
    if args.what == "speed":
        return speed(args.repeat, args.only)
    if args.what == "loads":
        return loads(args.sample)
    return spread(_seeds(args.seeds), args.sample, args.shares, args.mix)


if __name__ == "__main__":
    sys.exit(main())
