"""A one-node stand-in for the Kubernetes API, for ``nos agent --spec FILE`` (no cluster).

The node's annotations come from a file; patches are kept in memory (the CLI prints them) and Events
are logged. There is no device plugin to restart.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from nos.contract.annotations import PARTITIONING_LABELS, PARTITIONING_MIG
from nos.kube.port import Event, NotFound, Obj

log = logging.getLogger(__name__)


class SpecFileError(ValueError):
    pass


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


class OfflineKube:
    """Implements the ``Kube`` port for one node held in memory."""

    def __init__(self, node: Obj) -> None:
        self.node = node
        self.patches: list[dict[str, str | None]] = []
        self.events: list[Event] = []

    def _check(self, name: str) -> None:
        if name != self.node["metadata"]["name"]:
            raise NotFound(f"node {name} not found")

    async def get_node(self, name: str) -> Obj:
        self._check(name)
        return copy.deepcopy(self.node)

    async def list_nodes(self, label_selector: str | None = None) -> list[Obj]:
        return [copy.deepcopy(self.node)]

    async def patch_node_annotations(
        self, name: str, patch: Mapping[str, str | None], resource_version: str | None = None
    ) -> Obj:
        self._check(name)
        annotations = self.node["metadata"].setdefault("annotations", {})
        for k, v in patch.items():
            if v is None:
                annotations.pop(k, None)
            else:
                annotations[k] = v
        self.patches.append(dict(patch))
        return copy.deepcopy(self.node)

    async def list_pods(
        self,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[Obj]:
        return []

    async def delete_pod(self, namespace: str, name: str) -> None:
        raise NotFound(f"pod {namespace}/{name} not found")

    async def create_event(self, event: Event) -> None:
        self.events.append(event)
        log.log(
            logging.WARNING if event.type == "Warning" else logging.INFO,
            "event %s: %s",
            event.reason,
            event.note,
        )

    def annotations(self) -> dict[str, Any]:
        return dict(self.node["metadata"].get("annotations") or {})
