"""The settings of every component, one pydantic model each, and loading them (file ← env ← flags).

A leaf: this module imports no other nos module except the one-line YAML error wording
(``nos.yaml_errors``, itself a leaf), so every component can import its own section from here and
nothing here depends on a component. Each setting exists once, with its default and its rule; the
components receive only their own section (``PartitionerConfig``, ``AgentConfig``, …).

The in-cluster processes (``nos partitioner``, ``nos agent``) read one YAML file with camelCase keys
(as Helm values are), validated at start; environment variables override it and CLI flags override
both. Env names: ``NOS_`` + the snake_case path in upper case, sections joined by a double underscore,
e.g. ``NOS_PARTITIONER__BATCH_WINDOW_IDLE_SECONDS=5``, ``NOS_PARTITIONER__LEADER_ELECTION__ENABLED=false``,
``NOS_LOG__LEVEL=debug``; values are read as YAML scalars. Only ``NOS_PARTITIONER__``/``NOS_AGENT__``/
``NOS_SERVER__``/``NOS_LOG__`` are read, so other ``NOS_*`` variables (test tiers, caches) never collide.

Durations are seconds and every duration's name ends in ``_seconds`` (``…Seconds`` in the file).
Every problem becomes one ``ConfigError`` line, which the commands print before exiting.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from nos import yaml_errors

ENV_PREFIX = "NOS_"
SECTIONS = ("partitioner", "agent", "server", "log")

LEASE_JITTER = 1.2
"""client-go's JitterFactor: an elector's retries wait between 1 and 1.2 retry periods."""

PLAN_BUDGET_SECONDS = 2.0
"""Time a planning round may take: the partitioner's, ``nos plan``'s and ``nos simulate``'s default."""

PROFILE_SHARES = 0.0
"""Capacity held for each MIG profile, as a fraction of its share of the demand
(``nos.planner.shares``): the partitioner's, ``nos plan``'s and ``nos simulate``'s default. Off: it
helps workloads whose profile mix holds steady under a backlog and costs those whose mix moves from
burst to burst (docs/simulate.md, "Profile shares"); 1.0 is the measured setting."""


class ConfigError(ValueError):
    """The configuration cannot be used; the message is one line."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


class LeaderElectionConfig(_Section):
    """The partitioner's Lease (``nos.runtime.leader``)."""

    enabled: bool = True
    lease_name: str = Field(default="nos-partitioner", min_length=1)
    namespace: str = Field(default="nos-system", min_length=1)
    lease_duration_seconds: float = Field(default=15.0, gt=0)
    renew_deadline_seconds: float = Field(default=10.0, gt=0)
    retry_period_seconds: float = Field(default=2.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> LeaderElectionConfig:
        if not self.lease_duration_seconds > self.renew_deadline_seconds > LEASE_JITTER * self.retry_period_seconds:
            raise ValueError("needs leaseDurationSeconds > renewDeadlineSeconds > 1.2 * retryPeriodSeconds")
        return self


class FairnessConfig(_Section):
    """Aging and reservation of a draining GPU, so large pods are not starved (``nos.partitioner.fairness``).
    Off by default: on the shipped trace neither lowered the never-scheduled count (docs/simulate.md)."""

    aging_step_seconds: float | None = Field(default=None, gt=0)
    """Each such wait moves a pending pod one level ahead of younger pods of its priority; None: off.
    600 was measured (docs/simulate.md)."""
    reserve_after_seconds: float | None = Field(default=None, gt=0)
    """A pod that waited this long and fits nowhere gets a GPU drained for it; None: off. 1800 was
    measured (docs/simulate.md)."""
    max_reserved_share: float = Field(default=0.25, ge=0, le=1)
    """At most this share of the GPUs is reserved at once (at least one when reservation is on)."""


class PartitionerConfig(_Section):
    """``nos partitioner`` (``nos.partitioner``), also what ``nos simulate`` runs."""

    batch_window_idle_seconds: float = Field(default=10.0, ge=0)
    """A batch of pending pods closes after this long without a new candidate…"""
    batch_window_timeout_seconds: float = Field(default=60.0, gt=0)
    """… or this long after it opened, whichever comes first."""
    report_timeout_seconds: float = Field(default=300.0, gt=0)
    """How long to wait for every agent to report the previous plan before planning anyway."""
    fill_spare: bool = False
    """Fill spare slots of reconfigured GPUs (see ``nos.planner.planner.plan``)."""
    profile_shares: float = Field(default=PROFILE_SHARES, ge=0, le=1)
    """Hold capacity for each MIG profile up to this fraction of its share of the demand (devices in
    use plus pending, in compute slices), so one backlogged profile cannot take every GPU; 0 (the
    default): off; 1.0 was measured (``nos.planner.shares``, ``nos plan --shares``)."""
    profile_mix: dict[str, NonNegativeFloat] = Field(default_factory=dict)
    """The profile mix the operator expects (MIG profile -> relative demand, e.g. pods running on
    average): with ``profile_shares`` above 0 the shares follow it instead of the measured demand,
    and only capacity no pending pod wants is held (``nos plan --mix``). Empty (the default): the
    measured demand."""
    plan_budget_seconds: float = Field(default=PLAN_BUDGET_SECONDS, gt=0)
    """Time a planning round may take (greedy passes and optimizing stage; ``nos plan --budget``)."""
    patch_attempts: int = Field(default=5, ge=1)
    """Conflict retries of one node's spec write."""
    known_geometries_file: Path | None = None
    """The original's ``knownMigGeometries`` list, mounted from a ConfigMap; None = every layout allowed."""
    liveness_timeout_seconds: float = Field(default=600.0, gt=0)
    """``/healthz`` fails when one cycle has been running longer than this."""
    fairness: FairnessConfig = Field(default_factory=FairnessConfig)
    leader_election: LeaderElectionConfig = Field(default_factory=LeaderElectionConfig)


class DevicePluginConfig(_Section):
    """The NVIDIA device plugin the agent restarts after a MIG change (``nos.agent.device_plugin``)."""

    namespace: str = "gpu-operator"
    label_selector: str = "app=nvidia-device-plugin-daemonset"
    """The GPU operator's label (the standalone Helm chart: app.kubernetes.io/name=nvidia-device-plugin)."""
    timeout_seconds: float = Field(default=180.0, gt=0)
    """How long to wait for the replacement plugin pod to run, and then for the node's allocatable."""
    wait_allocatable: bool = True
    """After a restart, wait (up to ``timeout_seconds``) until the node's allocatable shows the MIG
    devices that exist (the plugin registered them with kubelet); off in the simulator."""
    poll_seconds: float = Field(default=2.0, gt=0)
    find_attempts: int = Field(default=3, ge=1)
    """How many times to look for exactly one plugin pod before giving up (a rollout may be running)."""


class AgentConfig(_Section):
    """``nos agent`` (``nos.agent``)."""

    report_interval_seconds: float = Field(default=60.0, gt=0)
    """How often the agent reconciles and re-reports without a change (a report is only patched when
    it changed)."""
    pod_resources_socket: str = "/var/lib/kubelet/pod-resources/kubelet.sock"
    nvml_call_timeout_seconds: float | None = Field(default=60.0, gt=0)
    """Deadline of every NVML call; a call past it fails (GPU reported unreadable) and the liveness
    probe fails until it returns. None: no deadline (calls run on the caller's thread)."""
    liveness_timeout_seconds: float = Field(default=900.0, gt=0)
    """``/healthz`` fails when one reconcile has been running longer than this (device plugin restart
    and allocatable waits included)."""
    dry_run: bool = False
    """Plan only: no NVML mutation, no device plugin restart, no status patch."""
    restart_device_plugin: bool = True
    """Off where there is no device plugin (offline runs)."""
    device_plugin: DevicePluginConfig = Field(default_factory=DevicePluginConfig)


class ServerConfig(_Section):
    """``/metrics``, ``/healthz`` and ``/readyz`` of both processes (``nos.runtime.server``)."""

    metrics_port: int = Field(default=8080, ge=0, le=65535)
    health_port: int = Field(default=8081, ge=0, le=65535)


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"


class NosConfig(_Section):
    """The whole file; each process reads its own section plus ``server`` and ``log``."""

    partitioner: PartitionerConfig = Field(default_factory=PartitionerConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    log: LogConfig = Field(default_factory=LogConfig)


def _camel_path(parts: list[str]) -> list[str]:
    return [to_camel(p.lower()) for p in parts]


def env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """``NOS_SECTION__FIELD[__FIELD]`` variables as a nested camelCase mapping."""
    out: dict[str, Any] = {}
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX) :].split("__")
        if len(parts) < 2 or parts[0].lower() not in SECTIONS or not all(parts):
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        set_path(out, _camel_path(parts), value, source=name)
    return out


def flag_overrides(pairs: Mapping[str, Any]) -> dict[str, Any]:
    """CLI flags (dotted camelCase paths → value, None = not given) as a nested override mapping."""
    out: dict[str, Any] = {}
    for path, value in pairs.items():
        if value is not None:
            set_path(out, path.split("."), value)
    return out


def set_path(target: dict[str, Any], path: list[str], value: Any, source: str = "") -> None:
    cur = target
    for key in path[:-1]:
        nxt = cur.setdefault(key, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{source or '.'.join(path)}: {key} is not a section")
        cur = nxt
    cur[path[-1]] = value


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _one_line(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    more = f" (and {err.error_count() - 1} more problem(s))" if err.error_count() > 1 else ""
    return f"{source}: {where}: {first['msg']}{more}"


def load_config(
    path: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> NosConfig:
    """File (or defaults) ← env (``NOS_…``) ← ``overrides`` (a camelCase mapping from CLI flags)."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigError(f"{source}: cannot read: {e.strerror}") from e
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"{source}: not YAML{yaml_errors.where(e)}") from e
        if raw is not None and not isinstance(raw, dict):
            raise ConfigError(f"{source}: expected a mapping with sections {', '.join(SECTIONS)}")
        data = raw or {}
    from_env = env_overrides(os.environ if env is None else env)
    if from_env:
        source += " + NOS_* env"
    data = _merge(_merge(data, from_env), overrides or {})
    try:
        return NosConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_one_line(e, source)) from e
