"""Cluster snapshots for offline planning: what ``kubectl get nodes,pods -A -o yaml`` (or ``-o json``)
prints (a ``kind: List``), or a multi-document YAML of Nodes and Pods (Lists allowed inside).

Large snapshots are the point of ``nos plan`` on real clusters (a 50 MB List of 27,000 pods), so
JSON is parsed by the standard library's C parser and YAML by libyaml's C parser when PyYAML has
it (``yaml.CSafeLoader``; same safe subset and values as ``safe_load``), read from the file as a
stream, objects built from its events with a List's items taken one by one
(``nos.kube.views.yaml_stream``), so neither the text nor a node graph is held besides the objects.
The in-cluster partitioner never gets here: it plans on the objects its watches hold.
"""

from __future__ import annotations

import gc
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from nos import yaml_errors
from nos.kube.views import yaml_stream

SafeLoader = yaml_stream.Loader
"""libyaml's loader when PyYAML was built with it (the wheels are), else the pure-Python one."""


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


def _documents(stream: IO[str] | str, source: str, snap: Snapshot) -> Iterator[Any]:
    """The snapshot's documents: JSON when it parses as JSON (``kubectl -o json``; a YAML flow
    mapping also starts with ``{``, so anything else is YAML), else YAML, streamed."""
    source_stream: IO[str] | _Prefixed | str
    if isinstance(stream, str):
        head = stream.lstrip()[:1]
        source_stream = stream
    else:
        head = ""
        while not head:
            chunk = stream.read(1)
            if not chunk:
                return
            if not chunk.isspace():
                head = chunk
        source_stream = head + stream.read() if head in "{[" else _Prefixed(head, stream)
    if head in ("{", "[") and isinstance(source_stream, str):
        try:
            yield json.loads(source_stream)
            return
        except json.JSONDecodeError:
            pass  # YAML then (flow style); its error message is the one to give
    try:
        yield from yaml_stream.documents(source_stream, lambda item: _collect(item, snap, source))
    except yaml.YAMLError as e:
        raise SnapshotError(f"{source} is not valid YAML{yaml_errors.where(e)}") from None


class _Prefixed:
    """A text stream with its first character (read to tell JSON from YAML) put back."""

    def __init__(self, head: str, stream: IO[str]) -> None:
        self._head = head
        self._stream = stream

    def read(self, size: int = -1) -> str:
        head, self._head = self._head, ""
        if size is None or size < 0:
            return head + self._stream.read()
        return head + self._stream.read(max(0, size - len(head)))


def _read(stream: IO[str] | str, source: str) -> Snapshot:
    snap = Snapshot()
    docs = _documents(stream, source, snap)
    # parsing makes millions of small acyclic containers: the cyclic collector would walk them over
    # and over as they pile up (measured: half of the YAML loading time) and can free none of them
    collecting = gc.isenabled()
    gc.disable()
    try:
        for doc in docs:
            _collect(doc, snap, source)
    finally:
        if collecting:
            gc.enable()
    if not snap.nodes:
        raise SnapshotError(f"{source} holds no Node objects (use: kubectl get nodes,pods -A -o yaml)")
    return snap


def parse_snapshot(text: str, source: str = "snapshot") -> Snapshot:
    return _read(text, source)


def load_snapshot(path: str) -> Snapshot:
    """Read a snapshot file, or standard input for ``-``."""
    if path == "-":
        return _read(sys.stdin, "standard input")
    try:
        with Path(path).open(encoding="utf-8") as f:
            return _read(f, path)
    except OSError as e:
        raise SnapshotError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise SnapshotError(f"{path} is not a text file") from None
