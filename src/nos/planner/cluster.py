"""The cluster as the planner sees it: managed nodes, their GPUs' current layouts, free node
resources and candidate pods, built from plain Kubernetes objects.

Everything doubtful is made safe here, once: a malformed annotation freezes its GPU (or node), an
unknown GPU model keeps its node out of the plan, and placements missing from the status are
inferred with the slots any in-use instance could occupy blocked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from itertools import groupby
from operator import is_not
from typing import Any, TypeVar, cast

from nos.contract.annotations import (
    COUNT_LABEL,
    PRODUCT_LABEL,
    DecodedAnnotations,
    GpuAnnotations,
    decode_spec,
    decode_status,
    is_mig_partitioned,
    is_spec_key,
)
from nos.contract.pods import CandidatePod, is_mig_resource, read_pod
from nos.kube.views.objects import POD_COUNT, NodeInfo, ObjectError, PodInfo, node_from_dict
from nos.mig.catalog import Catalog, GpuModel, default_catalog
from nos.mig.layout import Instance, layout_errors, occupied_mask
from nos.mig.placement import fits_counts, placements
from nos.planner.incremental import BuildCache, version_key

T = TypeVar("T")

DEFAULT_POD_CAPACITY = 110
_MAX_INFERRED = 20000
MAX_GPUS_PER_NODE = 64
"""A sane bound on ``nvidia.com/gpu.count`` and on GPU indices in annotations (the largest servers
have 16 GPUs): a larger value is a typo or an attack, and planning it would cost time and memory
per GPU and write a spec over the annotation size limit."""
_COUNT_LABEL = re.compile(r"^\d{1,9}$", re.ASCII)


@dataclass
class GpuState:
    index: int
    model: GpuModel
    instances: tuple[Instance, ...]
    """Current layout, from the status annotations (``used`` set for allocated instances)."""
    blocked: int = 0
    """Slots an in-use instance may occupy: its own slots, or every slot it could sit in when
    placements were inferred."""
    inferred: bool = False
    frozen: str | None = None
    """Why the planner must leave this GPU's spec exactly as it is."""

    @property
    def used(self) -> tuple[Instance, ...]:
        return tuple(i for i in self.instances if i.used)

    @property
    def free(self) -> tuple[Instance, ...]:
        return tuple(i for i in self.instances if not i.used)


@dataclass
class NodeState:
    info: NodeInfo
    model: GpuModel | None
    gpus: list[GpuState]
    free: dict[str, int]
    """Allocatable minus what bound, running pods request (MIG resources excluded)."""
    spec: DecodedAnnotations
    problems: list[str] = field(default_factory=list)
    frozen: str | None = None
    """Why the whole node is left out of the plan."""
    bound_mig: dict[str, int] = field(default_factory=dict)
    """MIG devices the pods bound here request (running pods' demand, as kube-scheduler counts it:
    at once, not when the agent next reports its in-use instances)."""

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def current_spec_annotations(self) -> dict[str, str]:
        return {k: v for k, v in self.info.annotations.items() if is_spec_key(k)}


@dataclass
class ClusterState:
    nodes: dict[str, NodeState]
    """Managed (MIG-labelled) nodes, by name."""
    other_nodes: int
    candidates: list[CandidatePod]
    problems: list[str] = field(default_factory=list)
    catalog: Catalog = field(default_factory=default_catalog)
    """Where the GPU models came from: the planner asks it the size of a pod's profile."""
    candidate_keys: frozenset[str] | None = field(default=None, compare=False)
    """The keys of ``candidates`` as built (kept up to date per pod change by a controller's
    build, so its batch window does not walk thousands of pods); None: work them out."""

    def keys_of_candidates(self) -> frozenset[str]:
        if self.candidate_keys is not None:
            return self.candidate_keys
        return frozenset(p.key for p in self.candidates)


def infer_layout(
    model: GpuModel, gpu: GpuAnnotations, limit: int = _MAX_INFERRED
) -> tuple[tuple[Instance, ...], int] | None:
    """Placements consistent with the status counts, and the slots that in-use instances could
    occupy across all of them (every slot once ``limit`` placements were seen). None when no
    placement matches the counts."""
    wanted = sorted(
        ((p, used) for (p, used), n in gpu.counts.items() for _ in range(n)),
        key=lambda pu: (-model.profile(pu[0]).slots, pu[0], not pu[1]),
    )
    if not fits_counts(model, [model.profile(p) for p, _ in wanted]):
        return None
    groups = [(model.profile(p), len(list(run))) for (p, _), run in groupby(wanted)]
    first: tuple[Instance, ...] | None = None
    blocked = 0
    for seen, (_, placed) in enumerate(placements(model, 0, groups), 1):
        layout = [Instance(s, p.name, used) for (p, s), (_, used) in zip(placed, wanted, strict=True)]
        if first is None:
            first = tuple(sorted(layout))
        blocked |= occupied_mask(model, [x for x in layout if x.used])
        if seen >= limit:  # too many possibilities to enumerate: block every free slot
            blocked = model.full_mask
            break
    if first is None:
        return None
    return first, blocked


def _gpu_state(index: int, model: GpuModel, status: GpuAnnotations | None) -> GpuState:
    if status is None:
        return GpuState(index, model, ())
    unknown = sorted({p for p, _ in status.counts if p not in model.profiles})
    if unknown:
        return GpuState(index, model, (), frozen=f"status reports profile {unknown[0]}, unknown on {model.name}")
    if status.placements is not None:
        errors = layout_errors(model, status.placements)
        if errors:
            return GpuState(index, model, (), frozen=f"reported placements are impossible: {errors[0]}")
        used = occupied_mask(model, [i for i in status.placements if i.used])
        return GpuState(index, model, status.placements, blocked=used)
    inferred = infer_layout(model, status)
    if inferred is None:
        return GpuState(index, model, (), frozen="reported counts fit no physical layout")
    instances, blocked = inferred
    return GpuState(index, model, instances, blocked=blocked, inferred=True)


def _node_state(info: NodeInfo, catalog: Catalog, bound: Iterable[PodInfo]) -> NodeState:
    spec = decode_spec(info.annotations)
    free = {r: n for r, n in info.allocatable.items() if not is_mig_resource(r)}
    free.setdefault(POD_COUNT, DEFAULT_POD_CAPACITY)
    mig: dict[str, int] = {}
    for pod in bound:
        for r, n in pod.requests.items():
            if r in free:
                free[r] -= n
            elif is_mig_resource(r) and n > 0:
                mig[r] = mig.get(r, 0) + n
        free[POD_COUNT] -= 1
    product = info.labels.get(PRODUCT_LABEL)
    if product is None:
        return NodeState(info, None, [], free, spec, frozen=f"node {info.name} has no {PRODUCT_LABEL} label")
    model = catalog.model_for_product(product)
    if model is None:
        return NodeState(info, None, [], free, spec, frozen=f"node {info.name}: unknown GPU model {product!r}")
    status = decode_status(info.annotations)
    state = NodeState(info, model, [], free, spec, bound_mig=mig)
    for p in (*status.problems, *spec.problems):
        state.problems.append(f"node {info.name}: {p}")
    bad_status, bad_spec = status.problem_gpus(), spec.problem_gpus()
    if bad_status is None or bad_spec is None:
        state.frozen = f"node {info.name}: malformed nos annotations; its GPUs are left as they are"
        return state
    count_label = info.labels.get(COUNT_LABEL)
    count = 0
    if count_label is not None:
        if not _COUNT_LABEL.match(count_label) or int(count_label) > MAX_GPUS_PER_NODE:
            state.frozen = (
                f"node {info.name}: label {COUNT_LABEL}={count_label[:20]!r} is not a GPU count up to "
                f"{MAX_GPUS_PER_NODE}; its GPUs are left as they are"
            )
            return state
        count = int(count_label)
    reported = set(status.gpus) | set(status.unreadable)
    if any(i >= MAX_GPUS_PER_NODE for i in reported):
        state.frozen = f"node {info.name}: its status names GPU index {max(reported)}, over {MAX_GPUS_PER_NODE - 1}"
        return state
    if not reported and not status.plan_id and mig_advertised(info):
        state.frozen = (
            f"node {info.name} advertises MIG devices but its agent has not reported them yet; "
            "left as it is until it does"
        )
        return state
    indices = set(range(count)) | reported
    for index in sorted(set(spec.gpus) - indices):
        state.problems.append(
            f"node {info.name}: the spec names GPU {index}, which the node does not have "
            f"({COUNT_LABEL}={count_label}); its spec is dropped"
        )
    if not indices:
        state.frozen = f"node {info.name}: no {COUNT_LABEL} label and no GPU annotations"
        return state
    for index in sorted(indices):
        gpu = _gpu_state(index, model, status.gpus.get(index))
        if index in bad_status or index in bad_spec:
            gpu.frozen = "malformed annotations"
        if index in status.unreadable:
            gpu.frozen = f"its agent cannot read it ({status.unreadable[index]})"
        spec_problem = None if gpu.frozen or index not in spec.gpus else spec_error(model, spec.gpus[index])
        if spec_problem is not None:
            gpu.frozen = f"malformed spec: {spec_problem}"
        if gpu.frozen:
            state.problems.append(f"node {info.name} GPU {index}: {gpu.frozen}; left as it is")
        state.gpus.append(gpu)
    return state


def mig_advertised(info: NodeInfo) -> bool:
    """The node's allocatable shows MIG devices (some may be allocated to running pods)."""
    return any(is_mig_resource(r) and n > 0 for r, n in info.allocatable.items())


def spec_error(model: GpuModel, gpu: GpuAnnotations) -> str | None:
    """Why a decoded spec of one GPU cannot be a layout of ``model`` (unknown profile, placements
    that overlap or break the rules, counts no layout has); None when it can."""
    unknown = sorted({p for p, _ in gpu.counts if p not in model.profiles})
    if unknown:
        return f"profile {unknown[0]} is unknown on {model.name}"
    if gpu.placements is not None:
        placed = [(i.profile, i.start) for i in gpu.placements]
        if len(set(placed)) != len(placed):
            return "a placement is listed twice"
        errors = layout_errors(model, gpu.placements)
        return errors[0] if errors else None
    for profile, n in gpu.profile_counts().items():
        if n > model.profile(profile).max_count:
            return f"{n} x {profile} exceeds the maximum of {model.profile(profile).max_count} per GPU"
    if infer_layout(model, gpu, limit=1) is None:
        return "the counts fit no physical layout"
    return None


def _parsed(
    cache: BuildCache | None,
    kind: str,
    obj: Mapping[str, Any],
    parse: Callable[[Any], T],
    version: tuple[str, str] | None,
) -> T | str:
    """``parse(obj)``, or the ``ObjectError`` text; reused from ``cache`` while the object is
    unchanged (``version``: its ``version_key``)."""
    if cache is not None:
        if version is not None:
            return cache.get((kind, *version), lambda: _parsed(None, kind, obj, parse, None))
        cache.changed = True
    try:
        return parse(obj)
    except ObjectError as e:
        return str(e)


@dataclass
class _PodPart:
    """What a build takes from the pods: a function of the pods alone (``BuildCache.pod_part``)."""

    problems: list[str]
    bound: dict[str, list[PodInfo]]
    """Node name -> its pods that have not terminated, in input order."""
    candidates: list[CandidatePod]
    versions: dict[int, tuple[str, str] | None]
    """id(parsed pod) -> its (uid, resourceVersion)."""
    candidate_keys: frozenset[str] | None = None
    """The candidates' keys, when kept with the index (else worked out from ``candidates``)."""


def _pod_part(pods: Iterable[Mapping[str, Any]], cache: BuildCache | None) -> _PodPart:
    if cache is not None:
        cache.start()
    part = _PodPart([], {}, [], {})
    for obj in pods:
        version = version_key(obj)
        pod = _parsed(cache, "pod", obj, read_pod, version)
        if isinstance(pod, str):
            part.problems.append(pod)
            continue
        part.versions[id(pod)] = version
        if pod.node_name and not pod.terminated:
            part.bound.setdefault(pod.node_name, []).append(pod)
        if isinstance(pod, CandidatePod):
            part.candidates.append(pod)
    if cache is not None:
        cache.finish()
    return part


@dataclass(frozen=True, slots=True)
class _PodEntry:
    """A pod object of the last pods tuple (held, so its id is not reused) and what it gave."""

    obj: Mapping[str, Any]
    parsed: PodInfo | str
    version: tuple[str, str] | None
    candidate: bool
    node: str | None
    """The node it is bound to while it has not terminated."""


def _entry(obj: Mapping[str, Any]) -> _PodEntry:
    pod = _parsed(None, "pod", obj, read_pod, None)
    if isinstance(pod, str):
        return _PodEntry(obj, pod, version_key(obj), False, None)
    node = pod.node_name if pod.node_name and not pod.terminated else None
    return _PodEntry(obj, pod, version_key(obj), isinstance(pod, CandidatePod), node)


@dataclass
class PodIndex:
    """The entries of the last pods tuple by object id, and the few kinds of them a build needs,
    each kept up to date per object that entered or left the tuple (``BuildCache.pod_index``)."""

    entries: dict[int, _PodEntry] = field(default_factory=dict)
    candidates: dict[int, CandidatePod] = field(default_factory=dict)
    problems: dict[int, str] = field(default_factory=dict)
    bound: dict[int, _PodEntry] = field(default_factory=dict)
    candidate_keys: dict[str, int] = field(default_factory=dict)
    """``namespace/name`` of the candidates -> how many entries have it (1 in an API server's list)."""
    unversioned: int = 0
    """Entries without a (uid, resourceVersion): they count as changed every build."""
    order: list[int] = field(default_factory=list)
    """The ids of the last tuple's objects in its order (the same objects in another order are
    another snapshot: the candidates' order is part of the planner's input)."""

    def remove(self, i: int) -> None:
        e = self.entries.pop(i)
        if e.version is None:
            self.unversioned -= 1
        if isinstance(e.parsed, str):
            del self.problems[i]
        if e.node is not None:
            del self.bound[i]
        if e.candidate:
            pod = self.candidates.pop(i)
            left = self.candidate_keys[pod.key] - 1
            if left:
                self.candidate_keys[pod.key] = left
            else:
                del self.candidate_keys[pod.key]

    def add(self, i: int, obj: Mapping[str, Any]) -> None:
        e = self.entries[i] = _entry(obj)
        if e.version is None:
            self.unversioned += 1
        if isinstance(e.parsed, str):
            self.problems[i] = e.parsed
        elif e.node is not None:
            self.bound[i] = e
        if e.candidate and isinstance(e.parsed, CandidatePod):
            self.candidates[i] = e.parsed
            self.candidate_keys[e.parsed.key] = self.candidate_keys.get(e.parsed.key, 0) + 1


def _in_order(kept: Mapping[int, T], order: Iterable[int]) -> list[T]:
    """The values of ``kept`` in ``order`` of their ids (a pass in C, not in Python)."""
    if not kept:
        return []
    return cast("list[T]", list(filter(_NOT_NONE, map(kept.get, order))))


_NOT_NONE = partial(is_not, None)


def _pod_part_from_snapshot(pods: tuple[Mapping[str, Any], ...], cache: BuildCache) -> tuple[_PodPart, bool]:
    """The pods' part from a tuple of shared pods, parsing only the objects not in the previous
    tuple (a written pod is a new object): set operations over ids, then the index updated per
    object that entered or left, then its candidates, problems and bound pods taken in the tuple's
    order by lookups in C instead of a walk per pod in Python. The entries hold their objects, so
    an id cannot be reused by another object."""
    if cache.pod_index is None:
        cache.pod_index = PodIndex()
    index: PodIndex = cache.pod_index
    ids = list(map(id, pods))
    if ids == index.order and cache.pod_part is not None and not index.unversioned:
        return cache.pod_part, False  # the same objects in the same order: the same snapshot
    index.order = ids
    objs = dict(zip(ids, pods, strict=True))
    gone = index.entries.keys() - objs.keys()
    new = objs.keys() - index.entries.keys()
    cache.pods = BuildCache(pods=False)  # a later list's build must not compare with an old list
    for i in gone:  # all that left first: a re-written pod leaves under its key before it enters again
        index.remove(i)
    for i in new:
        index.add(i, objs[i])
    part = _PodPart(_in_order(index.problems, objs), {}, _in_order(index.candidates, objs), {})
    part.candidate_keys = frozenset(index.candidate_keys)
    for e in _in_order(index.bound, objs):
        if e.node is not None and not isinstance(e.parsed, str):
            part.bound.setdefault(e.node, []).append(e.parsed)
            part.versions[id(e.parsed)] = e.version
    cache.pod_part = part
    return part, True


def build_cluster(
    nodes: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    catalog: Catalog | None = None,
    cache: BuildCache | None = None,
) -> ClusterState:
    """Managed nodes and candidate pods from Node and Pod objects (dicts). With ``cache`` (kept by
    a controller between cycles), unchanged objects are not parsed again, and of a pods tuple only
    the objects not in the previous build's are looked at (``nos.planner.incremental``)."""
    catalog = catalog or default_catalog()
    pods_changed = True
    if cache is None:
        part = _pod_part(pods, None)
    elif isinstance(pods, tuple):
        part, pods_changed = _pod_part_from_snapshot(pods, cache)
    else:
        cache.pod_index, cache.pod_part = None, None
        part = _pod_part(pods, cache.pods)
        pods_changed = cache.pods is None or cache.pods.changed
    if cache is not None:
        cache.start()
    problems: list[str] = []
    infos: list[NodeInfo] = []
    versions: dict[int, tuple[str, str] | None] = {}
    """id(parsed node) -> its (uid, resourceVersion), while cached."""
    for obj in nodes:
        version = version_key(obj)
        node = _parsed(cache, "node", obj, node_from_dict, version)
        if isinstance(node, str):
            problems.append(node)
        else:
            infos.append(node)
            versions[id(node)] = version
    problems.extend(part.problems)
    bound = part.bound
    managed: dict[str, NodeState] = {}
    others = 0
    for info in sorted(infos, key=lambda n: n.name):
        if not is_mig_partitioned(info.labels):
            others += 1
            continue
        here = bound.get(info.name, ())
        keys = [versions[id(info)], *(part.versions[id(p)] for p in here)]
        if cache is None or None in keys:
            state = _node_state(info, catalog, here)
        else:  # the same node object with the same pods bound: the same state
            state = cache.get(("state", *keys), lambda info=info, here=here: _node_state(info, catalog, here))  # type: ignore[misc]
        managed[info.name] = state
        problems.extend(state.problems)
        if state.frozen:
            problems.append(state.frozen)
    candidates = list(part.candidates)  # each state its own list: a reader may reorder it
    if cache is not None:
        cache.finish()
        cache.changed = cache.changed or pods_changed
    return ClusterState(managed, others, candidates, problems, catalog, part.candidate_keys)
