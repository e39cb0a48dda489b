"""Loading cluster snapshots for ``nos plan``."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from nos.kube.views.snapshot import SnapshotError, load_snapshot, parse_snapshot

NODE = "{kind: Node, metadata: {name: %s}}"
POD = "{kind: Pod, metadata: {name: %s}}"


def test_kubectl_list() -> None:
    text = f"""
apiVersion: v1
kind: List
items:
- {NODE % "n1"}
- {NODE % "n2"}
- {POD % "p1"}
- {{kind: Service, metadata: {{name: s}}}}
"""
    snap = parse_snapshot(text)
    assert [n["metadata"]["name"] for n in snap.nodes] == ["n1", "n2"]
    assert [p["metadata"]["name"] for p in snap.pods] == ["p1"]
    assert snap.ignored == 1


def test_multi_document_and_nested_lists() -> None:
    text = "\n---\n".join(
        [
            NODE % "n1",
            f"{{kind: PodList, items: [{POD % 'p1'}, {{kind: List, items: [{POD % 'p2'}, {NODE % 'n2'}]}}]}}",
            "",  # an empty document
            f"{{kind: NodeList, items: [{NODE % 'n3'}]}}",
            "{kind: List, items: null}",
        ]
    )
    snap = parse_snapshot(text)
    assert sorted(n["metadata"]["name"] for n in snap.nodes) == ["n1", "n2", "n3"]
    assert sorted(p["metadata"]["name"] for p in snap.pods) == ["p1", "p2"]


def test_the_example_snapshot() -> None:
    snap = load_snapshot(str(Path(__file__).parents[3] / "examples" / "snapshot.yaml"))
    assert len(snap.nodes) == 5 and len(snap.pods) > 10


def test_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(NODE % "from-stdin"))
    assert load_snapshot("-").nodes[0]["metadata"]["name"] == "from-stdin"
    monkeypatch.setattr("sys.stdin", io.StringIO("kind: List\nitems: [\n"))
    with pytest.raises(SnapshotError, match="standard input is not valid YAML"):
        load_snapshot("-")


def test_not_yaml_gives_the_line() -> None:
    text = "kind: List\nitems:\n- kind: Node\n  metadata: {name: n1\n- x: : y\n"
    with pytest.raises(SnapshotError) as err:
        parse_snapshot(text, "snap.yaml")
    message = str(err.value)
    assert message.startswith("snap.yaml is not valid YAML at line ")
    assert "\n" not in message
    with pytest.raises(SnapshotError, match="at line 3"):
        parse_snapshot("a: 1\nb: 2\nc: d: e\n")


@pytest.mark.parametrize(
    "text",
    ["", "kind: List\nitems: []", POD % "p", "{kind: Service}", "---\n---\n"],
)
def test_no_nodes(text: str) -> None:
    with pytest.raises(SnapshotError, match="holds no Node objects"):
        parse_snapshot(text, "s.yaml")


@pytest.mark.parametrize("text", ["just text", "- 1\n- 2", "kind: List\nitems: [3]", "42"])
def test_not_kubernetes_objects(text: str) -> None:
    with pytest.raises(SnapshotError, match="expected Kubernetes objects"):
        parse_snapshot(text)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match=r"cannot read .*absent\.yaml"):
        load_snapshot(str(tmp_path / "absent.yaml"))
    with pytest.raises(SnapshotError, match="cannot read"):
        load_snapshot(str(tmp_path))  # a directory
    binary = tmp_path / "b.bin"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(SnapshotError, match="is not a text file"):
        load_snapshot(str(binary))


def test_json_snapshots_and_the_c_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    import yaml

    from nos.kube.views import snapshot

    listed = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [{"kind": "Node", "metadata": {"name": "n1"}}, {"kind": "Pod", "metadata": {"name": "p1"}}],
    }
    path = tmp_path / "snap.json"
    path.write_text(json.dumps(listed, indent=2))
    snap = load_snapshot(str(path))
    assert [n["metadata"]["name"] for n in snap.nodes] == ["n1"] and len(snap.pods) == 1
    monkeypatch.setattr("sys.stdin", io.StringIO("\n  " + json.dumps(listed)))
    assert load_snapshot("-").nodes[0]["metadata"]["name"] == "n1"
    # broken JSON is not guessed at: the YAML reading of it reports the line
    path.write_text('{"kind": "List",\n "items": [\n')
    with pytest.raises(SnapshotError, match=r"snap\.json is not valid YAML at line"):
        load_snapshot(str(path))
    if yaml.__with_libyaml__:
        assert snapshot.SafeLoader is yaml.CSafeLoader
    # a YAML file is streamed through the same loader: the first character read is put back
    path = tmp_path / "snap.yaml"
    path.write_text(f"kind: List\nitems:\n- {NODE % 'streamed'}\n")
    assert load_snapshot(str(path)).nodes[0]["metadata"]["name"] == "streamed"


@pytest.mark.parametrize(
    "text",
    [
        "a: 1\nb: [true, null, 2.5, '3', 0x10, 2024-01-01]\nc: {d: e}\n",
        "---\nkind: Node\n---\n- 1\n- [2, 3]\n...\n",
        "base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\nlist: &l [1, 2]\nagain: *l\n",
        "kind: List\nitems:\n- {kind: Node, metadata: {name: n}}\n- kind: Pod\n  spec: {priority: 5}\nmetadata: {}\n",
        "empty:\n'quoted': \"x\"\nmulti: |\n  line 1\n  line 2\n? !!str 7\n: seven\n",
    ],
)
def test_streamed_yaml_gives_what_safe_load_gives(text: str) -> None:
    import yaml

    from nos.kube.views.yaml_stream import documents

    items: list[object] = []
    docs = list(documents(text, items.append))
    expected = list(yaml.safe_load_all(text))
    for doc, want in zip(docs, expected, strict=True):
        if isinstance(doc, dict) and "items" in doc and isinstance(want, dict):
            assert doc["items"] == [] and items == want["items"]  # handed over one by one
            want = {**want, "items": []}
        assert doc == want


def test_streamed_yaml_reports_errors_with_the_line() -> None:
    with pytest.raises(SnapshotError, match="at line 2"):
        parse_snapshot("kind: List\nitems: *nowhere\n")
    with pytest.raises(SnapshotError, match="at line 3"):
        parse_snapshot("kind: List\nitems:\n- {a: [}\n")


def _typed(value: object) -> object:
    """``value`` with every scalar's type next to it: ``1``, ``1.0`` and ``True`` compare equal."""
    if isinstance(value, dict):
        return {_typed(k): _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    return (type(value).__name__, value)


REPEATED = """\
- {a: 1, b: 1.0, c: true, d: yes, e: '1', f: "true", g: ~, h: null, i: 2024-01-01, j: 0x10, k: .inf, z: zone-a}
- {a: 1, b: 1.0, c: true, d: yes, e: '1', f: "true", g: ~, h: null, i: 2024-01-01, j: 0x10, k: .inf, z: zone-a}
- {'<<': x, base: &b {m: 1}, other: {<<: *b, n: 2}, again: {<<: *b}, s: !!str 1, t: ! 2, u: 1, v: '1'}
- {a: 1, b: 1.0, c: true, d: yes, e: '1', f: "true", g: ~, h: null, i: 2024-01-01, j: 0x10, k: .inf}
"""


@pytest.mark.parametrize("remembered", [1 << 16, 2])
def test_repeated_scalars_keep_their_types(remembered: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain scalars are typed once and remembered (bounded: the cache is emptied when full); quoted
    ones stay strings, explicit tags and the merge key keep their meaning, dates are never shared."""
    import yaml

    from nos.kube.views import yaml_stream

    monkeypatch.setattr(yaml_stream, "_PLAIN_CACHE", remembered)
    [doc] = list(yaml_stream.documents(REPEATED, lambda item: None))
    assert _typed(doc) == _typed(yaml.safe_load(REPEATED))
    assert doc[0]["i"] is not doc[1]["i"], "a mutable-looking value (a date) is built each time"
    if remembered > 2:
        assert doc[0]["z"] is doc[1]["z"], "a repeated plain string is one object"
