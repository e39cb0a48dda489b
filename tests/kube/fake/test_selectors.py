"""Label and field selectors of the fakes, matched by the apiserver's rules (the HTTP fake and
``MemoryKube`` both filter through them; tests/realkube pins the same cases on the real server)."""

from __future__ import annotations

from typing import Any

import pytest

from nos.kube.fake.selectors import Selector, SelectorError, parse_field_selector, parse_label_selector


def obj(labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "ns", "labels": labels or {}}, "spec": spec, "status": {}}


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ("app=x", {"app": "x"}, True),
        ("app==x", {"app": "y"}, False),
        ("app!=x", {}, True),  # != matches objects without the key, as in the apiserver
        ("env notin (a,b)", {}, True),
        ("env notin (a,b)", {"env": "a"}, False),
        ("env in (a, b)", {"env": "b"}, True),
        ("env in (a,b)", {}, False),
        ("gpu", {"gpu": ""}, True),
        ("!legacy", {"legacy": "1"}, False),
        ("app=x,env in (a,b),!legacy", {"app": "x", "env": "a"}, True),
        ("", {"anything": "1"}, True),
    ],
)
def test_label_selector(selector: str, labels: dict[str, str], matches: bool) -> None:
    assert Selector.parse("pods", selector, None).matches(obj(labels)) is matches


@pytest.mark.parametrize("selector", ["app=", "a in ()", "a in (x", "a) in (x)", "=x", "a b"])
def test_bad_label_selectors_are_refused(selector: str) -> None:
    if selector == "app=":  # an empty value is allowed
        assert parse_label_selector(selector)[0].values == frozenset({""})
        return
    with pytest.raises(SelectorError):
        parse_label_selector(selector)


def test_field_selector_supported_fields_only() -> None:
    sel = Selector.parse("pods", None, "spec.nodeName=n1,metadata.namespace!=kube-system")
    assert sel.matches(obj(nodeName="n1")) and not sel.matches(obj(nodeName="n2"))
    assert Selector.parse("pods", None, "spec.nodeName=").matches(obj())  # unbound: the empty string
    with pytest.raises(SelectorError, match="field label not supported"):
        parse_field_selector("spec.priority=3", "pods")
    with pytest.raises(SelectorError):
        parse_field_selector("spec.nodeName", "pods")
    assert not Selector().matches(None)
