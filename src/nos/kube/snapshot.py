"""Cluster snapshots for offline planning: what ``kubectl get nodes,pods -A -o yaml`` prints (a
``kind: List``), or a multi-document YAML of Nodes and Pods (Lists allowed inside)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nos import yaml_errors


class SnapshotError(ValueError):
    """The snapshot cannot be used; the message is one line for the user."""


@dataclass
class Snapshot:
    nodes: list[dict[str, Any]] = field(default_factory=list)
    pods: list[dict[str, Any]] = field(default_factory=list)
    ignored: int = 0
    """Objects of other kinds, skipped."""


def _describe(value: Any) -> str:
    """``found a number``, not ``found a int``."""
    kinds = {bool: "true/false", int: "a number", float: "a number", str: "a string", list: "a list"}
    text = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    return f"{kinds.get(type(value), type(value).__name__)} ({text})"


def _collect(doc: Any, snap: Snapshot, where: str) -> None:
    if doc is None:
        return
    if not isinstance(doc, dict):
        raise SnapshotError(f"{where}: expected Kubernetes objects (mappings), found {_describe(doc)}")
    kind = doc.get("kind")
    if kind == "List" or (isinstance(kind, str) and kind.endswith("List")):
        for item in doc.get("items") or ():
            _collect(item, snap, where)
    elif kind == "Node":
        snap.nodes.append(doc)
    elif kind == "Pod":
        snap.pods.append(doc)
    else:
        snap.ignored += 1


def parse_snapshot(text: str, source: str = "snapshot") -> Snapshot:
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as e:
        raise SnapshotError(f"{source} is not valid YAML{yaml_errors.where(e)}") from None
    snap = Snapshot()
    for doc in docs:
        _collect(doc, snap, source)
    if not snap.nodes:
        raise SnapshotError(f"{source} holds no Node objects (use: kubectl get nodes,pods -A -o yaml)")
    return snap


def load_snapshot(path: str) -> Snapshot:
    """Read a snapshot file, or standard input for ``-``."""
    if path == "-":
        return parse_snapshot(sys.stdin.read(), "standard input")
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise SnapshotError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise SnapshotError(f"{path} is not a text file") from None
    return parse_snapshot(text, path)
