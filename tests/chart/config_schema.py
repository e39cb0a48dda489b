"""The runtime contract of ``/etc/nos/config.yaml`` as a strict pydantic model.

The chart renders this file for a process another module implements; when ``nos.config`` exists its
own model is used as well, so a key renamed on either side fails here first.
"""

from __future__ import annotations

import importlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class LeaderElection(_Strict):
    enabled: bool
    leaseName: str = Field(min_length=1)
    namespace: str = Field(min_length=1)
    leaseDurationSeconds: int = Field(gt=0)
    renewDeadlineSeconds: int = Field(gt=0)
    retryPeriodSeconds: int = Field(gt=0)


class Fairness(_Strict):
    agingStepSeconds: float | None = Field(gt=0)
    reserveAfterSeconds: float | None = Field(gt=0)
    maxReservedShare: float = Field(ge=0, le=1)


class Partitioner(_Strict):
    batchWindowIdleSeconds: int = Field(gt=0)
    batchWindowTimeoutSeconds: int = Field(gt=0)
    reportTimeoutSeconds: int = Field(gt=0)
    fillSpare: bool
    profileShares: float = Field(ge=0, le=1)
    profileMix: dict[str, float]
    planBudgetSeconds: float = Field(gt=0)
    knownGeometriesFile: str
    livenessTimeoutSeconds: float = Field(gt=0)
    fairness: Fairness
    leaderElection: LeaderElection


class DevicePlugin(_Strict):
    namespace: str = Field(min_length=1)
    labelSelector: str = Field(min_length=1)
    timeoutSeconds: int = Field(gt=0)


class Agent(_Strict):
    reportIntervalSeconds: int = Field(gt=0)
    podResourcesSocket: str
    nvmlCallTimeoutSeconds: float | None = Field(gt=0)
    livenessTimeoutSeconds: float = Field(gt=0)
    devicePlugin: DevicePlugin


class Server(_Strict):
    metricsPort: int = Field(gt=0, lt=65536)
    healthPort: int = Field(gt=0, lt=65536)


class Log(_Strict):
    level: Literal["debug", "info", "warning", "error"]
    format: Literal["json", "text"]


class ConfigFile(_Strict):
    partitioner: Partitioner
    agent: Agent
    server: Server
    log: Log


def _project_models() -> list[type[BaseModel]]:
    """Top-level pydantic models of ``nos.config`` (if it exists) that have both process sections."""
    try:
        module = importlib.import_module("nos.config")
    except ImportError:
        return []
    out = []
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, BaseModel) and value.__module__ == module.__name__:
            keys = {f.alias or n for n, f in value.model_fields.items()} | set(value.model_fields)
            if {"partitioner", "agent"} <= keys:
                out.append(value)
    return out


def validate_config(data: dict[str, Any]) -> None:
    ConfigFile.model_validate(data)
    for model in _project_models():
        model.model_validate(data)
