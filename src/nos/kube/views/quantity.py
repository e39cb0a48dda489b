"""Kubernetes resource quantities (``500m``, ``16Gi``, ``1e3``) as exact integers.

cpu is counted in millicores and everything else in units, the way the scheduler compares them.
"""

from __future__ import annotations

import math
import re
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from functools import lru_cache

_SUFFIX: dict[str, int | Decimal] = {
    "": 1, "m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$")


def parse_quantity(value: str | int | float) -> Decimal:
    """The quantity as a decimal number of base units; ValueError when malformed."""
    if isinstance(value, str):
        return _parse_text(value)
    if isinstance(value, bool) or (isinstance(value, float) and not math.isfinite(value)):
        raise ValueError(f"not a Kubernetes quantity: {value!r}")  # YAML ``true`` / ``.inf``
    if isinstance(value, int | float):
        return Decimal(str(value))
    try:
        return _parse_text(str(value))
    except ValueError:
        raise ValueError(f"not a Kubernetes quantity: {value!r}") from None


@lru_cache(maxsize=4096)  # a snapshot repeats a few dozen quantities thousands of times
def _parse_text(value: str) -> Decimal:
    m = _QUANTITY.match(value.strip())
    if m is None:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    try:
        number = Decimal(m[1])
    except InvalidOperation:
        raise ValueError(f"not a Kubernetes quantity: {value!r}") from None
    return number * Decimal(_SUFFIX[m[2] or ""])


def to_int(resource: str, value: str | int | float) -> int:
    """Integer amount as the scheduler counts it: millicores for cpu, units (rounded up) otherwise."""
    if isinstance(value, str):
        return _text_to_int(resource, value)
    return _to_int(resource, parse_quantity(value))


@lru_cache(maxsize=4096)
def _text_to_int(resource: str, value: str) -> int:
    return _to_int(resource, _parse_text(value))


def _to_int(resource: str, q: Decimal) -> int:
    if resource == "cpu":
        q *= 1000
    return int(q.to_integral_value(rounding=ROUND_CEILING))
