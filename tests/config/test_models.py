"""The settings models: a leaf module, each setting and rule once, components get their own section."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

import nos
from nos import config
from nos.config import (
    AgentConfig,
    DevicePluginConfig,
    LeaderElectionConfig,
    NosConfig,
    PartitionerConfig,
    load_config,
)
from nos.planner.planner import DEFAULT_BUDGET_S

SRC = Path(nos.__file__).parent


def _nos_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nos"):
            out |= {f"{node.module}.{a.name}" if node.module == "nos" else node.module for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("nos")}
    return out


def test_config_is_a_leaf() -> None:
    """Only the YAML error wording (itself importing nothing from nos) may be imported."""
    assert _nos_imports(Path(config.__file__)) <= {"nos.yaml_errors"}
    assert _nos_imports(SRC / "yaml_errors.py") == set()


def test_no_other_module_defines_a_setting_of_the_config() -> None:
    """A component's settings model lives only here: no second model with the same fields."""
    names = {
        name
        for model in (PartitionerConfig, AgentConfig, DevicePluginConfig, LeaderElectionConfig)
        for name in model.model_fields
        if name.endswith("_seconds")
    }
    for path in SRC.rglob("*.py"):
        if path == Path(config.__file__):
            continue
        tree = ast.parse(path.read_text())
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            fields = {t.target.id for t in cls.body if isinstance(t, ast.AnnAssign) and isinstance(t.target, ast.Name)}
            assert not fields & names, f"{path.relative_to(SRC)}: {cls.name} repeats {sorted(fields & names)}"


def test_every_duration_is_in_seconds() -> None:
    def walk(model: type[BaseModel]) -> list[str]:
        out = []
        for name, field in model.model_fields.items():
            out.append(name)
            if inspect.isclass(field.annotation) and issubclass(field.annotation, BaseModel):
                out += walk(field.annotation)
        return out

    names = walk(NosConfig)
    assert not [n for n in names if n.endswith("_s") or ("timeout" in n and not n.endswith("_seconds"))]


def test_the_lease_timing_rule_is_checked_once_with_the_file_keys() -> None:
    with pytest.raises(ValidationError, match=re.escape("leaseDurationSeconds > renewDeadlineSeconds > 1.2")):
        LeaderElectionConfig(lease_duration_seconds=10, renew_deadline_seconds=10, retry_period_seconds=2)
    with pytest.raises(ValidationError, match=re.escape("renewDeadlineSeconds > 1.2 * retryPeriodSeconds")):
        LeaderElectionConfig(renew_deadline_seconds=2, retry_period_seconds=2)
    LeaderElectionConfig(lease_duration_seconds=1, renew_deadline_seconds=0.6, retry_period_seconds=0.1)


def test_one_plan_budget_default_for_the_planner_and_the_partitioner() -> None:
    assert PartitionerConfig().plan_budget_seconds == DEFAULT_BUDGET_S == config.PLAN_BUDGET_SECONDS


def test_snake_and_camel_names_both_build_a_section() -> None:
    """Code builds sections with field names, files with camelCase keys: the same model."""
    assert AgentConfig(report_interval_seconds=5) == AgentConfig.model_validate({"reportIntervalSeconds": 5})
    assert (
        load_config(None, env={"NOS_AGENT__NVML_CALL_TIMEOUT_SECONDS": "null"}).agent.nvml_call_timeout_seconds is None
    )
