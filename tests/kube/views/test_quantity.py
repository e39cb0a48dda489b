"""Kubernetes quantities as the scheduler counts them."""

from __future__ import annotations

from decimal import Decimal

import pytest

from nos.kube.views.quantity import parse_quantity, to_int


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("100m", Decimal("0.1")),
        ("1.5", Decimal("1.5")),
        ("2Gi", Decimal(2 * 2**30)),
        ("500Mi", Decimal(500 * 2**20)),
        ("1e3", Decimal(1000)),
        ("1E3", Decimal(1000)),
        ("2k", Decimal(2000)),
        ("3M", Decimal(3_000_000)),
        ("1Ki", Decimal(1024)),
        ("0", Decimal(0)),
        (" 4 ", Decimal(4)),
        (7, Decimal(7)),
        (0.25, Decimal("0.25")),
        ("+1", Decimal(1)),
    ],
)
def test_parse_quantity(value: str | int | float, expected: Decimal) -> None:
    assert parse_quantity(value) == expected


@pytest.mark.parametrize(
    ("resource", "value", "expected"),
    [
        ("cpu", "100m", 100),
        ("cpu", "1.5", 1500),
        ("cpu", "2", 2000),
        ("cpu", 2, 2000),
        ("cpu", "0.0001", 1),  # rounded up, never to zero
        ("memory", "2Gi", 2 * 2**30),
        ("memory", "500Mi", 500 * 2**20),
        ("memory", "1e3", 1000),
        ("memory", "100m", 1),  # a fraction of a byte rounds up
        ("nvidia.com/mig-1g.10gb", "1", 1),
        ("pods", "110", 110),
    ],
)
def test_to_int(resource: str, value: str | int, expected: int) -> None:
    assert to_int(resource, value) == expected


@pytest.mark.parametrize(
    "value",
    ["", "abc", "1.2.3", ".", "1Gb", "Gi", "1 Gi", "1.5x", "--1", "1e", True, False, float("inf"), float("nan")],
)
def test_bad_quantities_raise_value_error(value: object) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        parse_quantity(value)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        to_int("cpu", value)  # type: ignore[arg-type]
