"""YAML documents built from libyaml's event stream, handing over a List's items one by one.

``yaml.load`` first composes the whole document into a node graph and only then constructs the
Python objects: for a 60 MB ``kind: List`` both live at once (measured: 2.2 GB). Here objects are
built directly from the parser's events (libyaml's C parser when PyYAML has it), scalars typed by
PyYAML's own resolver and constructors (so values are exactly what ``safe_load`` gives), and each
element of a top-level mapping's ``items`` goes to a callback as soon as it is complete instead of
into the list: memory is the objects kept, not twice the file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol, cast

import yaml

Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_STREAMED = object()
"""A mapping frame's "no pending key"."""
_MERGE = object()
"""The merge key ``<<`` (its values' keys are added to the mapping, explicit keys winning)."""
_MERGE_TAG = "tag:yaml.org,2002:merge"
_SHAREABLE = frozenset({str, int, float, bool, type(None)})
"""Immutable scalar values: one object may stand for every occurrence of the same plain text."""
_PLAIN_CACHE = 1 << 16
"""Plain scalars remembered at most (bounds the cache on files of unique values)."""
ScalarEvent = yaml.ScalarEvent


def scalar(loader: Any, tag: str | None, event: Any) -> Any:
    """A scalar event's value as ``safe_load`` gives it (``_MERGE`` for the merge key)."""
    if tag is None or tag == "!":
        tag = loader.resolve(yaml.ScalarNode, event.value, event.implicit)
    if tag == _MERGE_TAG:
        return _MERGE
    construct = loader.yaml_constructors.get(tag) or loader.yaml_constructors[None]
    return construct(loader, yaml.ScalarNode(tag, event.value, style=event.style))


class Readable(Protocol):
    def read(self, size: int = -1, /) -> str: ...


class _Frame:
    __slots__ = ("anchor", "key", "streaming", "value")

    def __init__(self, value: dict[Any, Any] | list[Any], anchor: str | None, streaming: bool = False) -> None:
        self.value = value
        self.anchor = anchor
        self.key: Any = _STREAMED  # a mapping's pending key (_STREAMED: none yet)
        self.streaming = streaming


def documents(stream: Readable | str, on_item: Callable[[Any], None]) -> Iterator[Any]:
    """Each document of ``stream``; the elements of a top-level mapping's ``items`` sequence go to
    ``on_item`` (in order) and that sequence stays empty. Raises ``yaml.YAMLError``."""
    loader: Any = Loader(stream)  # untyped in types-PyYAML: the event API
    anchors: dict[str, Any] = {}
    plain: dict[str, Any] = {}
    """Plain scalars typed so far (most are keys and values that repeat): text -> value."""
    stack: list[_Frame] = []
    done: list[Any] = []

    def add(value: Any) -> None:
        if not stack:
            done.append(value)
            return
        top = stack[-1]
        if isinstance(top.value, list):
            if top.streaming:
                on_item(value)
            else:
                top.value.append(value)
        elif top.key is _STREAMED:
            if isinstance(value, (list, dict)):
                raise yaml.constructor.ConstructorError("while constructing a mapping", None, "found unhashable key")
            top.key = value
        else:
            if top.key is _MERGE:
                for merged in value if isinstance(value, list) else [value]:
                    for k, v in merged.items():
                        top.value.setdefault(k, v)
            else:
                top.value[top.key] = value
            top.key = _STREAMED

    try:
        while True:
            event = loader.get_event()
            kind = type(event)
            if kind is ScalarEvent:
                tag = event.tag
                if tag is None and not event.implicit[0]:
                    value: Any = event.value  # quoted, untagged: the resolver's default, a string
                elif tag is None:
                    value = plain.get(event.value, _STREAMED)
                    if value is _STREAMED:
                        value = scalar(loader, tag, event)
                        if type(value) in _SHAREABLE:
                            if len(plain) >= _PLAIN_CACHE:
                                plain.clear()
                            plain[event.value] = value
                else:
                    value = scalar(loader, tag, event)
                if event.anchor is not None:
                    anchors[event.anchor] = value
                add(value)
            elif kind is yaml.MappingStartEvent:
                mapping: dict[Any, Any] = {}
                if event.anchor is not None:
                    anchors[event.anchor] = mapping
                stack.append(_Frame(mapping, event.anchor))
            elif kind is yaml.SequenceStartEvent:
                items: list[Any] = []
                if event.anchor is not None:
                    anchors[event.anchor] = items
                streaming = len(stack) == 1 and isinstance(stack[0].value, dict) and stack[0].key == "items"
                stack.append(_Frame(items, event.anchor, streaming))
            elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
                add(stack.pop().value)
            elif kind is yaml.AliasEvent:
                if event.anchor not in anchors:
                    mark = cast(yaml.Mark | None, event.start_mark)
                    raise yaml.composer.ComposerError(None, None, f"found undefined alias {event.anchor!r}", mark)
                add(anchors[event.anchor])
            elif kind is yaml.DocumentEndEvent:
                yield done.pop() if done else None
                anchors.clear()
            elif kind is yaml.StreamEndEvent:
                return
    finally:
        loader.dispose()
