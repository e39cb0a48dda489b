"""The configuration file of the in-cluster processes (``nos partitioner``, ``nos agent``).

One YAML file with camelCase keys (as Helm values are), validated with pydantic at start; values can be
overridden by environment variables and then by CLI flags. Env names: ``NOS_`` + the snake_case path
in upper case, sections joined by a double underscore, e.g. ``NOS_PARTITIONER__BATCH_WINDOW_IDLE_SECONDS=5``,
``NOS_PARTITIONER__LEADER_ELECTION__ENABLED=false``, ``NOS_LOG__LEVEL=debug``; values are read as YAML
scalars. Only ``NOS_PARTITIONER__``/``NOS_AGENT__``/``NOS_SERVER__``/``NOS_LOG__`` are read, so other
``NOS_*`` variables (test tiers, caches) never collide.

The sections convert into the models the code already uses (``PartitionerConfig``, ``AgentConfig``,
``DevicePluginConfig``); their defaults are taken from those models, so a default lives in one place.
Every problem becomes one ``ConfigError`` line, which the commands print before exiting.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from nos import yaml_errors
from nos.agent.agent import AgentConfig
from nos.agent.device_plugin import DevicePluginConfig
from nos.kube.leader import JITTER, ElectionConfig
from nos.partitioner.controller import PartitionerConfig

ENV_PREFIX = "NOS_"
SECTIONS = ("partitioner", "agent", "server", "log")


class ConfigError(ValueError):
    """The configuration cannot be used; the message is one line."""


def _default(model: type[BaseModel], name: str) -> Any:
    return model.model_fields[name].get_default(call_default_factory=True)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


class LeaderElectionSettings(_Section):
    enabled: bool = True
    lease_name: str = Field(default="nos-partitioner", min_length=1)
    namespace: str = Field(default="nos-system", min_length=1)
    lease_duration_seconds: float = Field(default=15.0, gt=0)
    renew_deadline_seconds: float = Field(default=10.0, gt=0)
    retry_period_seconds: float = Field(default=2.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> LeaderElectionSettings:
        if not self.lease_duration_seconds > self.renew_deadline_seconds > JITTER * self.retry_period_seconds:
            raise ValueError("needs leaseDurationSeconds > renewDeadlineSeconds > 1.2 * retryPeriodSeconds")
        return self

    def election(self) -> ElectionConfig:
        return ElectionConfig(
            lease_name=self.lease_name,
            namespace=self.namespace,
            lease_duration_s=self.lease_duration_seconds,
            renew_deadline_s=self.renew_deadline_seconds,
            retry_period_s=self.retry_period_seconds,
        )


class PartitionerSettings(_Section):
    batch_window_idle_seconds: float = Field(default=_default(PartitionerConfig, "batch_window_idle_seconds"), ge=0)
    batch_window_timeout_seconds: float = Field(
        default=_default(PartitionerConfig, "batch_window_timeout_seconds"), gt=0
    )
    report_timeout_seconds: float = Field(default=_default(PartitionerConfig, "report_timeout_seconds"), gt=0)
    fill_spare: bool = _default(PartitionerConfig, "fill_spare")
    plan_budget_seconds: float = Field(default=_default(PartitionerConfig, "plan_budget_seconds"), gt=0)
    known_geometries_file: Path | None = None
    """The original's ``knownMigGeometries`` list, mounted from a ConfigMap; None = every layout allowed."""
    leader_election: LeaderElectionSettings = Field(default_factory=LeaderElectionSettings)

    def partitioner_config(self) -> PartitionerConfig:
        return PartitionerConfig(
            batch_window_idle_seconds=self.batch_window_idle_seconds,
            batch_window_timeout_seconds=self.batch_window_timeout_seconds,
            report_timeout_seconds=self.report_timeout_seconds,
            fill_spare=self.fill_spare,
            plan_budget_seconds=self.plan_budget_seconds,
        )


class DevicePluginSettings(_Section):
    namespace: str = _default(DevicePluginConfig, "namespace")
    label_selector: str = _default(DevicePluginConfig, "label_selector")
    timeout_seconds: float = Field(default=_default(DevicePluginConfig, "timeout_s"), gt=0)


class AgentSettings(_Section):
    report_interval_seconds: float = Field(default=_default(AgentConfig, "report_interval_s"), gt=0)
    pod_resources_socket: str = "/var/lib/kubelet/pod-resources/kubelet.sock"
    device_plugin: DevicePluginSettings = Field(default_factory=DevicePluginSettings)

    def agent_config(self, dry_run: bool = False) -> AgentConfig:
        """In the cluster the restart also waits for the node's allocatable to show the new devices."""
        dp = self.device_plugin
        return AgentConfig(
            report_interval_s=self.report_interval_seconds,
            dry_run=dry_run,
            restart_device_plugin=True,
            device_plugin=DevicePluginConfig(
                namespace=dp.namespace,
                label_selector=dp.label_selector,
                timeout_s=dp.timeout_seconds,
                allocatable_timeout_s=dp.timeout_seconds,
            ),
        )


class ServerSettings(_Section):
    metrics_port: int = Field(default=8080, ge=0, le=65535)
    health_port: int = Field(default=8081, ge=0, le=65535)


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"


class NosConfig(_Section):
    partitioner: PartitionerSettings = Field(default_factory=PartitionerSettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    log: LogSettings = Field(default_factory=LogSettings)


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
