"""The store's list order (by namespace, then name) holds through creates and deletes between reads:
``shared`` and ``list`` keep each resource's keys sorted instead of sorting every object per call."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from nos.kube.fake.store import ObjectStore


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from(["a", "b"]), st.integers(0, 6)), max_size=40))
def test_shared_and_list_keep_list_order_through_creates_and_deletes(ops: list[tuple[bool, str, int]]) -> None:
    store = ObjectStore()
    alive: set[tuple[str, str]] = set()
    for i, (create, namespace, n) in enumerate(ops):
        name = f"p{n}"
        if create and (namespace, name) not in alive:
            store.create("pods", {"metadata": {"name": name, "namespace": namespace}}, namespace)
            alive.add((namespace, name))
        elif not create and (namespace, name) in alive:
            store.delete("pods", name, namespace)
            alive.discard((namespace, name))
        if i % 3 == 0:  # read in between, so the kept order is updated rather than rebuilt
            store.shared("pods")
        if i % 7 == 0:  # another resource in the same store
            store.create("nodes", {"metadata": {"name": f"n{i}"}})
    expected = sorted(alive)
    shared = [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in store.shared("pods")]
    listed = [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in store.list("pods")[0]]
    assert shared == listed == expected
    assert [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in store.list("pods", "a")[0]] == [
        k for k in expected if k[0] == "a"
    ]
