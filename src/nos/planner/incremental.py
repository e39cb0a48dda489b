"""Planning input kept between cycles: parsed objects by (uid, resourceVersion).

A controller builds the cluster state every cycle from thousands of Pods and Nodes of which few
changed. An object's parse is a function of its content, and its (uid, resourceVersion) names that
content (the API server bumps the version on every write; a re-created object gets a new uid), so
parses are reused until the version moves. A node's state also depends on the pods bound to it, so
it is reused only while the same pods are bound. Objects without both fields (hand-written dicts)
are parsed every time.

``changed`` tells whether anything the state depends on differs from the previous build (an
object added, removed or modified), so a controller can skip a re-plan of an unchanged cluster.

A source that hands out its pods as a *tuple* promises never to mutate a handed-out object (a write
replaces it with a new object, as the fake API server's ``shared`` and a watch cache do). The pods'
part of a build (parses, which pods are bound where, the candidates) is then updated from the
objects that entered or left the tuple since the previous build, found by identity with set
operations, without a walk per pod in Python over thousands of pods every cycle. Lists are
walked as before.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def version_key(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    meta = obj.get("metadata")
    if not meta:
        return None
    uid, rv = meta.get("uid"), meta.get("resourceVersion")
    return (uid, rv) if uid and rv else None


class BuildCache:
    def __init__(self, *, pods: bool = True) -> None:
        self._old: dict[Hashable, Any] = {}
        self._new: dict[Hashable, Any] = {}
        self.changed = True
        """Whether the last build saw anything new or missed anything of the one before."""
        self.pods: BuildCache | None = BuildCache(pods=False) if pods else None
        """Parsed pods, apart so that a build that reuses the pods' part keeps them untouched."""
        self.pod_index: Any = None
        """The last pods tuple's entries by object id (the object, held so its id is not reused; its
        parse; its version) and its candidates, problems and bound pods (``nos.planner.cluster``)."""
        self.pod_part: Any = None
        """What the last pods tuple gave the build (``nos.planner.cluster``)."""

    def get(self, key: Hashable | None, make: Callable[[], T]) -> T:
        """The value cached under ``key`` (from the previous build or this one), else ``make()``."""
        if key is None:
            self.changed = True
            return make()
        value: T | None = self._old.pop(key, None)
        if value is None:
            value = self._new.get(key)
            if value is not None:
                return value  # type: ignore[no-any-return]
            self.changed = True
            value = make()
        self._new[key] = value
        return value

    def start(self) -> None:
        """Begin a build: entries not used by it are dropped at ``finish``."""
        self._new = {}
        self.changed = False

    def finish(self) -> None:
        if self._old:  # something of the previous build is gone
            self.changed = True
        self._old, self._new = self._new, {}
