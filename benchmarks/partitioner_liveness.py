"""How long one big partitioner cycle blocks the event loop that renews the Lease and answers probes.

    python benchmarks/partitioner_liveness.py                      # 500 nodes x 8 A100, 5,000 pending pods
    python benchmarks/partitioner_liveness.py --pods 50000         # the figure in docs/operations.md
    python benchmarks/partitioner_liveness.py --inline             # planning on the loop (before the worker thread)

One ``Partitioner.cycle()`` on the in-memory API (every GPU one free 7g instance, pods asking 1g/2g/3g)
while a 10 ms ticker records the gaps of the loop: the longest gap is how long ``/healthz`` and Lease
renewals would have waited. Prints the cycle time, the longest and p99 gap and the peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.generate import node_object, pending_pod
from nos.config import PartitionerConfig
from nos.kube.fake.memory import MemoryKube
from nos.mig.layout import Instance
from nos.partitioner.controller import Partitioner, inline

PROFILES = ("1g.10gb", "2g.20gb", "3g.40gb")


async def measure(nodes: int, pods: int, offload_to_thread: bool) -> str:
    kube = MemoryKube()
    whole = [Instance(0, "7g.80gb")]
    for i in range(nodes):
        kube.add_node(node_object(f"n{i}", "A100-80GB", {g: whole for g in range(8)}, 128_000, 1024 * 1024, "zone-a"))
    for j in range(pods):
        kube.add_pod(pending_pod(f"p{j}", PROFILES[j % len(PROFILES)], "1", "1Gi"))
    partitioner = Partitioner(
        kube,
        time.time,
        PartitionerConfig(batch_window_idle_seconds=0),
        offload=asyncio.to_thread if offload_to_thread else inline,
    )
    gaps: list[float] = []

    async def tick() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0)
    started = time.perf_counter()
    result = await partitioner.cycle()
    took = time.perf_counter() - started
    await asyncio.sleep(0.02)
    ticker.cancel()
    gaps.sort()
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    mode = "worker thread" if offload_to_thread else "inline"
    return (
        f"{mode}: {nodes} nodes x 8 GPUs, {pods} pending pods: cycle {took:.1f} s, {len(result.written)} node(s) "
        f"written; longest loop stall {gaps[-1] * 1000:.0f} ms, p99 {gaps[int(len(gaps) * 0.99)] * 1000:.0f} ms; "
        f"peak RSS {rss_mib:.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--pods", type=int, default=5000)
    parser.add_argument("--inline", action="store_true", help="plan on the event loop (the behaviour before)")
    args = parser.parse_args()
    print(asyncio.run(measure(args.nodes, args.pods, not args.inline)))


if __name__ == "__main__":
    main()
