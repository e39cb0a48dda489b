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
    constructors = loader.yaml_constructors
    anchors: dict[str, Any] = {}
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
            if isinstance(event, yaml.ScalarEvent):
                tag = event.tag
                if tag is None or tag == "!":
                    tag = loader.resolve(yaml.ScalarNode, event.value, event.implicit)
                if tag == _MERGE_TAG:
                    value: Any = _MERGE
                else:
                    node = yaml.ScalarNode(tag, event.value, style=event.style)
                    construct = constructors.get(tag) or constructors[None]
                    value = construct(loader, node)
                if event.anchor is not None:
                    anchors[event.anchor] = value
                add(value)
            elif isinstance(event, yaml.MappingStartEvent):
                mapping: dict[Any, Any] = {}
                if event.anchor is not None:
                    anchors[event.anchor] = mapping
                stack.append(_Frame(mapping, event.anchor))
            elif isinstance(event, yaml.SequenceStartEvent):
                items: list[Any] = []
                if event.anchor is not None:
                    anchors[event.anchor] = items
                streaming = len(stack) == 1 and isinstance(stack[0].value, dict) and stack[0].key == "items"
                stack.append(_Frame(items, event.anchor, streaming))
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                add(stack.pop().value)
            elif isinstance(event, yaml.AliasEvent):
                if event.anchor not in anchors:
                    mark = cast(yaml.Mark | None, event.start_mark)
                    raise yaml.composer.ComposerError(None, None, f"found undefined alias {event.anchor!r}", mark)
                add(anchors[event.anchor])
            elif isinstance(event, yaml.DocumentEndEvent):
                yield done.pop() if done else None
                anchors.clear()
            elif isinstance(event, yaml.StreamEndEvent):
                return
    finally:
        loader.dispose()
