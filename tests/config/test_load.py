"""Loading the config: file, env and flag overrides merged, defaults, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from nos.cli.partitioner import partitioner
from nos.config import ConfigError, env_overrides, load_config

FULL = """
partitioner:
  batchWindowIdleSeconds: 5
  batchWindowTimeoutSeconds: 30
  reportTimeoutSeconds: 120
  fillSpare: false
  knownGeometriesFile: /etc/nos/geometries.yaml
  livenessTimeoutSeconds: 120
  fairness: {agingStepSeconds: 600, reserveAfterSeconds: 1800}
  leaderElection: {enabled: true, leaseName: p, namespace: ns, leaseDurationSeconds: 20,
                   renewDeadlineSeconds: 12, retryPeriodSeconds: 3}
agent:
  reportIntervalSeconds: 30
  podResourcesSocket: /run/kubelet.sock
  nvmlCallTimeoutSeconds: 20
  livenessTimeoutSeconds: 300
  devicePlugin: {namespace: kube-system, labelSelector: app=dp, timeoutSeconds: 90}
server: {metricsPort: 9090, healthPort: 9091}
log: {level: debug, format: text}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "nos.yaml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    cfg = load_config(None, env={})
    p = cfg.partitioner
    assert (p.batch_window_idle_seconds, p.batch_window_timeout_seconds, p.report_timeout_seconds) == (10, 60, 300)
    a = cfg.agent
    assert a.report_interval_seconds == 60 and a.device_plugin.namespace == "gpu-operator"
    assert a.device_plugin.wait_allocatable and a.device_plugin.timeout_seconds == 180  # restart waits for allocatable
    assert (a.nvml_call_timeout_seconds, a.liveness_timeout_seconds) == (60, 900)
    assert p.fairness.aging_step_seconds is None and p.fairness.reserve_after_seconds is None  # off
    e = p.leader_election
    assert (e.lease_name, e.namespace, e.lease_duration_seconds) == ("nos-partitioner", "nos-system", 15)
    assert (cfg.server.metrics_port, cfg.server.health_port, cfg.log.format) == (8080, 8081, "json")


def test_full_file(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, FULL), env={}, overrides={"agent": {"dryRun": True}})
    p = cfg.partitioner
    assert (p.batch_window_idle_seconds, p.batch_window_timeout_seconds, p.fill_spare) == (5, 30, False)
    assert p.known_geometries_file == Path("/etc/nos/geometries.yaml")
    assert (p.fairness.aging_step_seconds, p.fairness.reserve_after_seconds, p.liveness_timeout_seconds) == (
        600,
        1800,
        120,
    )
    e = p.leader_election
    assert (e.lease_name, e.namespace, e.renew_deadline_seconds, e.retry_period_seconds) == ("p", "ns", 12, 3)
    a = cfg.agent
    assert a.dry_run and a.report_interval_seconds == 30
    assert (a.nvml_call_timeout_seconds, a.liveness_timeout_seconds) == (20, 300)
    assert (a.device_plugin.namespace, a.device_plugin.label_selector, a.device_plugin.timeout_seconds) == (
        "kube-system",
        "app=dp",
        90,
    )
    assert cfg.agent.pod_resources_socket == "/run/kubelet.sock" and cfg.log.level == "debug"


def test_env_overrides_file_and_flags_override_env(tmp_path: Path) -> None:
    env = {
        "NOS_PARTITIONER__BATCH_WINDOW_IDLE_SECONDS": "7",
        "NOS_PARTITIONER__LEADER_ELECTION__ENABLED": "false",
        "NOS_LOG__LEVEL": "warning",
        "NOS_KUBE_CACHE": "/not/config",  # other NOS_* variables are ignored
        "NOS_REALKUBE_REQUIRED": "1",
    }
    cfg = load_config(write(tmp_path, FULL), env=env, overrides={"log": {"level": "error"}})
    assert cfg.partitioner.batch_window_idle_seconds == 7
    assert cfg.partitioner.batch_window_timeout_seconds == 30  # from the file
    assert cfg.partitioner.leader_election.enabled is False
    assert cfg.log.level == "error"
    assert env_overrides({"NOS_SERVER__METRICS_PORT": "1"}) == {"server": {"metricsPort": 1}}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("partitioner: {batchWindowIdleSeconds: -1}", "partitioner.batchWindowIdleSeconds: Input should be greater"),
        ("partitioner: {batchWindowIdel: 1}", "partitioner.batchWindowIdel: Extra inputs are not permitted"),
        ("log: {level: loud}", "log.level: Input should be"),
        ("partitioner: {leaderElection: {renewDeadlineSeconds: 20}}", "leaseDurationSeconds > renewDeadlineSeconds"),
        ("partitioner: [1, 2", "not YAML at line"),
        ("- a list", "expected a mapping"),
    ],
)
def test_bad_files_give_one_line(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    message = str(err.value)
    assert expected in message and "\n" not in message and str(path) in message


def test_bad_env_value_names_its_source() -> None:
    with pytest.raises(ConfigError, match=r"NOS_\* env: server.metricsPort"):
        load_config(None, env={"NOS_SERVER__METRICS_PORT": "http"})


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml", env={})


def test_partitioner_command_exits_with_one_line_on_a_bad_file(tmp_path: Path) -> None:
    path = write(tmp_path, "server: {metricsPort: 99999}")
    result = CliRunner().invoke(partitioner, ["--config", str(path)], env={})
    assert result.exit_code == 2  # bad input
    lines = [line for line in result.output.splitlines() if line]
    assert len(lines) == 1 and "bad configuration" in lines[0] and "server.metricsPort" in lines[0]


def test_partitioner_command_reports_a_bad_geometries_file(tmp_path: Path) -> None:
    geo = tmp_path / "geo.yaml"
    geo.write_text("- models: [x]\n")
    for option in ("--geometries", "--known-geometries"):  # one name across commands; the old one kept
        result = CliRunner().invoke(partitioner, [option, str(geo), "--log-format", "text"], env={})
        assert result.exit_code == 2 and "allowedGeometries" in result.output
        [line] = [line for line in result.output.splitlines() if line]
        assert line.startswith("partitioner: ")
