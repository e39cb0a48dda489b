"""What NVML reports on this machine, as JSON, and how it differs from the catalog
(``scripts/nvml_probe.py``). Strictly read-only: it takes the read half of the port only
(``ReadOnlyNvml``), so it cannot create or destroy anything even by mistake.

Run it on every new GPU model or driver before trusting the catalog's tables there.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Protocol

from nos.gpu.port import GpuInfo, GpuInstanceInfo, NvmlError, ProfileInfo
from nos.mig.catalog import Catalog, GpuModel, default_catalog


class ReadOnlyNvml(Protocol):
    def gpus(self) -> list[GpuInfo]: ...

    def profiles(self, gpu: int) -> list[ProfileInfo]: ...

    def gpu_instances(self, gpu: int) -> list[GpuInstanceInfo]: ...

    def busy_gpu_instances(self, gpu: int) -> set[int]: ...


def compare_profiles(model: GpuModel, profiles: list[ProfileInfo]) -> list[str]:
    """Differences between the driver's profile table and the catalog's model (empty: they agree)."""
    out: list[str] = []
    driver = {p.name: p for p in profiles}
    for name in model.profiles:
        if name not in driver:
            out.append(f"catalog profile {name} is not reported by the driver")
    for name, d in driver.items():
        c = model.profiles.get(name)
        if c is None:
            out.append(f"driver profile {name} (nvml_profile {d.nvml_profile}) is not in catalog model {model.name}")
            continue
        if d.nvml_profile != c.nvml_profile:
            out.append(f"{name}: nvml_profile {d.nvml_profile} (catalog {c.nvml_profile})")
        if d.slices != c.compute:
            out.append(f"{name}: {d.slices} compute slices (catalog {c.compute})")
        if d.max_count != c.max_count:
            out.append(f"{name}: max count {d.max_count} (catalog {c.max_count})")
        expected = tuple((s, c.slots) for s in c.starts)
        if tuple(sorted(d.placements)) != expected:
            out.append(f"{name}: placements {list(d.placements)} (catalog {list(expected)})")
    return out


def probe_gpu(nvml: ReadOnlyNvml, gpu: GpuInfo, catalog: Catalog) -> dict[str, Any]:
    model = catalog.model_for_product(gpu.name.replace(" ", "-"))
    out: dict[str, Any] = {
        "index": gpu.index,
        "name": gpu.name,
        "uuid": gpu.uuid,
        "mig": {"current": gpu.mig_enabled, "pending": gpu.mig_pending},
        "catalog_model": model.name if model is not None else None,
    }
    if not gpu.mig_enabled:
        return out
    try:
        profiles = nvml.profiles(gpu.index)
        out["profiles"] = [
            {
                "name": p.name,
                "nvml_profile": p.nvml_profile,
                "profile_id": p.profile_id,
                "slices": p.slices,
                "memory_mib": p.memory_mib,
                "max_count": p.max_count,
                "placements": [list(pl) for pl in p.placements],
            }
            for p in profiles
        ]
        out["gpu_instances"] = [
            {
                "gi_id": gi.gi_id,
                "profile": gi.profile,
                "start": gi.start,
                "size": gi.size,
                "compute_instances": list(gi.compute_instances),
                "device_uuids": list(gi.device_uuids),
            }
            for gi in nvml.gpu_instances(gpu.index)
        ]
        out["busy_gpu_instances"] = sorted(nvml.busy_gpu_instances(gpu.index))
        if model is not None:
            out["catalog_differences"] = compare_profiles(model, profiles)
    except NvmlError as e:  # report and go on: one odd GPU must not hide the others
        out["error"] = f"{type(e).__name__}: {e}"
    return out


def probe(nvml: ReadOnlyNvml, driver_version: str, catalog: Catalog | None = None) -> dict[str, Any]:
    cat = catalog or default_catalog()
    return {"driver_version": driver_version, "gpus": [probe_gpu(nvml, g, cat) for g in nvml.gpus()]}


def main() -> int:
    """Print the probe as JSON; exit 1 with one line on stderr when NVML is unavailable."""
    try:
        from nos.gpu.nvml import PynvmlNvml
    except ImportError as e:
        print(f"nvml_probe: nvidia-ml-py is not installed ({e})", file=sys.stderr)
        return 1
    try:
        nvml = PynvmlNvml()
    except NvmlError as e:
        print(f"nvml_probe: cannot initialise NVML: {e}", file=sys.stderr)
        return 1
    try:
        report = probe(nvml, nvml.driver_version())
    except NvmlError as e:
        print(f"nvml_probe: {e}", file=sys.stderr)
        return 1
    finally:
        nvml.close()
    print(json.dumps(report, indent=2))
    return 0
