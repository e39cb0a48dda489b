"""The simulated-node file read by ``nos agent --backend simulated:FILE`` (see docs/nvml.md).

Only the shape is checked here (pydantic, one-line errors with the location); whether an instance
fits on its GPU is decided by ``SimulatedNvml`` itself, with the same rules NVML applies, so a file
can never describe a layout the simulated driver would have refused.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nos import yaml_errors

_SHORT = re.compile(r"^\s*(?P<profile>[^@\s]+)@(?P<start>\d+)(?P<busy>\*?)\s*$")


class SimulatedNodeError(ValueError):
    """The simulated-node file is malformed or describes a layout NVML would refuse (one line)."""


class ComputeEntry(BaseModel):
    """One compute instance of a GPU instance split by another tool (``nvidia-smi mig -cci``)."""

    model_config = ConfigDict(extra="forbid")
    slices: int = Field(ge=1)
    device_uuid: str | None = Field(default=None, pattern=r"^MIG-")


class InstanceEntry(BaseModel):
    """An existing GPU instance. Short form: ``"3g.40gb@4"`` (``"1g.10gb@0*"`` = busy)."""

    model_config = ConfigDict(extra="forbid")
    profile: str
    start: int = Field(ge=0)
    compute_instance: bool = True
    """False: a half-created instance (GPU instance without its compute instance, no device UUID)."""
    busy: bool = False
    """Shorthand for one running process (a made-up pid) when ``pids`` is not given."""
    pids: list[int] = Field(default_factory=list)
    gi_id: int | None = Field(default=None, ge=0, le=255)
    """Checked, not chosen: the driver numbers a GPU instance by its placement."""
    device_uuid: str | None = None
    compute_instances: list[ComputeEntry] | None = None
    """Several (or smaller) compute instances made by another tool instead of the spanning one."""

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, raw: Any) -> Any:
        if not isinstance(raw, str):
            return raw
        m = _SHORT.match(raw)
        if m is None:
            raise ValueError(f"expected PROFILE@START (e.g. 3g.40gb@4), got {raw!r}")
        return {"profile": m["profile"], "start": int(m["start"]), "busy": bool(m["busy"])}

    @model_validator(mode="after")
    def _consistent(self) -> InstanceEntry:
        if (self.busy or self.pids) and not self.compute_instance:
            raise ValueError("a busy instance needs its compute instance (processes run in one)")
        if self.device_uuid is not None and not self.compute_instance:
            raise ValueError("device_uuid given for an instance without compute instance")
        if self.device_uuid is not None and not self.device_uuid.startswith("MIG-"):
            raise ValueError(f"device_uuid must start with 'MIG-', got {self.device_uuid!r}")
        if self.compute_instances is not None and (self.device_uuid is not None or not self.compute_instances):
            raise ValueError("compute_instances lists the device UUIDs itself and must not be empty")
        return self


class GpuEntry(BaseModel):
    """One GPU (or ``count`` identical GPUs) of the node."""

    model_config = ConfigDict(extra="forbid")
    model: str
    """NVML product name (``NVIDIA A100-SXM4-80GB``), ``gpu.product`` label, or catalog model name."""
    count: int = Field(default=1, ge=1, le=64)
    mig: bool = True
    mig_pending: bool | None = None
    """MIG mode after the next GPU reset; defaults to ``mig`` (no change pending)."""
    name: str | None = None
    """Product name NVML reports; defaults to ``model`` when that has spaces, else the model's usual one."""
    uuid: str | None = None
    next_gi_id: int | None = Field(default=None, ge=1, le=255)
    """Ignored (files written before GPU instance ids followed the driver's numbering)."""
    instances: list[InstanceEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> GpuEntry:
        if self.count > 1 and self.uuid is not None:
            raise ValueError("uuid can only be given for count: 1")
        if self.instances and not self.mig:
            raise ValueError("a GPU with MIG disabled cannot have GPU instances")
        if self.count > 1 and any(i.gi_id is not None or i.device_uuid for i in self.instances):
            raise ValueError("gi_id/device_uuid can only be given for count: 1")
        return self


class CallerEntry(BaseModel):
    """What the calling process may do (``nos.gpu.simulated.Caller``): root on the host by default."""

    model_config = ConfigDict(extra="forbid")
    config: bool = True
    monitor: bool = True
    pid_namespace: str = Field(default="host", min_length=1)


class NodeFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    node: str = "sim"
    """Seed of the generated UUIDs: give two simulated nodes different ones."""
    driver_version: str = "570.133.20"
    uuid_serial: int = Field(default=0, ge=0)
    """Counter behind fresh MIG device UUIDs (written by ``save`` so a rerun never repeats one)."""
    gpus: list[GpuEntry] = Field(min_length=1)
    caller: CallerEntry = Field(default_factory=CallerEntry)
    """e.g. ``{monitor: false, pid_namespace: agent}`` to see what an agent container without the
    MIG monitor capability and without hostPID sees."""

    @field_validator("driver_version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("driver_version must not be empty")
        return v


def parse_node(raw: object, source: str = "") -> NodeFile:
    """Validate already-parsed YAML/JSON; errors name the first problem and its location (prefixed
    with ``source`` when given; ``load`` leaves it out because its callers name the file)."""
    try:
        return NodeFile.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        msg = str(first["msg"]).removeprefix("Value error, ")
        prefix = f"{source}: " if source else ""
        raise SimulatedNodeError(f"{prefix}{msg}{f' at {where}' if where else ''}{more}") from e


def read_node_file(path: Path) -> NodeFile:
    try:
        text = path.read_text()
    except OSError as e:
        raise SimulatedNodeError(f"cannot read {path}: {e.strerror}") from e
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SimulatedNodeError(f"not YAML{yaml_errors.where(e)}") from e
    return parse_node(raw)


def write_node_file(path: Path, data: dict[str, Any]) -> None:
    """Write atomically (temp file + rename): a crash mid-save never leaves half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    header = "# simulated node state written by nos (nos.gpu.simulated); see docs/nvml.md\n"
    tmp.write_text(header + yaml.safe_dump(data, sort_keys=False, default_flow_style=None))
    tmp.replace(path)
