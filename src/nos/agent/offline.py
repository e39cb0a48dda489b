"""The Node of ``nos agent --spec FILE`` (no cluster): read from a file, then served by the in-memory
API (``nos.kube.fake.memory.MemoryKube``); the CLI prints the status the agent patches. There is no device
plugin to restart."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import yaml

from nos.contract.annotations import PARTITIONING_LABELS, PARTITIONING_MIG
from nos.kube.port import Obj


class SpecFileError(ValueError):
    pass


def offline_node(node_name: str) -> Obj:
    """The opted-in Node of an offline run without a spec file: no spec, so nothing changes and the
    agent only reports what exists."""
    return {"metadata": {"name": node_name, "labels": {PARTITIONING_LABELS[1]: PARTITIONING_MIG}, "annotations": {}}}


def load_node_file(path: Path, node_name: str) -> Obj:
    """A Node from a YAML/JSON file holding either a Node object (``metadata.annotations``) or just
    the annotations mapping. A bare mapping means the user asks for it to be applied, so the node is
    given the MIG opt-in label."""
    try:
        raw = yaml.safe_load(path.read_text()) if path.suffix != ".json" else json.loads(path.read_text())
    except (OSError, yaml.YAMLError, json.JSONDecodeError) as e:
        raise SpecFileError(f"cannot read {path}: {e}") from e
    if not isinstance(raw, dict):
        raise SpecFileError(f"{path}: expected a mapping of annotations or a Node object")
    if "metadata" in raw:
        node = copy.deepcopy(raw)
        node["metadata"].setdefault("name", node_name)
    else:
        node = {
            "metadata": {
                "name": node_name,
                "labels": {PARTITIONING_LABELS[1]: PARTITIONING_MIG},
                "annotations": raw,
            }
        }
    annotations = node["metadata"].get("annotations") or {}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()):
        raise SpecFileError(f'{path}: annotation keys and values must be strings (quote counts: "2")')
    node["metadata"]["annotations"] = dict(annotations)
    return node
