#!/usr/bin/env python3
"""Read-only NVML probe: print as JSON what nos' NVML adapter sees on this machine (driver version,
GPUs, MIG mode; with MIG enabled the profile table, placements, existing GPU/compute instances,
MIG device UUIDs, busy instances) and how the driver's profile table differs from nos' catalog.

It never creates, destroys or changes anything (it only holds the read half of the adapter).
Exit status 1 with one line on stderr when NVML cannot be initialised. See docs/nvml.md.

    python scripts/nvml_probe.py > probe.json
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import nos  # noqa: F401
except ImportError:  # run from a checkout without installing nos
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from nos.gpu.probe import main

if __name__ == "__main__":
    sys.exit(main())
