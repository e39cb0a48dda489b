"""Hardware acceptance (``scripts/hardware-acceptance``): one command a person with a MIG GPU runs to
see whether nos will work there, with a verdict per check (docs/nvml.md, "Hardware acceptance").

Read-only by default: it holds only the read half of the port, like the probe. Checks per GPU: the
catalog knows the model; MIG mode; the driver's profiles and placements match the catalog (through
the adapter, so the NVML grid translation is exercised); existing instances read back (complete,
half-created, split; MIG device UUIDs); GPU instance ids follow the driver's partition numbering;
the process list is readable (MIG monitor capability); and, once per node, whether the caller runs
in the host's PID namespace. Run it as the chart runs the agent (same capabilities) to check the
privileges, or as root to check the GPUs.

``--write GPU`` additionally creates, reads back and destroys every profile at every placement on
that GPU, which must have no instance (nothing else may use it meanwhile).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Literal

from nos.gpu.port import GpuInfo, Nvml, NvmlError, NvmlNoPermission
from nos.gpu.probe import ReadOnlyNvml, compare_profiles
from nos.gpu.simulated import swizzle_id
from nos.mig.catalog import Catalog, GpuModel, default_catalog

Verdict = Literal["PASS", "WARN", "FAIL", "SKIP"]
_NEEDS_CONFIG = "needs the MIG config capability: run as root, or as the chart runs the agent"


@dataclass(frozen=True)
class Check:
    name: str
    verdict: Verdict
    detail: str


def host_pid_namespace(proc: Path = Path("/proc")) -> bool:
    """Kernel threads (pid 2, kthreadd) are visible only in the host's PID namespace."""
    try:
        return (proc / "2" / "comm").read_text().strip() == "kthreadd"
    except OSError:
        return False


def _model_check(gpu: GpuInfo, model: GpuModel | None) -> Check:
    name = f"gpu{gpu.index} model"
    if model is None:
        return Check(name, "FAIL", f"{gpu.name} is not in the catalog (nos leaves this GPU alone)")
    grid = f", NVML grid {model.nvml_grid}" if model.nvml_grid != 1 else ""
    return Check(name, "PASS", f"{gpu.name} is catalog model {model.name}{grid}")


def _mig_check(gpu: GpuInfo) -> Check:
    name = f"gpu{gpu.index} mig mode"
    if gpu.mig_enabled:
        return Check(name, "PASS", "enabled")
    if gpu.mig_pending:
        return Check(name, "FAIL", "enabled after the next GPU reset (reset the GPU or reboot)")
    return Check(name, "FAIL", "disabled (nvidia-smi -i N -mig 1)")


def _denied(name: str, e: NvmlError, hint: str) -> Check:
    text = str(e) if e.nvml_name in str(e) else f"{e.nvml_name}: {e}"
    return Check(name, "FAIL", text + (f"; {hint}" if isinstance(e, NvmlNoPermission) else ""))


def check_gpu(nvml: ReadOnlyNvml, gpu: GpuInfo, model: GpuModel | None) -> list[Check]:
    out = [_model_check(gpu, model), _mig_check(gpu)]
    i = gpu.index
    if model is None or not gpu.mig_enabled:
        return [*out, Check(f"gpu{i} mig checks", "SKIP", "needs a catalog model with MIG enabled")]
    try:
        profiles = nvml.profiles(i)
    except NvmlError as e:
        return [*out, _denied(f"gpu{i} profiles", e, _NEEDS_CONFIG)]
    diffs = compare_profiles(model, profiles)
    if diffs:
        out.append(Check(f"gpu{i} profiles", "FAIL", "; ".join(diffs)))
    else:
        out.append(
            Check(f"gpu{i} profiles", "PASS", f"{len(profiles)} profiles and their placements match the catalog")
        )
    try:
        instances = nvml.gpu_instances(i)
    except NvmlError as e:
        return [*out, _denied(f"gpu{i} instances", e, _NEEDS_CONFIG)]
    known = {p.name for p in profiles}
    complete = [g for g in instances if g.compute_instances and not g.split]
    half = [g for g in instances if not g.compute_instances]
    split = [g for g in instances if g.split]
    summary = f"{len(instances)} read back ({len(complete)} complete, {len(half)} half-created, {len(split)} split)"
    problems = [f"{g.profile}@{g.start} has an unknown profile" for g in instances if g.profile not in known]
    problems += [
        f"{g.profile}@{g.start} (gi {g.gi_id}) has no MIG device UUID"
        for g in instances
        if g.compute_instances and len(g.device_uuids) != len(g.compute_instances)
    ]
    if problems:
        out.append(Check(f"gpu{i} instances", "FAIL", f"{summary}: " + "; ".join(problems)))
    elif split:
        what = ", ".join(f"{g.profile}@{g.start}" for g in split)
        out.append(Check(f"gpu{i} instances", "WARN", f"{summary}; split by another tool, nos replaces them: {what}"))
    else:
        out.append(Check(f"gpu{i} instances", "PASS", summary))
    odd = [
        f"{g.profile}@{g.start} is {g.gi_id}, not {swizzle_id(model, g.size, g.start)}"
        for g in instances
        if g.gi_id != swizzle_id(model, g.size, g.start)
    ]
    if odd:
        out.append(
            Check(
                f"gpu{i} instance ids",
                "WARN",
                "not the partition numbering (nos does not rely on it): " + "; ".join(odd),
            )
        )
    elif instances:
        out.append(Check(f"gpu{i} instance ids", "PASS", "follow the partition numbering (same place, same id)"))
    try:
        busy = nvml.busy_gpu_instances(i)
    except NvmlError as e:
        hint = "set NVIDIA_MIG_MONITOR_DEVICES=all (the chart does) or run as root"
        return [*out, _denied(f"gpu{i} processes", e, hint)]
    out.append(Check(f"gpu{i} processes", "PASS", f"readable (monitor capability); busy instances: {sorted(busy)}"))
    return out


def pid_namespace_check(host_pid: bool) -> Check:
    if host_pid:
        return Check("pid namespace", "PASS", "host PID namespace: NVML lists every process")
    return Check(
        "pid namespace",
        "WARN",
        "own PID namespace: NVML lists only this namespace's processes (migAgent.hostPID off); "
        "kubelet PodResources and the driver's IN_USE refusal guard destroys",
    )


def write_checks(nvml: Nvml, gpu: int, model: GpuModel) -> list[Check]:
    """Create, read back and destroy every profile at every placement on an empty GPU."""
    if nvml.gpu_instances(gpu):
        return [Check(f"gpu{gpu} write", "FAIL", "refused: the GPU has instances (destroy them first)")]
    out: list[Check] = []
    for p in model.profiles.values():
        name, problems = f"gpu{gpu} write {p.name}", []
        for start in p.starts:
            try:
                gi = nvml.create_compute_instance(gpu, nvml.create_gpu_instance(gpu, p.name, start).gi_id)
                seen = [g for g in nvml.gpu_instances(gpu) if g.gi_id == gi.gi_id]
                if [(g.profile, g.start, g.size, bool(g.device_uuids)) for g in seen] != [
                    (p.name, start, p.slots, True)
                ]:
                    problems.append(f"@{start} read back as {seen}")
                nvml.destroy_gpu_instance(gpu, gi.gi_id)
            except NvmlError as e:
                problems.append(f"@{start}: {e.nvml_name}: {e}")
                for g in nvml.gpu_instances(gpu):  # leave the GPU as found
                    nvml.destroy_gpu_instance(gpu, g.gi_id)
        starts = ",".join(map(str, p.starts))
        out.append(
            Check(name, "FAIL", "; ".join(problems))
            if problems
            else Check(name, "PASS", f"created, read back and destroyed at {starts}")
        )
    return out


def run(
    nvml: Nvml,
    driver_version: str,
    catalog: Catalog | None = None,
    write_gpu: int | None = None,
    host_pid: Callable[[], bool] | None = None,
) -> list[Check]:
    """Every check, in order; ``host_pid`` tells whether this process is in the host's PID namespace."""
    cat = catalog or default_catalog()
    out = [Check("nvml", "PASS", f"initialised; driver {driver_version}, nvidia-ml-py {_bindings_version()}")]
    gpus = nvml.gpus()
    if not gpus:
        return [*out, Check("gpus", "FAIL", "NVML reports no GPU")]
    for g in gpus:
        out += check_gpu(nvml, g, cat.model_for_product(g.name.replace(" ", "-")))
    out.append(pid_namespace_check((host_pid or host_pid_namespace)()))
    if write_gpu is not None:
        target = next((g for g in gpus if g.index == write_gpu), None)
        model = cat.model_for_product(target.name.replace(" ", "-")) if target is not None else None
        if target is None or model is None or not target.mig_enabled:
            out.append(Check(f"gpu{write_gpu} write", "FAIL", "no such GPU with a catalog model and MIG enabled"))
        else:
            out += write_checks(nvml, write_gpu, model)
    return out


def _bindings_version() -> str:
    try:
        return metadata.version("nvidia-ml-py")
    except metadata.PackageNotFoundError:
        return "unknown"


def render(checks: Sequence[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"{c.verdict:<4}  {c.name:<{width}}  {c.detail}" for c in checks]
    counts = {v: sum(c.verdict == v for c in checks) for v in ("PASS", "WARN", "FAIL", "SKIP")}
    overall = "FAIL" if counts["FAIL"] else "PASS"
    lines.append(
        f"verdict: {overall} ({counts['PASS']} passed, {counts['WARN']} warnings, "
        f"{counts['FAIL']} failed, {counts['SKIP']} skipped)"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 when no check failed, 1 otherwise (also when NVML cannot be initialised)."""
    parser = argparse.ArgumentParser(prog="hardware-acceptance", description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", type=int, metavar="GPU", help="also create/destroy every profile on this empty GPU")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    args = parser.parse_args(argv)
    try:
        from nos.gpu.nvml import PynvmlNvml
    except ImportError as e:
        print(f"FAIL  nvml  nvidia-ml-py is not installed ({e})")
        return 1
    try:
        nvml = PynvmlNvml()
    except NvmlError as e:
        print(f"FAIL  nvml  cannot initialise NVML: {e}")
        return 1
    try:
        checks = run(nvml, nvml.driver_version(), write_gpu=args.write)
    finally:
        nvml.close()
    if args.json:
        print(
            json.dumps(
                {"checks": [asdict(c) for c in checks], "ok": not any(c.verdict == "FAIL" for c in checks)}, indent=2
            )
        )
    else:
        print(render(checks))
    return 1 if any(c.verdict == "FAIL" for c in checks) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
