"""One partitioner cycle over the ``Kube`` port: observe, batch, wait for agents, plan, write.

The same code runs in the cluster (``nos partitioner``, lightkube adapter, wall clock) and in
``nos simulate`` (in-memory API, virtual clock). It holds no state the cluster does not also hold
except the open batch, the last plan's time and the events already sent, so a restarted
partitioner simply resumes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nos.config import PartitionerConfig
from nos.contract.annotations import SPEC_PLAN, STATUS_PLAN, merge_patch
from nos.kube.port import Conflict, Event, Kube, KubeError, Obj, ObjectRef, annotations_patch
from nos.mig.catalog import Catalog, default_catalog
from nos.mig.packing import Geometry
from nos.partitioner import fairness
from nos.partitioner.batch import Batcher
from nos.planner.checker import isolate_failures
from nos.planner.cluster import ClusterState, build_cluster
from nos.planner.incremental import BuildCache
from nos.planner.plan import Plan
from nos.planner.planner import plan_state
from nos.planner.shares import unknown_profiles
from nos.runtime.events import EventRecorder

log = logging.getLogger(__name__)

PlanFunction = Callable[[ClusterState, str], Plan]
"""(cluster state, plan id) -> plan; nos' planner by default, another policy in the simulator."""

Offload = Callable[..., Awaitable[Any]]
"""``await offload(fn, *args)`` runs blocking ``fn(*args)`` elsewhere (``asyncio.to_thread`` in the
cluster, so a long plan never blocks the event loop that renews the Lease and answers probes)."""

Fence = Callable[[], bool]
"""True while this replica may write (it holds the Lease); asked right before every write."""


WAKE_MARGIN_S = 1e-3
"""A requested wake-up lands this much after the deadline it waits for, so the deadline has passed."""


class FencedOut(Exception):
    """The Lease is no longer held: this replica must not write anything more."""


async def inline(fn: Callable[..., Any], *args: Any) -> Any:
    """The default ``Offload``: run on the caller's loop (the simulator's virtual time needs that)."""
    return fn(*args)


ObjectSource = Callable[[], Awaitable[tuple[Sequence[Obj], Sequence[Obj]]]]
"""() -> (nodes, pods) to plan from; the default lists through the ``Kube`` port, ``nos partitioner``
reads its watch caches instead. A source that hands out the same tuple again promises the same
snapshot: the build does not walk it again (``nos.planner.incremental``)."""


@dataclass
class CycleResult:
    """What one cycle did (for logs, metrics and the simulator)."""

    plan: Plan | None = None
    waiting_for: list[str] = field(default_factory=list)
    """Nodes that have not reported the previous plan yet."""
    written: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    fenced: bool = False
    """The Lease was lost while writing: the rest of the plan was not written."""
    frozen_nodes: int = 0
    frozen_gpus: int = 0
    """Managed nodes (and GPUs of the other nodes) left as they are in this cycle's input or plan."""
    candidates: int = 0
    """Pending pods in the open batch after this cycle."""
    requeue_after: float | None = None
    """Seconds until the partitioner wants to run again even if nothing changes: the open batch
    closes, or the wait for agents' reports times out (None: only on a change)."""


def pending_reports(state: ClusterState) -> list[str]:
    """Managed nodes whose agent has not yet reported the plan written on them."""
    out = []
    for name, ns in state.nodes.items():
        spec_plan = ns.info.annotations.get(SPEC_PLAN)
        if spec_plan is not None and ns.info.annotations.get(STATUS_PLAN) != spec_plan:
            out.append(name)
    return out


class Partitioner:
    def __init__(
        self,
        kube: Kube,
        clock: Callable[[], float],
        config: PartitionerConfig | None = None,
        catalog: Catalog | None = None,
        geometries: Mapping[str, Sequence[Geometry]] | None = None,
        planner: PlanFunction | None = None,
        source: ObjectSource | None = None,
        offload: Offload | None = None,
        fence: Fence | None = None,
        recorder: EventRecorder | None = None,
    ) -> None:
        """``recorder``: the process' Event recorder (default: one of its own, behind ``fence``)."""
        self.kube = kube
        self.offload = offload or inline
        self.fence = fence
        self.source = source or self._list
        self.clock = clock
        self.config = config or PartitionerConfig()
        self.catalog = catalog or default_catalog()
        self.geometries = geometries
        self.planner = planner or self._plan
        self.batcher = Batcher(self.config.batch_window_idle_seconds, self.config.batch_window_timeout_seconds)
        self.last_plan_at: float | None = None
        self.last_plan_id: str | None = None
        self.recorder = recorder or EventRecorder(kube, fence)
        self.frozen = (0, 0)
        """(nodes, GPUs of the other nodes) left as they are by the last plan."""
        self.cache = BuildCache()
        """Parsed objects kept between cycles (``nos.planner.incremental``)."""
        self._unchanged_since_idle_plan = False
        """No input changed since a plan that wrote nothing: planning again would give the same plan."""
        self.skipped = 0
        """Plans skipped because of that."""
        self._aging: Hashable = None
        unknown = unknown_profiles(self.catalog, self.config.profile_mix)
        if unknown:
            log.warning("profileMix: no GPU model offers %s; left out of the mix", ", ".join(unknown))
        if self.config.profile_mix and not self.config.profile_shares:
            log.warning("profileMix is set but profileShares is 0: no capacity is held for it")

    def _plan_id(self, now: float) -> str:
        """Unix seconds, as the original; strictly increasing even within one second."""
        plan_id = str(int(now))
        if self.last_plan_id is not None and plan_id.isdigit() and int(plan_id) <= int(self.last_plan_id):
            plan_id = str(int(self.last_plan_id) + 1)
        return plan_id

    async def cycle(self) -> CycleResult:
        """Observe the cluster; plan and write when a batch has closed and agents have caught up.
        The result says when to run again (``requeue_after``)."""
        result = await self._cycle()
        result.candidates = len(self.batcher.seen)
        result.requeue_after = self._requeue_after(result)
        return result

    def _requeue_after(self, result: CycleResult) -> float | None:
        now = self.clock()
        if result.waiting_for:
            if self.last_plan_at is None:
                return None
            deadline: float | None = self.last_plan_at + self.config.report_timeout_seconds
        else:
            deadline = self.batcher.next_deadline()
        return None if deadline is None else max(deadline - now, 0.0) + WAKE_MARGIN_S

    async def _cycle(self) -> CycleResult:
        now = self.clock()
        nodes, pods = await self.source()
        state: ClusterState = await self.offload(build_cluster, nodes, pods, self.catalog, self.cache)
        if self.cache.changed:
            self._unchanged_since_idle_plan = False
        self.batcher.observe(state.keys_of_candidates(), now)
        result = CycleResult()
        if not self.batcher.ready(now):
            return result
        waiting = pending_reports(state)
        if waiting and self.last_plan_at is None:  # e.g. after a restart: start the wait now
            self.last_plan_at = now
        if waiting and self.last_plan_at is not None and now - self.last_plan_at < self.config.report_timeout_seconds:
            result.waiting_for = waiting
            log.info("batch ready, waiting for %d node(s) to report plan %s", len(waiting), self.last_plan_id)
            return result
        for name in waiting:  # timed out: one dead agent must not freeze the cluster
            await self._node_event(
                name,
                "AgentReportTimeout",
                f"the MIG agent did not report plan {state.nodes[name].info.annotations.get(SPEC_PLAN)} in time;"
                " planning without it",
                "Warning",
            )
        state = fairness.apply(state, now, self.config.fairness)
        aging = fairness.signature(state)
        if self._unchanged_since_idle_plan and aging == self._aging:
            self.skipped += 1
            self.batcher.reset()
            return result
        self._aging = aging
        for problem in state.problems:
            log.warning("%s", problem)
        plan, errors = await self.offload(self._plan_checked, state, self._plan_id(now))
        await self._report_frozen(state, plan, result)
        if errors:  # never write a plan that fails the independent check
            log.error("plan %s failed its check, not written: %s", plan.plan_id, "; ".join(errors[:3]))
            self.batcher.reset()
            return result
        result.plan = plan
        for name, node_plan in plan.nodes.items():
            if not node_plan.write:
                continue
            try:
                await self._write(name, node_plan.annotations)
                result.written.append(name)
            except KubeError as e:
                result.failed[name] = str(e)
                log.error("writing plan %s on node %s failed: %s", plan.plan_id, name, e)
            except FencedOut:
                result.fenced = True
                log.error("lost the lease while writing plan %s: nothing more is written", plan.plan_id)
                break
        if result.written:
            self.last_plan_at, self.last_plan_id = now, plan.plan_id
        self._unchanged_since_idle_plan = not result.written and not result.failed
        log.info(
            "plan %s: %d/%d candidate(s) placed, %d node(s) reconfigured, %d written; %d device(s) held for"
            " profiles below their share:%s",
            plan.plan_id,
            len(plan.placed),
            len(plan.placed) + len(plan.unplaced),
            len(plan.changed_nodes),
            len(result.written),
            len(plan.held),
            "".join(f" {s.profile} ({s.have} -> {s.target})" for s in plan.shares if s.kept or s.wanted) or " none",
        )
        await self._explain(plan, {p.key: p for p in state.candidates}, result.written)
        self.batcher.reset()
        return result

    async def _report_frozen(self, state: ClusterState, plan: Plan, result: CycleResult) -> None:
        """A Warning Event on each node whose input or plan is left as it is, once per change."""
        for name, ns in state.nodes.items():
            np = plan.nodes.get(name)
            whole = ns.frozen or (np.frozen if np is not None else None)
            gpus = [g for g in ns.gpus if g.frozen]
            if whole:
                result.frozen_nodes += 1
            else:
                result.frozen_gpus += len(gpus)
            why = [*ns.problems, *([whole] if whole else [])]
            text = "; ".join(dict.fromkeys(why))
            subject = ("frozen", name)
            if text:
                reason = "NodeFrozen" if whole else "GpuFrozen"
                await self.recorder.record(_node(name, reason, text, "Warning"), subject=subject, topic=text)
            elif self.recorder.told(subject):
                self.recorder.remember(subject, "")
        self.frozen = (result.frozen_nodes, result.frozen_gpus)

    async def _list(self) -> tuple[Sequence[Obj], Sequence[Obj]]:
        return await self.kube.list("nodes"), await self.kube.list("pods")

    def _plan_checked(self, state: ClusterState, plan_id: str) -> tuple[Plan, list[str]]:
        """Plan and check (a node whose part fails the check is left out); blocking, offloaded."""
        plan = self.planner(state, plan_id)
        return plan, isolate_failures(state, plan)

    def _may_write(self) -> None:
        if self.fence is not None and not self.fence():
            raise FencedOut("the Lease is not held")

    def _plan(self, state: ClusterState, plan_id: str) -> Plan:
        return plan_state(
            state,
            geometries=self.geometries,
            plan_id=plan_id,
            fill=self.config.fill_spare,
            budget=self.config.plan_budget_seconds,
            share_weight=self.config.profile_shares,
            share_mix=self.config.profile_mix,
        )

    async def _write(self, name: str, annotations: Mapping[str, str]) -> None:
        """Merge-patch the complete spec set (stale keys nulled), retrying on conflicts."""
        for attempt in range(self.config.patch_attempts):
            node = await self.kube.get("nodes", name)
            meta = node.get("metadata") or {}
            current = meta.get("annotations") or {}
            patch = merge_patch(current, annotations, owned="spec")
            if not patch:
                return
            self._may_write()
            try:
                await self.kube.patch("nodes", name, annotations_patch(patch, meta.get("resourceVersion")))
                return
            except Conflict:
                log.info("node %s changed while writing its spec (attempt %d), retrying", name, attempt + 1)
        raise Conflict(f"node {name}: still conflicting after {self.config.patch_attempts} attempts")

    async def _explain(self, plan: Plan, pods: Mapping[str, Any], written: Sequence[str]) -> None:
        """Events on pods and nodes; a pod hears the same thing once."""
        for p in plan.placed:
            if p.node not in written and not p.existing:
                continue
            how = "existing free" if p.existing else "creating"
            note = f"{how} {p.profile} on node {p.node} GPU {p.gpu} for this pod, plan {plan.plan_id}"
            await self._pod_event(pods[p.pod], "MigPlanned", note, "Normal", key=f"{p.node}/{p.gpu}/{p.profile}")
        for u in plan.unplaced:
            await self._pod_event(pods[u.pod], "MigUnplaceable", u.reason, "Warning", key=u.reason)
        for name in written:
            changes = [
                f"GPU {g.index}: {' '.join(map(str, g.current)) or 'empty'} -> {' '.join(map(str, g.planned))}"
                for g in plan.nodes[name].gpus
                if g.changed
            ]
            if changes:
                await self._node_event(name, "MigRepartition", f"plan {plan.plan_id}: " + "; ".join(changes))

    async def _pod_event(self, pod: Any, reason: str, note: str, type_: str, key: str) -> None:
        """A pod hears the same thing once."""
        ref = ObjectRef("Pod", pod.name, pod.namespace)
        event = Event(ref, reason, note, "Warning" if type_ == "Warning" else "Normal")
        await self.recorder.record(event, subject=("pod", pod.key), topic=key)

    async def _node_event(self, name: str, reason: str, note: str, type_: str = "Normal") -> None:
        await self.recorder.record(_node(name, reason, note, type_))


def _node(name: str, reason: str, note: str, type_: str = "Normal") -> Event:
    return Event(ObjectRef("Node", name), reason, note, "Warning" if type_ == "Warning" else "Normal")
