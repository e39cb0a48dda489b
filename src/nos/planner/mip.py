"""A small mixed-integer program handed to HiGHS (``highspy``), solved lexicographically.

Columns and rows are collected in Python and passed to HiGHS in batch calls. ``solve`` takes the
objectives in order of importance and optimises them one after the other: each level is maximised,
then held at its optimum (a row) while the next is maximised. This is exact where one weighted sum
would need weights so large (candidates ** priority levels) that HiGHS' tolerances blur the lower
levels. A warm start (a feasible solution, e.g. the greedy plan) is passed to every level, so the
result is never worse than it; when the time limit runs out, the best solution found so far is
returned and ``optimal`` is False.

The time limit is a wall-clock bound on ``solve``: HiGHS checks its own limit only between steps,
and one step of its root node (central rounding, measured at 1-2.5 s on a 50-node cluster model)
neither checks it nor calls the interrupt callbacks. So each HiGHS run goes on a thread of its own;
when it has not returned shortly after its limit, ``solve`` stops waiting and keeps the best
solution HiGHS reported so far (the improving-solution callback). The abandoned run ends by itself
at HiGHS' next limit check; the next run waits for it first (one HiGHS at a time), within its own
limit, and the interpreter waits for it at exit (a non-daemon thread).
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when a MIP is solved: a round that needs none does not load numpy
    import numpy as np


@dataclass
class MipResult:
    status: str
    """"optimal" (every level proven), "time limit", or another HiGHS model status."""
    values: np.ndarray[Any, Any]
    """Column values of the best solution found (zeros when none)."""
    found: bool
    """Whether ``values`` is a feasible solution."""
    levels_proven: int
    """How many objective levels were proven optimal before time ran out."""

    @property
    def optimal(self) -> bool:
        return self.status == "optimal"


WEIGHT_LIMIT = 1e7
"""Largest objective value one HiGHS solve is given: above it the gap tolerances blur single pods."""


SETTLE_MIN_S = 0.01
"""With ``settle``: the least time a run goes on after its first solution better than the start."""

GRACE_S = 0.05
"""How long past its time limit a HiGHS run is waited for before its best solution so far is used."""

_abandoned: list[threading.Thread] = []
"""HiGHS runs given up on that may still be finishing (see the module docstring)."""


def _wait_for_abandoned(seconds: float) -> bool:
    """Wait up to ``seconds`` for the abandoned HiGHS runs to end; whether they all have."""
    deadline = time.perf_counter() + seconds
    while _abandoned:
        _abandoned[0].join(max(0.0, deadline - time.perf_counter()))
        if _abandoned[0].is_alive():
            return False
        _abandoned.pop(0)
    return True


_first_highs = threading.Lock()
_banner_gone = False


def new_highs() -> Any:
    """A HiGHS instance that prints nothing. HiGHS writes its banner to the C stdout when a process
    builds its first instance, before any option can be set (HiGHS issue #2749), and stdout carries
    ``--json`` output; so the first instance is built with file descriptor 1 on /dev/null."""
    import highspy

    global _banner_gone
    with _first_highs:
        if _banner_gone:
            h = highspy.Highs()  # type: ignore[no-untyped-call]
        else:
            sys.stdout.flush()
            saved = os.dup(1)
            try:
                with open(os.devnull, "w") as null:
                    os.dup2(null.fileno(), 1)
                    h = highspy.Highs()  # type: ignore[no-untyped-call]
                    ctypes.CDLL(None).fflush(None)  # the banner may still sit in C's stdout buffer
            finally:
                os.dup2(saved, 1)
                os.close(saved)
            _banner_gone = True
    h.setOptionValue("output_flag", False)
    return h


def lexicographic(levels: Sequence[Mapping[int, float]], bounds: Sequence[float]) -> list[dict[int, float]]:
    """Objectives for ``Mip.solve`` from levels in order of importance, each with an upper bound on
    its value: consecutive levels are merged into one weighted objective (a unit of a level weighs
    more than the whole of the lower levels of its group) as long as the weighted maximum stays
    below ``WEIGHT_LIMIT``; fewer HiGHS runs, same optimum."""
    groups: list[dict[int, float]] = []
    group: list[tuple[Mapping[int, float], float]] = []

    def close() -> None:
        if not group:
            return
        merged: dict[int, float] = {}
        weight = 1.0
        for terms, bound in reversed(group):  # least important first: weight 1
            for i, c in terms.items():
                merged[i] = merged.get(i, 0.0) + c * weight
            weight *= bound + 1
        groups.append(merged)
        group.clear()

    for terms, bound in zip(levels, bounds, strict=True):
        total = 1.0
        for _, b in [*group, (terms, bound)]:
            total *= b + 1
        if group and total > WEIGHT_LIMIT:
            close()
        group.append((terms, bound))
    close()
    return groups


def capacity_row(terms: Sequence[tuple[int, int]], free: int) -> tuple[list[tuple[int, float]], float]:
    """``sum(amount * x) <= free`` for integer amounts, divided by their greatest common divisor
    (the capacity rounded down): the same integer solutions, without memory in bytes (1e11) next
    to pod counts, which HiGHS flags as badly scaled and solves slowly."""
    g = 0
    for _, amount in terms:
        g = math.gcd(g, amount)
    g = max(g, 1)
    return [(x, float(amount // g)) for x, amount in terms], float(max(0, free) // g)


class Mip:
    """Integer (or continuous) columns in [lower, upper] and rows lower <= sum <= upper."""

    def __init__(self) -> None:
        self.lower: list[float] = []
        self.upper: list[float] = []
        self.integer: list[int] = []
        self.row_lower: list[float] = []
        self.row_upper: list[float] = []
        self.starts: list[int] = []
        self.indices: list[int] = []
        self.values: list[float] = []

    @property
    def columns(self) -> int:
        return len(self.lower)

    @property
    def rows(self) -> int:
        return len(self.row_upper)

    def var(self, upper: float, integer: bool = True, lower: float = 0.0) -> int:
        self.lower.append(lower)
        self.upper.append(upper)
        if integer:
            self.integer.append(len(self.lower) - 1)
        return len(self.lower) - 1

    def row(
        self, terms: Mapping[int, float] | Sequence[tuple[int, float]], upper: float, lower: float = -math.inf
    ) -> None:
        items = terms.items() if isinstance(terms, Mapping) else terms
        self.starts.append(len(self.indices))
        for i, v in items:
            self.indices.append(i)
            self.values.append(v)
        self.row_lower.append(lower)
        self.row_upper.append(upper)

    def solve(
        self,
        objectives: Sequence[Mapping[int, float]],
        time_limit: float,
        start: Sequence[float] | None = None,
        settle: bool = False,
        fixed: Mapping[int, float] | None = None,
    ) -> MipResult:
        """Maximise each objective in turn (most important first) within ``time_limit`` seconds in
        all; ``start`` is a feasible warm start. With ``settle``, the first objective's run stops
        once it has a solution better than ``start`` and has spent as long again looking for a
        better one (``SETTLE_MIN_S``): a move of the local search needs an improvement, not a
        proof. ``fixed`` columns are held at the values given (``start`` must agree)."""
        import numpy as np

        deadline = time.perf_counter() + time_limit
        extra: list[tuple[dict[int, float], float]] = []
        best = np.array(start, dtype=np.float64) if start is not None else None
        status = "optimal"
        proven = 0
        for level, objective in enumerate(objectives):
            left = deadline - time.perf_counter()
            if left <= 0.01:
                status = "time limit"
                break
            name, values, value, found = self._run(
                objective,
                extra,
                deadline,
                best,
                presolve=level == 0,
                settle=settle and level == 0 and best is not None,
                fixed=fixed,
            )
            if found:
                best = values
            if name != "optimal":
                status = name if name == "time limit" or best is None else "time limit"
                break
            proven = level + 1
            # hold this level at its optimum (objectives are integral: a half unit of slack)
            extra.append((dict(objective), value - 0.5))
        if best is None:
            return MipResult(status, np.zeros(self.columns), False, proven)
        return MipResult(status, best, True, proven)

    def relaxation(
        self,
        objective: Mapping[int, float],
        time_limit: float,
        at_least: Sequence[tuple[Mapping[int, float], float]] = (),
    ) -> tuple[np.ndarray[Any, Any], float] | None:
        """Column values and value of an optimum of the linear relaxation with ``objective``
        (maximised), each of ``at_least``'s sums held at least at its value; None when not solved
        (or infeasible) within ``time_limit`` seconds."""
        extra = [(dict(terms), value) for terms, value in at_least]
        name, values, value, found = self._run(objective, extra, time.perf_counter() + time_limit, None, integral=False)
        return (values, value) if name == "optimal" and found else None

    def _run(
        self,
        objective: Mapping[int, float],
        extra: Sequence[tuple[dict[int, float], float]],
        deadline: float,
        start: np.ndarray[Any, Any] | None,
        presolve: bool = True,
        settle: bool = False,
        fixed: Mapping[int, float] | None = None,
        integral: bool = True,
    ) -> tuple[str, np.ndarray[Any, Any], float, bool]:
        """One HiGHS run, returned by ``deadline`` (a ``time.perf_counter`` value) + ``GRACE_S``."""
        import highspy
        import numpy as np

        n = self.columns
        if not _wait_for_abandoned(deadline - time.perf_counter()) or deadline - time.perf_counter() <= 0.01:
            return "time limit", np.zeros(n), 0.0, False
        h = new_highs()
        h.setOptionValue("time_limit", float(max(0.01, deadline - time.perf_counter())))
        h.setOptionValue("mip_rel_gap", 0.0)
        h.setOptionValue("mip_abs_gap", 0.5)
        h.setOptionValue("threads", 1)
        if not presolve:
            # measured: on the later levels (a held objective row over every column) presolve and
            # the root work after it overran the time limit threefold; without it the limit holds
            h.setOptionValue("presolve", "off")
        cost = np.zeros(n, dtype=np.float64)
        for i, c in objective.items():
            cost[i] = c
        lower = np.array(self.lower, dtype=np.float64)
        upper = np.array(self.upper, dtype=np.float64)
        if fixed:
            at = np.fromiter(fixed.keys(), dtype=np.int64, count=len(fixed))
            lower[at] = upper[at] = np.fromiter(fixed.values(), dtype=np.float64, count=len(fixed))
        h.addCols(
            n,
            cost,
            lower,
            upper,
            0,
            np.zeros(n + 1, dtype=np.int32),
            np.zeros(0, dtype=np.int32),
            np.zeros(0, dtype=np.float64),
        )
        if self.integer and integral:
            h.changeColsIntegrality(
                len(self.integer),
                np.array(self.integer, dtype=np.int32),
                np.full(len(self.integer), highspy.HighsVarType.kInteger.value, dtype=np.uint8),
            )
        row_lower, row_upper = list(self.row_lower), list(self.row_upper)
        starts, indices, values = list(self.starts), list(self.indices), list(self.values)
        for terms, at_least in extra:
            starts.append(len(indices))
            indices.extend(terms)
            values.extend(terms.values())
            row_lower.append(at_least)
            row_upper.append(np.inf)
        if row_upper:
            h.addRows(
                len(row_upper),
                np.array(row_lower, dtype=np.float64),
                np.array(row_upper, dtype=np.float64),
                len(indices),
                np.array(starts, dtype=np.int32),
                np.array(indices, dtype=np.int32),
                np.array(values, dtype=np.float64),
            )
        h.changeObjectiveSense(highspy.ObjSense.kMaximize)
        if start is not None:
            sol = highspy.HighsSolution()
            sol.col_value = list(start)
            h.setSolution(sol)
        improving: list[np.ndarray[Any, Any]] = []

        began = time.perf_counter()
        to_beat = float(sum(c * start[i] for i, c in objective.items())) + 0.5 if start is not None else math.inf
        better_at: list[float] = []

        def improved(event: Any) -> None:  # on the solver's thread
            improving[:] = [np.array(event.data_out.mip_solution, dtype=np.float64)]
            # the solution's own value: the event's objective value was seen above the solution's
            # (a run with held columns reported 737842 for a solution worth its start's 728630)
            if not better_at and len(improving[0]) == n and float(cost @ improving[0]) > to_beat:
                better_at.append(time.perf_counter())

        def settled(event: Any) -> None:  # on the solver's thread
            if better_at and time.perf_counter() - better_at[0] > max(SETTLE_MIN_S, better_at[0] - began):
                event.interrupt()

        h.cbMipImprovingSolution.subscribe(improved)
        if settle:
            h.cbMipInterrupt.subscribe(settled)
        solver = threading.Thread(target=h.run, name="highs")
        solver.start()
        solver.join(max(0.0, deadline - time.perf_counter()) + GRACE_S)
        if solver.is_alive():  # stuck in a step that does not check the limit: keep what it found
            _abandoned.append(solver)
            if improving and len(improving[0]) == n:
                result = improving[0]
                return "time limit", result, float(sum(c * result[i] for i, c in objective.items())), True
            return "time limit", np.zeros(n), 0.0, False
        status = h.getModelStatus()
        names = {highspy.HighsModelStatus.kOptimal: "optimal", highspy.HighsModelStatus.kTimeLimit: "time limit"}
        name = names.get(status, str(status).rsplit(".", 1)[-1])
        info = h.getInfo()
        found = n > 0 and info.primal_solution_status == 2  # kSolutionStatusFeasible
        result = np.array(h.getSolution().col_value, dtype=np.float64) if found else np.zeros(n)
        if n == 0:
            found = name == "optimal"
        value = float(sum(c * result[i] for i, c in objective.items()))
        return name, result, value, found
