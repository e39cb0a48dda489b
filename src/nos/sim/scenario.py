"""Scenario files: the cluster, the workload, the policies and the timings of one simulation.

YAML, validated with pydantic (unknown keys are errors, so a typo fails loudly). The embedded
default scenario is used when ``nos simulate`` gets no file; ``examples/scenario.yaml`` documents
every key.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    ValidationError,
    field_validator,
    model_validator,
)

from nos import yaml_errors
from nos.config import PROFILE_SHARES, FairnessConfig
from nos.mig.catalog import GpuModel, default_catalog

POLICIES = ("ideal", "best-static", "whole-gpu", "greedy", "nos", "static", "hindsight-static")
Policy = Literal["ideal", "best-static", "whole-gpu", "greedy", "nos", "static", "hindsight-static"]
DEFAULT_POLICIES: tuple[Policy, ...] = ("ideal", "best-static", "whole-gpu", "greedy", "nos")
"""Run when none are named; ``static`` (one fixed layout on every GPU) only on request."""
DEFAULT_STATIC_LAYOUT = {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1}
"""The ``static`` policy's layout on an A100-80GB (``default_static_layout`` gives other models its shape)."""
_DEFAULT_STATIC_MODEL = "A100-80GB"


def default_static_layout(model: GpuModel) -> dict[str, int]:
    """``DEFAULT_STATIC_LAYOUT``'s shape on ``model``: each of its profiles becomes the plain profile
    of ``model`` with the same compute slices and memory slots (none where the model has none, as
    3g on an A30), so a scenario of any GPU model has a fixed layout without naming one."""
    reference = default_catalog().model(_DEFAULT_STATIC_MODEL)
    out: dict[str, int] = {}
    for name, count in DEFAULT_STATIC_LAYOUT.items():
        ref = reference.profile(name)
        match = next(
            (p for p in model.profiles.values() if not p.variant and (p.compute, p.slots) == (ref.compute, ref.slots)),
            None,
        )
        if match is not None:
            out[match.name] = count
    return out


def _all_policies() -> list[Policy]:
    return list(DEFAULT_POLICIES)


class ScenarioError(ValueError):
    """The scenario file cannot be read or is invalid."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NodeGroup(_Strict):
    """``count`` identical nodes named ``<name>-<i>``."""

    name: str = Field(default="node", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    model: str = "A100-80GB"
    """A catalog model name (``nos models`` lists them), e.g. A100-80GB, H100-80GB."""
    count: int = Field(default=1, ge=1)
    gpus: int = Field(default=8, ge=1, le=16)
    cpu: float = Field(default=128, gt=0)
    """Allocatable cores."""
    memory_gib: float = Field(default=1024, gt=0)
    initial_layout: dict[str, int] | None = None
    """Profile counts every GPU starts with; default: the static policy's layout; ``{}``: no instances."""

    @field_validator("model")
    @classmethod
    def _known(cls, v: str) -> str:
        names = [m.name for m in default_catalog().models]
        if v not in names:
            raise ValueError(f"unknown GPU model {v!r} (known: {', '.join(names)})")
        return v


class PodSpec(_Strict):
    """One pod of the workload."""

    name: str | None = None
    arrival_s: float = Field(ge=0)
    profile: str
    """MIG profile, e.g. ``1g.10gb``; the pod requests ``nvidia.com/mig-<profile>: 1``."""
    duration_s: float = Field(gt=0)
    cpu: float = Field(default=1, ge=0)
    memory_gib: float = Field(default=4, ge=0)
    priority: int = 0


class ProfileShare(_Strict):
    profile: str
    weight: float = Field(gt=0)


class Generator(_Strict):
    """Random pods: Poisson arrivals at ``rate_per_hour`` between ``start_s`` and ``end_s``, profiles
    drawn by weight, durations log-uniform in [min, max] (many short jobs, a few long ones)."""

    count: int = Field(ge=1)
    start_s: float = Field(default=0, ge=0)
    end_s: float = Field(gt=0)
    profiles: list[ProfileShare] = Field(min_length=1)
    duration_min_s: float = Field(default=600, gt=0)
    duration_max_s: float = Field(default=3600, gt=0)
    cpu: float = Field(default=2, ge=0)
    memory_gib: float = Field(default=16, ge=0)
    priority: int = 0
    burst: float = Field(default=0.0, ge=0, le=1)
    """Fraction of the pods that arrive together in bursts of 5-20 (the rest arrive one by one)."""

    @model_validator(mode="after")
    def _window(self) -> Generator:
        if self.end_s <= self.start_s:
            raise ValueError("end_s must be after start_s")
        if self.duration_max_s < self.duration_min_s:
            raise ValueError("duration_max_s must be >= duration_min_s")
        return self

    def pods(self, rng: random.Random, prefix: str) -> list[PodSpec]:
        names = [p.profile for p in self.profiles]
        weights = [p.weight for p in self.profiles]
        span = self.end_s - self.start_s
        arrivals: list[float] = []
        while len(arrivals) < self.count:
            t = self.start_s + rng.random() * span
            n = rng.randint(5, 20) if rng.random() < self.burst else 1
            arrivals.extend([t] * min(n, self.count - len(arrivals)))
        lo, hi = self.duration_min_s, self.duration_max_s
        out = []
        for i, t in enumerate(sorted(arrivals)):
            duration = lo * (hi / lo) ** rng.random()
            profile = rng.choices(names, weights)[0]
            out.append(
                PodSpec(
                    name=f"{prefix}-{i:05d}",
                    arrival_s=round(t, 3),
                    profile=profile,
                    duration_s=round(duration, 3),
                    cpu=self.cpu,
                    memory_gib=self.memory_gib,
                    priority=self.priority,
                )
            )
        return out


class Workload(_Strict):
    pods: list[PodSpec] = Field(default_factory=list)
    generators: list[Generator] = Field(default_factory=list)


class Timings(_Strict):
    """Virtual seconds. Defaults are the production defaults where one exists."""

    batch_window_idle_s: float = Field(default=10, ge=0)
    batch_window_timeout_s: float = Field(default=60, gt=0)
    partitioner_resync_s: float = Field(default=30, gt=0)
    """The partitioner also runs on pod/node changes (watch events); this is its periodic resync."""
    report_timeout_s: float = Field(default=300, gt=0)
    agent_interval_s: float = Field(default=60, gt=0)
    """``AgentConfig.report_interval_seconds``: each agent reconciles and reports this often."""
    device_plugin_restart_s: float = Field(default=30, ge=0)
    """From the plugin pod's deletion to its replacement running and advertising the devices."""
    device_plugin_poll_s: float = Field(default=2, gt=0)
    scheduler_retry_s: float = Field(default=300, gt=0)
    """kube-scheduler retries unschedulable pods on cluster events (pod added or finished, node
    allocatable changed) and at the latest after this long (``podMaxInUnschedulablePodsDuration``)."""
    sample_s: float = Field(default=60, gt=0)
    """Interval of the time series (plot)."""


class Scenario(_Strict):
    name: str = "scenario"
    seed: int = 0
    duration_s: float | None = Field(default=None, gt=0)
    """End of the run; default: when every pod has finished, at most last arrival + 6 h."""
    nodes: list[NodeGroup] = Field(min_length=1)
    workload: Workload = Field(default_factory=Workload)
    policies: list[Policy] = Field(default_factory=lambda: _all_policies())
    static_layout: dict[str, int] | None = None
    """The layout of every GPU under the ``static`` policy (the fixed-layout baseline); default: each
    model's ``default_static_layout`` (``static_layout_for``)."""
    expected_mix: dict[str, NonNegativeFloat] | None = None
    """The profile mix ``best-static``'s layouts are chosen for (profile -> relative demand, e.g.
    running pods on average); default: what the workload says in advance (``nos.sim.static_mix``)."""
    timings: Timings = Field(default_factory=Timings)
    fairness: FairnessConfig = Field(default_factory=FairnessConfig)
    """nos' aging and reservation settings (``PartitionerConfig.fairness``); the greedy has neither."""
    profile_shares: float = Field(default=PROFILE_SHARES, ge=0, le=1)
    """nos' capacity held per MIG profile (``PartitionerConfig.profile_shares``); the greedy has none."""
    profile_mix: dict[str, NonNegativeFloat] = Field(default_factory=dict)
    """The profile mix nos' shares follow (``PartitionerConfig.profile_mix``); empty: the measured demand."""

    @model_validator(mode="after")
    def _profiles_exist(self) -> Scenario:
        catalog = default_catalog()
        models = {g.model for g in self.nodes}
        offered = {p for m in models for p in catalog.model(m).profiles}
        wanted = {p.profile for p in self.workload.pods} | {
            s.profile for g in self.workload.generators for s in g.profiles
        }
        unknown = sorted((wanted | set(self.expected_mix or {}) | set(self.profile_mix)) - offered)
        if unknown:
            raise ValueError(
                f"profiles {unknown} are offered by no GPU model of the cluster ({', '.join(sorted(models))}; "
                "nos models lists each model's profiles)"
            )
        for i, group in enumerate(self.nodes):
            layouts = (("static_layout", self.static_layout), (f"nodes.{i}.initial_layout", group.initial_layout))
            for key, layout in layouts:
                bad = sorted(set(layout or {}) - set(catalog.model(group.model).profiles))
                if bad:
                    raise ValueError(f"{key}: profiles {bad} do not exist on {group.model} (nos models lists them)")
        if len(set(self.policies)) != len(self.policies):
            raise ValueError("policies are listed twice")
        return self

    def static_layout_for(self, model: GpuModel) -> dict[str, int]:
        """The ``static`` policy's layout of every GPU of ``model`` (and the initial one by default)."""
        return dict(self.static_layout) if self.static_layout is not None else default_static_layout(model)

    def all_pods(self) -> list[PodSpec]:
        """Explicit pods and generated ones (seeded), in arrival order, each with a unique name."""
        rng = random.Random(self.seed)
        pods = list(self.workload.pods)
        for i, g in enumerate(self.workload.generators):
            pods.extend(g.pods(rng, f"gen{i}"))
        out = []
        for i, p in enumerate(sorted(pods, key=lambda p: p.arrival_s)):
            out.append(p if p.name else p.model_copy(update={"name": f"pod-{i:05d}"}))
        names = [p.name for p in out]
        if len(set(names)) != len(names):
            raise ScenarioError("pod names must be unique")
        return out


def one_line(e: ValidationError) -> str:
    """The first validation error as ``key.path: message`` (and how many more), on one line."""
    errors = e.errors(include_url=False)
    if not errors:
        return str(e).splitlines()[0]
    first = errors[0]
    where = ".".join(str(x) for x in first["loc"])
    msg = str(first["msg"]).removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"{where}: {msg}{more}" if where else f"{msg}{more}"


DRAIN_S = 6 * 3600
"""Without an explicit duration a run stops when every pod is done, at most this long after the last arrival."""


def run_end(scenario: Scenario, pods: Sequence[PodSpec]) -> float:
    """The run's horizon: ``duration_s``, or the last arrival + ``DRAIN_S``."""
    last = max((p.arrival_s for p in pods), default=0.0)
    return scenario.duration_s if scenario.duration_s is not None else last + DRAIN_S


def load_scenario(path: Path) -> Scenario:
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ScenarioError(f"cannot read {path}: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        raise ScenarioError(f"{path}: not YAML{yaml_errors.where(e)}") from e
    if not isinstance(raw, dict):
        raise ScenarioError(f"{path}: not a scenario (expected a mapping with nodes and workload)")
    if raw.get("kind") or raw.get("apiVersion"):
        raise ScenarioError(f"{path}: a Kubernetes object list, not a scenario (see examples/scenario.yaml)")
    try:
        return Scenario.model_validate(raw)
    except ValidationError as e:
        raise ScenarioError(f"{path}: {one_line(e)}") from e


def default_scenario() -> Scenario:
    """Two A100-80GB nodes with 8 GPUs and two H100-80GB nodes with 4 (24 GPUs), and 3 hours of mixed
    pods (small ones mostly, in bursts, and some whole-GPU jobs)."""
    return Scenario(
        name="default",
        seed=1,
        nodes=[
            NodeGroup(name="a100", model="A100-80GB", count=2, gpus=8),
            NodeGroup(name="h100", model="H100-80GB", count=2, gpus=4),
        ],
        workload=Workload(
            generators=[
                Generator(
                    count=400,
                    end_s=3 * 3600,
                    burst=0.6,
                    duration_min_s=300,
                    duration_max_s=5400,
                    profiles=[
                        ProfileShare(profile="1g.10gb", weight=4),
                        ProfileShare(profile="1g.20gb", weight=1),
                        ProfileShare(profile="2g.20gb", weight=3),
                        ProfileShare(profile="3g.40gb", weight=2),
                        ProfileShare(profile="4g.40gb", weight=1),
                        ProfileShare(profile="7g.80gb", weight=1),
                    ],
                ),
                Generator(
                    count=20,
                    end_s=3 * 3600,
                    priority=100,
                    duration_min_s=600,
                    duration_max_s=1800,
                    profiles=[ProfileShare(profile="1g.10gb", weight=1), ProfileShare(profile="3g.40gb", weight=1)],
                ),
            ]
        ),
    )


def parse_layout(text: str) -> dict[str, int]:
    """``"1g.10gb=2,2g.20gb=1"`` -> ``{"1g.10gb": 2, "2g.20gb": 1}``."""
    out: dict[str, int] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        profile, sep, count = item.partition("=")
        if not sep or not count.strip().isdigit():
            raise ScenarioError(f"layout item {item!r} is not PROFILE=COUNT")
        out[profile.strip()] = out.get(profile.strip(), 0) + int(count)
    return out
