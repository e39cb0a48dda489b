"""The wire contract (shared/docs/nos-contract.md) and nos' placement extension."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nos.contract.annotations import (
    SPEC_PLACEMENT_PREFIX,
    SPEC_PLAN,
    STATUS_PLACEMENT_PREFIX,
    STATUS_PLAN,
    AnnotationProblem,
    decode_spec,
    decode_status,
    encode_spec,
    encode_status,
    is_mig_partitioned,
    is_nos_key,
    is_spec_key,
    is_status_key,
    merge_patch,
)
from nos.mig.catalog import default_catalog
from nos.mig.layout import Instance
from nos.mig.placement import enumerate_layouts

CAT = default_catalog()
A100 = CAT.model("A100-80GB")
A100_LAYOUTS = tuple(enumerate_layouts(A100))
D = "nos.nebuly.com/"


def I(profile: str, start: int, used: bool = False) -> Instance:  # noqa: E743
    return Instance(start, profile, used)


# ------------------------------------------------------------------ keys of the contract


def test_opt_in_labels() -> None:
    assert is_mig_partitioned({"nos.nebuly.ai/gpu-partitioning": "mig"})
    assert is_mig_partitioned({"nos.nebuly.com/gpu-partitioning": "mig"})
    assert not is_mig_partitioned({"nos.nebuly.com/gpu-partitioning": "mps"})
    assert not is_mig_partitioned({"nos.nebuly.ai/gpu-partitioning": "MIG"})
    assert not is_mig_partitioned({})


def test_extension_keys_are_invisible_to_the_original_nos() -> None:
    # the original treats every key starting with spec-gpu / status-gpu as a count
    for prefix in (SPEC_PLACEMENT_PREFIX, STATUS_PLACEMENT_PREFIX):
        assert not prefix.startswith((D + "spec-gpu", D + "status-gpu"))
    spec = encode_spec({0: [I("1g.10gb", 0)]}, "p1")
    status = encode_status({0: [I("1g.10gb", 0, True)]}, "p1")
    ext = [k for k in (*spec, *status) if "placement" in k]
    assert ext and not any(k.startswith((D + "spec-gpu", D + "status-gpu")) for k in ext)


def test_encode_spec_uses_the_contract_spelling() -> None:
    layout = {0: [I("3g.40gb", 4), I("1g.10gb", 0), I("1g.10gb", 1), I("1g.10gb+me", 2)], 1: [I("7g.80gb", 0)]}
    out = encode_spec(layout, "1732838400")
    assert out == {
        D + "spec-gpu-0-1g.10gb": "2",
        D + "spec-gpu-0-1g.10gb_me": "1",
        D + "spec-gpu-0-3g.40gb": "1",
        D + "spec-placement-gpu-0": "1g.10gb@0,1g.10gb@1,1g.10gb_me@2,3g.40gb@4",
        D + "spec-gpu-1-7g.80gb": "1",
        D + "spec-placement-gpu-1": "7g.80gb@0",
        D + "spec-partitioning-plan": "1732838400",
    }
    assert all("+" not in k and "+" not in v for k, v in out.items())
    assert all(is_spec_key(k) and not is_status_key(k) and is_nos_key(k) for k in out)


def test_encode_status_uses_the_contract_spelling() -> None:
    out = encode_status({0: [I("1g.10gb", 0, True), I("1g.10gb", 1), I("1g.10gb", 2, True)]}, None)
    assert out == {
        D + "status-gpu-0-1g.10gb-free": "1",
        D + "status-gpu-0-1g.10gb-used": "2",
        D + "status-placement-gpu-0": "1g.10gb@0:used,1g.10gb@1:free,1g.10gb@2:used",
    }
    assert all(is_status_key(k) and not is_spec_key(k) for k in out)


def test_decode_original_nos_annotations_without_placements() -> None:
    ann = {
        D + "spec-gpu-0-1g.10gb": "3",
        D + "spec-gpu-0-4g.40gb": "1",
        D + "spec-partitioning-plan": "17",
        D + "status-gpu-0-1g.10gb-used": "1",
        D + "status-gpu-0-1g.10gb-free": "2",
        D + "status-partitioning-plan": "16",
        "other.io/key": "x",
    }
    spec = decode_spec(ann)
    assert spec.plan_id == "17" and spec.problems == []
    assert spec.gpus[0].counts == Counter({("1g.10gb", False): 3, ("4g.40gb", False): 1})
    assert spec.gpus[0].placements is None
    status = decode_status(ann)
    assert status.plan_id == "16" and status.problems == []
    assert status.gpus[0].counts == Counter({("1g.10gb", True): 1, ("1g.10gb", False): 2})
    assert status.gpus[0].profile_counts() == Counter({"1g.10gb": 3})


def test_decode_me_spelling() -> None:
    status = decode_status({D + "status-gpu-2-1g.10gb_me-used": "1", D + "status-placement-gpu-2": "1g.10gb_me@3:used"})
    assert status.problems == []
    assert status.gpus[2].placements == (I("1g.10gb+me", 3, True),)
    assert status.gpus[2].counts == Counter({("1g.10gb+me", True): 1})


# ------------------------------------------------------------------ round trips

gpu_layouts = st.dictionaries(
    st.integers(0, 15),
    st.sampled_from(A100_LAYOUTS).flatmap(
        lambda layout: st.tuples(*[st.booleans() for _ in layout]).map(
            lambda used: tuple(Instance(i.start, i.profile, u) for i, u in zip(layout, used, strict=True))
        )
    ),
    max_size=4,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gpu_layouts, st.one_of(st.none(), st.text("0123456789abc", min_size=1, max_size=12)))
def test_status_round_trip(gpus: dict[int, tuple[Instance, ...]], plan_id: str | None) -> None:
    decoded = decode_status(encode_status(gpus, plan_id))
    assert decoded.problems == []
    assert decoded.plan_id == plan_id
    for index, layout in gpus.items():
        if not layout:
            # an empty GPU writes only an empty placement annotation
            assert decoded.gpus[index].placements == ()
            continue
        assert decoded.gpus[index].placements == tuple(sorted(layout))
        assert decoded.gpus[index].counts == Counter((i.profile, i.used) for i in layout)
    assert set(decoded.gpus) == set(gpus)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gpu_layouts, st.one_of(st.none(), st.just("p-1")))
def test_spec_round_trip(gpus: dict[int, tuple[Instance, ...]], plan_id: str | None) -> None:
    decoded = decode_spec(encode_spec(gpus, plan_id))
    assert decoded.problems == []
    assert decoded.plan_id == plan_id
    for index, layout in gpus.items():
        assert decoded.gpus[index].placements == tuple(sorted(i.freed() for i in layout))
        assert decoded.gpus[index].profile_counts() == Counter(i.profile for i in layout)


# ------------------------------------------------------------------ malformed annotations


@pytest.mark.parametrize(
    ("key", "value", "gpu", "message"),
    [
        (D + "status-gpu-1-1g.10gb-used", "two", 1, "is not a non-negative integer"),
        (D + "status-gpu-1-1g.10gb-used", "-1", 1, "is not a non-negative integer"),
        (D + "status-gpu-1-1g.10gb-used", "1.5", 1, "is not a non-negative integer"),
        (D + "status-gpu-1-1g.10gb-used", "", 1, "is not a non-negative integer"),
        (D + "status-gpu-3-1g.10gb-busy", "1", 3, "not of the form of the contract"),
        (D + "status-gpu-3-1g.10gb", "1", 3, "not of the form of the contract"),
        (D + "status-gpu-x-1g.10gb-used", "1", None, "not of the form of the contract"),
        (D + "status-gpu--1-1g.10gb-used", "1", None, "not of the form of the contract"),
        (D + "status-gpu-0-1g.10gb+me-used", "1", 0, "not of the form of the contract"),
        (D + "status-placement-gpu-x", "1g.10gb@0:used", None, "GPU index is not a number"),
        (D + "status-placement-gpu-", "1g.10gb@0:used", None, "GPU index is not a number"),
        (D + "status-placement-gpu-²", "1g.10gb@0:used", None, "GPU index is not a number"),
        (D + "status-gpu-²-1g.10gb-used", "1", None, "not of the form of the contract"),
        (D + "status-gpu-٣-1g.10gb-used", "1", None, "not of the form of the contract"),
        (D + "status-gpu-1-1g.10gb-used", "٣", 1, "is not a non-negative integer"),
        (D + "status-placement-gpu-2", "1g.10gb@٣:used", 2, "is not PROFILE@START:used|free"),
        (D + "status-placement-gpu-2", "1g.10gb@0", 2, "is not PROFILE@START:used|free"),
        (D + "status-placement-gpu-2", "1g.10gb@a:used", 2, "is not PROFILE@START:used|free"),
        (D + "status-placement-gpu-2", "1g.10gb:used", 2, "is not PROFILE@START:used|free"),
        (D + "status-placement-gpu-2", "1g.10gb@0:busy", 2, "is not PROFILE@START:used|free"),
    ],
)
def test_malformed_status_is_a_problem_not_an_exception(key: str, value: str, gpu: int | None, message: str) -> None:
    decoded = decode_status({key: value, D + "status-gpu-5-7g.80gb-free": "1"})
    assert len(decoded.problems) == 1
    problem = decoded.problems[0]
    assert isinstance(problem, AnnotationProblem)
    assert problem.key == key and problem.gpu == gpu
    assert message in problem.message
    assert key in str(problem)
    assert decoded.problem_gpus() == (None if gpu is None else {gpu})
    # the well-formed annotation of another GPU is still read
    assert decoded.gpus[5].counts == Counter({("7g.80gb", False): 1})


@pytest.mark.parametrize(
    ("key", "value", "gpu"),
    [
        (D + "spec-gpu-0-1g.10gb", "x", 0),
        (D + "spec-gpu-0-1g.10gb-free", "1", 0),
        (D + "spec-gpu-a-1g.10gb", "1", None),
        (D + "spec-placement-gpu-1", "1g.10gb@0:free", 1),  # spec placements carry no state
        (D + "spec-placement-gpu-1", "1g.10gb@", 1),
        (D + "spec-placement-gpu-b", "1g.10gb@0", None),
    ],
)
def test_malformed_spec_is_a_problem(key: str, value: str, gpu: int | None) -> None:
    decoded = decode_spec({key: value})
    assert [(p.key, p.gpu) for p in decoded.problems] == [(key, gpu)]


def test_placements_disagreeing_with_counts() -> None:
    ann = {
        D + "status-gpu-0-1g.10gb-used": "2",
        D + "status-placement-gpu-0": "1g.10gb@0:used,1g.10gb@1:free",
        D + "status-gpu-1-3g.40gb-free": "1",
        D + "status-placement-gpu-1": "3g.40gb@4:free",
    }
    decoded = decode_status(ann)
    assert [(p.key, p.gpu) for p in decoded.problems] == [(D + "status-placement-gpu-0", 0)]
    assert "disagree" in decoded.problems[0].message
    assert decoded.problem_gpus() == {0}
    # placements without any counts disagree too
    decoded = decode_status({D + "status-placement-gpu-4": "7g.80gb@0:free"})
    assert [(p.key, p.gpu) for p in decoded.problems] == [(D + "status-placement-gpu-4", 4)]
    # zero counts are the same as no count
    decoded = decode_status(
        {
            D + "status-gpu-0-1g.10gb-free": "0",
            D + "status-gpu-0-7g.80gb-free": "1",
            D + "status-placement-gpu-0": "7g.80gb@0:free",
        }
    )
    assert decoded.problems == []
    spec = decode_spec({D + "spec-gpu-0-1g.10gb": "2", D + "spec-placement-gpu-0": "1g.10gb@0"})
    assert [(p.key, p.gpu) for p in spec.problems] == [(D + "spec-placement-gpu-0", 0)]


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.one_of(
            st.builds(lambda s: D + "status-gpu-" + s, st.text(max_size=20)),
            st.builds(lambda s: D + "status-placement-gpu-" + s, st.text(max_size=8)),
            st.builds(lambda s: D + "spec-gpu-" + s, st.text(max_size=20)),
            st.builds(lambda s: D + "spec-placement-gpu-" + s, st.text(max_size=8)),
            st.just(STATUS_PLAN),
            st.just(SPEC_PLAN),
        ),
        st.text(max_size=30),
        max_size=6,
    )
)
def test_decoding_garbage_never_raises(ann: dict[str, str]) -> None:
    for decoded in (decode_status(ann), decode_spec(ann)):
        for p in decoded.problems:
            assert p.key in ann
        gpus = decoded.problem_gpus()
        assert gpus is None or all(isinstance(g, int) for g in gpus)


# ------------------------------------------------------------------ merge patch


def test_merge_patch() -> None:
    current = {
        D + "spec-gpu-0-1g.10gb": "7",
        D + "spec-gpu-0-3g.40gb": "1",
        D + "spec-placement-gpu-0": "3g.40gb@0",
        D + "spec-partitioning-plan": "1",
        D + "status-gpu-0-3g.40gb-used": "1",
        "example.com/foreign": "x",
    }
    desired = encode_spec({0: [I("3g.40gb", 0), I("3g.40gb", 4)]}, "2")
    patch = merge_patch(current, desired)
    assert patch == {
        D + "spec-gpu-0-3g.40gb": "2",
        D + "spec-placement-gpu-0": "3g.40gb@0,3g.40gb@4",
        D + "spec-partitioning-plan": "2",
        D + "spec-gpu-0-1g.10gb": None,
    }
    # applying the patch gives exactly the desired spec, status and foreign keys untouched
    after = {k: v for k, v in {**current, **patch}.items() if v is not None}
    assert {k: v for k, v in after.items() if is_spec_key(k)} == desired
    assert after["example.com/foreign"] == "x" and after[D + "status-gpu-0-3g.40gb-used"] == "1"
    assert merge_patch(after, desired) == {}


def test_merge_patch_for_status() -> None:
    current = {D + "status-gpu-0-1g.10gb-free": "1", D + "spec-gpu-0-1g.10gb": "1", "a/b": "c"}
    desired = encode_status({0: [I("7g.80gb", 0)]}, "9")
    patch = merge_patch(current, desired, owned="status")
    assert patch[D + "status-gpu-0-1g.10gb-free"] is None
    assert D + "spec-gpu-0-1g.10gb" not in patch and "a/b" not in patch
    assert patch[D + "status-gpu-0-7g.80gb-free"] == "1" and patch[STATUS_PLAN] == "9"
