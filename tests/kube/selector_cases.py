"""Label-selector cases both backends must answer alike: the fake API server and a real apiserver."""

from __future__ import annotations

_MIG = {"nos.nebuly.com/gpu-partitioning": "mig"}

NODE_LABELS: dict[str, dict[str, str]] = {
    "a": {**_MIG, "gpu": "a100"},
    "b": {**_MIG, "gpu": "v100"},
    "c": {"gpu": "h100"},
    "d": {},
}
"""The nodes each case is listed against, by name."""

LABEL_SELECTOR_CASES: list[tuple[str | None, list[str]]] = [
    (None, ["a", "b", "c", "d"]),
    ("nos.nebuly.com/gpu-partitioning=mig", ["a", "b"]),
    ("nos.nebuly.com/gpu-partitioning!=mig", ["c", "d"]),  # != also matches nodes without the key
    ("gpu in (a100,h100)", ["a", "c"]),
    ("gpu notin (a100)", ["b", "c", "d"]),
    ("gpu", ["a", "b", "c"]),
    ("!gpu", ["d"]),
    ("nos.nebuly.com/gpu-partitioning=mig,gpu=a100", ["a"]),
]
"""(label selector, the names of ``NODE_LABELS`` it selects, in name order)."""
