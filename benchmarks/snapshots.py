"""``nos plan`` end to end on large snapshot files: wall time, planning time and peak memory.

    python benchmarks/snapshots.py                 # writes the snapshots, 3 runs each, best of 3
    python benchmarks/snapshots.py --docs          # ... and rewrites the table in docs/benchmarks.md

The snapshots are the heterogeneous timing instances (``benchmarks.hetero``: 1,000 nodes x 8 GPUs
of mixed models, 5,000 and 27,000 candidates) written as ``kubectl get nodes,pods -A -o yaml``
would print them: every object carries what the API adds (uid, resourceVersion, labels, owner
references, volumes, an environment variable, status conditions; nodes their images, conditions and node
info; no managedFields, which kubectl hides), so the files weigh what real ones do (the
27,000-pod one about 50 MB).
Each run is a fresh ``nos plan --json --progress FILE`` process; its peak resident memory is read
from ``getrusage`` of a wrapper that waits for it, its planning time from the progress line.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml

from benchmarks.hetero import HUGE, LARGE, HeteroSpec, generate_hetero

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS = REPO_ROOT / "docs" / "benchmarks.md"
START_MARK = "<!-- snapshot-results:start -->"
END_MARK = "<!-- snapshot-results:end -->"
_WRAPPER = (
    "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL,"
    " stderr=subprocess.PIPE, text=True); sys.stderr.write(r.stderr);"
    " print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)"
)


def decorate_pod(pod: dict[str, Any], i: int) -> dict[str, Any]:
    """What the API adds to a pod (and what a real workload spec carries)."""
    meta = pod["metadata"]
    app = f"job-{i % 97}"
    meta.update(
        {
            "uid": f"00000000-0000-4000-8000-{i:012d}",
            "resourceVersion": str(100000 + i),
            "generateName": f"{app}-7d9f8c6b5-",
            "labels": {"app": app, "pod-template-hash": "7d9f8c6b5", "team": f"team-{i % 13}"},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2024-01-01T00:00:00Z", "owner": f"user{i % 41}"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": f"{app}-7d9f8c6b5",
                    "uid": f"11111111-0000-4000-8000-{i % 97:012d}",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        }
    )
    spec = pod["spec"]
    for c in spec["containers"]:
        c.update(
            {
                "image": "nvcr.io/nvidia/pytorch:24.01-py3",
                "env": [{"name": "JOB_ID", "value": str(i)}],
                "volumeMounts": [
                    {"name": "config", "mountPath": "/etc/job"},
                    {"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"},
                ],
                "imagePullPolicy": "IfNotPresent",
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
            }
        )
    spec.update(
        {
            "volumes": [
                {"name": "config", "configMap": {"name": f"{app}-config"}},
                {"name": "kube-api-access", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}},
            ],
            "restartPolicy": "Always",
            "schedulerName": "default-scheduler",
            "serviceAccountName": "default",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
        }
    )
    pod["status"]["conditions"][0].update(
        {
            "lastProbeTime": None,
            "lastTransitionTime": "2024-01-01T00:00:01Z",
            "message": "0/1000 nodes are available: 1000 Insufficient nvidia.com/mig-1g.10gb. preemption: 0/1000"
            " nodes are available: 1000 No preemption victims found for incoming pod.",
        }
    )
    pod["status"]["qosClass"] = "Burstable"
    return pod


def decorate_node(node: dict[str, Any], i: int) -> dict[str, Any]:
    """What the API and the kubelet add to a node."""
    meta = node["metadata"]
    meta.update(
        {
            "uid": f"22222222-0000-4000-8000-{i:012d}",
            "resourceVersion": str(200000 + i),
        }
    )
    meta["labels"].update({"kubernetes.io/hostname": meta["name"], "kubernetes.io/os": "linux"})
    status = node["status"]
    status.update(
        {
            "capacity": dict(status["allocatable"]),
            "conditions": [
                {
                    "type": t,
                    "status": "False" if t != "Ready" else "True",
                    "reason": f"Kubelet{t}",
                    "message": f"kubelet reports {t}",
                    "lastHeartbeatTime": "2024-01-01T00:00:00Z",
                    "lastTransitionTime": "2024-01-01T00:00:00Z",
                }
                for t in ("MemoryPressure", "DiskPressure", "PIDPressure", "Ready")
            ],
            "images": [
                {"names": [f"registry.example/image-{k}@sha256:{k:064x}"], "sizeBytes": 1000000 * k} for k in range(12)
            ],
            "nodeInfo": {
                "kernelVersion": "5.15.0-91-generic",
                "containerRuntimeVersion": "containerd://1.7.2",
                "kubeletVersion": "v1.29.0",
                "osImage": "Ubuntu 22.04.3 LTS",
                "architecture": "amd64",
            },
        }
    )
    return node


def write_snapshot(spec: HeteroSpec, path: Path) -> int:
    """The instance as a ``kind: List`` YAML file; its size in bytes."""
    nodes, pods = generate_hetero(spec)
    items = [decorate_node(n, i) for i, n in enumerate(nodes)] + [decorate_pod(p, i) for i, p in enumerate(pods)]
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    with path.open("w") as f:
        yaml.dump({"apiVersion": "v1", "kind": "List", "items": items}, f, Dumper=dumper, sort_keys=False)
    return path.stat().st_size


@dataclass
class Run:
    wall_s: float
    plan_s: float
    peak_mb: float


def measure(path: Path, extra: Sequence[str] = ()) -> Run:
    """One fresh ``nos plan --json --progress`` process on ``path``."""
    import time

    nos = str(Path(sys.executable).with_name("nos"))
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", _WRAPPER, nos, "plan", "--json", "--progress", *extra, str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - started
    rss_kb, rc = out.stdout.split()
    if rc != "0":
        raise RuntimeError(f"nos plan failed on {path}: {out.stderr[-500:]}")
    planned = re.search(r"planned: .*\(([\d.]+) s\)", out.stderr)
    return Run(wall, float(planned[1]) if planned else float("nan"), int(rss_kb) / 1024)


def table(rows: Sequence[tuple[str, int, int, list[Run]]]) -> str:
    head = (
        "| snapshot | size | candidates | `nos plan --json` s (best of 3) | all runs s | planning s (best) "
        "| peak memory MB (max) |\n|---|---:|---:|---:|---|---:|---:|\n"
    )
    lines = []
    for name, size, candidates, runs in rows:
        best = min(runs, key=lambda r: r.wall_s)
        lines.append(
            f"| {name} | {size / 1e6:.1f} MB | {candidates} | {best.wall_s:.2f} | "
            f"{', '.join(f'{r.wall_s:.2f}' for r in runs)} | {min(r.plan_s for r in runs):.2f} | "
            f"{max(r.peak_mb for r in runs):.0f} |"
        )
    return head + "\n".join(lines) + "\n"


def write_docs(text: str, path: Path = DOCS) -> None:
    doc = path.read_text()
    if START_MARK not in doc:
        doc += f"\n{START_MARK}\n{END_MARK}\n"
    head, rest = doc.split(START_MARK, 1)
    _, tail = rest.split(END_MARK, 1)
    block = f"{START_MARK}\n<!-- generated by `python benchmarks/snapshots.py --docs`; do not edit by hand -->\n\n"
    path.write_text(head + block + text + END_MARK + tail)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="directory for the snapshot files (default: a temporary one)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--docs", action="store_true", help="rewrite the table in docs/benchmarks.md")
    parser.add_argument("--json", action="store_true", help="also measure the same snapshots as JSON")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="nos-snapshots-"))
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for spec in (LARGE, HUGE):
        path = out / f"{spec.name}.yaml"
        size = write_snapshot(spec, path)
        paths = [path]
        if args.json:
            jpath = out / f"{spec.name}.json"
            jpath.write_text(json.dumps(yaml.load(path.read_text(), Loader=yaml.CSafeLoader)))
            paths.append(jpath)
        for p in paths:
            runs = [measure(p) for _ in range(args.runs)]
            for r in runs:
                print(f"{p.name}: {r.wall_s:.2f} s end to end, planning {r.plan_s:.2f} s, peak {r.peak_mb:.0f} MB")
            rows.append((p.name, p.stat().st_size if p != path else size, spec.candidates, runs))
    text = table(rows)
    print(text)
    if args.docs:
        write_docs(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
