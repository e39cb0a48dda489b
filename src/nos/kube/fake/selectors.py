"""Label and field selectors, parsed and matched the way kube-apiserver does.

Shared by ``MemoryKube`` and the test fake API server so both filter exactly alike; the grammar is
the apiserver's (``k8s.io/apimachinery/pkg/labels`` and ``.../fields``), including the rules that
``!=`` and ``notin`` also match objects *without* the key.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nos.kube.port import Obj


class SelectorError(ValueError):
    """A selector the apiserver would reject (HTTP 400)."""


_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET_RE = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s*\(([^)]*)\)\s*$")
_BIN_RE = re.compile(rf"^\s*({_KEY})\s*(==|!=|=)\s*({_VALUE})\s*$")
_EXISTS_RE = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        # "!=" and "notin" match objects that lack the key, as in the apiserver
        return not present or value not in self.values


def _split_top_level(selector: str) -> list[str]:
    """Split on commas outside parentheses (``a in (x,y),b`` is two requirements)."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"unbalanced ')' in selector {selector!r}")
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth != 0:
        raise SelectorError(f"unbalanced '(' in selector {selector!r}")
    parts.append("".join(current))
    return parts


def parse_label_selector(selector: str | None) -> list[Requirement]:
    """Parse ``app=x,tier!=y,env in (a,b),!legacy,gpu``; empty or None selects everything."""
    if selector is None or not selector.strip():
        return []
    reqs: list[Requirement] = []
    for part in _split_top_level(selector):
        if m := _SET_RE.match(part):
            values = frozenset(v.strip() for v in m.group(4).split(",") if v.strip())
            if not values:
                raise SelectorError(f"empty value set in {part!r}")
            reqs.append(Requirement(m.group(1), m.group(3), values))
        elif m := _BIN_RE.match(part):
            op = "=" if m.group(3) in ("=", "==") else "!="
            reqs.append(Requirement(m.group(1), op, frozenset([m.group(4)])))
        elif m := _EXISTS_RE.match(part):
            reqs.append(Requirement(m.group(2), "!" if m.group(1) else "exists"))
        else:
            raise SelectorError(f"unable to parse requirement {part!r}")
    return reqs


def labels_match(reqs: list[Requirement], obj: Obj) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(r.matches(labels) for r in reqs)


def _nested(path: str) -> Callable[[Obj], str]:
    def get(obj: Obj) -> str:
        cur: Any = obj
        for part in path.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if cur is None:
            return ""
        if isinstance(cur, bool):
            return "true" if cur else "false"
        return str(cur)

    return get


_COMMON_FIELDS = ("metadata.name", "metadata.namespace")
# Field labels the real apiserver supports per resource (a subset of them: what nos queries).
SUPPORTED_FIELDS: dict[str, tuple[str, ...]] = {
    "pods": (*_COMMON_FIELDS, "spec.nodeName", "status.phase", "spec.schedulerName"),
    "nodes": ("metadata.name", "spec.unschedulable"),
}


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    equal: bool
    value: str

    def matches(self, obj: Obj) -> bool:
        return (_nested(self.field)(obj) == self.value) == self.equal


def parse_field_selector(selector: str | None, resource: str) -> list[FieldRequirement]:
    """Parse ``spec.nodeName=n1,status.phase!=Succeeded``; unsupported fields raise like the apiserver."""
    if selector is None or not selector.strip():
        return []
    supported = SUPPORTED_FIELDS.get(resource, _COMMON_FIELDS)
    reqs: list[FieldRequirement] = []
    for part in selector.split(","):
        m = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|!=|=)\s*(.*?)\s*$", part)
        if not m:
            raise SelectorError(f"invalid field selector requirement {part!r}")
        if m.group(1) not in supported:
            raise SelectorError(f'field label not supported: "{m.group(1)}" for {resource}')
        reqs.append(FieldRequirement(m.group(1), m.group(2) != "!=", m.group(3)))
    return reqs


def fields_match(reqs: list[FieldRequirement], obj: Obj) -> bool:
    return all(r.matches(obj) for r in reqs)


@dataclass(frozen=True)
class Selector:
    """A parsed label + field selector pair for one resource."""

    labels: tuple[Requirement, ...] = ()
    fields: tuple[FieldRequirement, ...] = ()

    @classmethod
    def parse(cls, resource: str, label_selector: str | None, field_selector: str | None) -> Selector:
        return cls(
            tuple(parse_label_selector(label_selector)),
            tuple(parse_field_selector(field_selector, resource)),
        )

    def matches(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        return labels_match(list(self.labels), obj) and fields_match(list(self.fields), obj)
