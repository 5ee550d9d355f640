"""Resources agents contribute and tasks ask for: cpu, memory, storage, bandwidth.

:class:`Resources` is the value type (cpu in cores; memory and storage in
bytes; bandwidth in bytes/s), with its wire form and the CLI's text form
(:func:`parse_resources`). Where they are placed is the ledger's job
(:mod:`robeing.protocol.ledger`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

from robeing.protocol.errors import RobeingError

__all__ = [
    "DIMENSIONS",
    "ConflictingRequest",
    "InsufficientResources",
    "InvalidResources",
    "ResourceError",
    "Resources",
    "Vec",
    "from_vec",
    "parse_resources",
    "to_vec",
    "vec_add",
    "vec_fits",
    "vec_sub",
]

DIMENSIONS = ("cpu", "memory", "storage", "bandwidth")
Vec = tuple[int, int, int, int]
"""Exact quantities: (cpu in millicores, memory, storage, bandwidth)."""
ZERO: Vec = (0, 0, 0, 0)


class ResourceError(RobeingError):
    """Root of the resource ledger's errors."""


class InvalidResources(ResourceError, ValueError):
    """A quantity is negative, not finite, or of the wrong type."""


class ConflictingRequest(ResourceError):
    """A live request id was reused with different resources or constraints."""


class InsufficientResources(ResourceError):
    """The request cannot be placed under its constraints right now.

    Attributes:
        request_id: the refused request.
        requested: what it asked for.
        available: what the eligible agents had free in total.
    """

    def __init__(self, request_id: str, requested: Resources, available: Resources) -> None:
        super().__init__(
            f"cannot place {request_id!r}: requested {requested}, free in total {available}"
        )
        self.request_id = request_id
        self.requested = requested
        self.available = available


@dataclass(frozen=True, slots=True)
class Resources:
    """A vector of capacities: cpu cores, memory and storage bytes, bandwidth bytes/s.

    Raises:
        InvalidResources: on construction, if a value is negative, not finite,
            or (for the byte counts) not an int.
    """

    cpu: float = 0.0
    memory: int = 0
    storage: int = 0
    bandwidth: int = 0

    def __post_init__(self) -> None:
        cpu = self.cpu
        if isinstance(cpu, bool) or not isinstance(cpu, int | float) or not math.isfinite(cpu):
            raise InvalidResources(f"cpu must be a finite number, got {cpu!r}")
        if cpu < 0:
            raise InvalidResources(f"cpu must be >= 0, got {cpu!r}")
        for name in DIMENSIONS[1:]:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidResources(f"{name} must be an int >= 0, got {value!r}")

    def __add__(self, other: Resources) -> Resources:
        return from_vec(vec_add(to_vec(self, up=True), to_vec(other, up=True)))

    def is_zero(self) -> bool:
        """True if every quantity is zero."""
        return to_vec(self, up=True) == ZERO

    def to_mapping(self) -> dict[str, float | int]:
        """The non-zero quantities by dimension name (the wire form)."""
        return {d: v for d in DIMENSIONS if (v := getattr(self, d))}

    @classmethod
    def from_mapping(cls, data: object) -> Resources:
        """Read the wire form: a map from dimension names to quantities.

        Raises:
            InvalidResources: not a map, an unknown dimension, or a bad quantity.
        """
        if not isinstance(data, Mapping):
            raise InvalidResources(f"resources must be a map, got {type(data).__name__}")
        unknown = sorted(str(k) for k in data if k not in DIMENSIONS)
        if unknown:
            raise InvalidResources(
                f"unknown resource {', '.join(unknown)}; known: {', '.join(DIMENSIONS)}"
            )
        return cls(**{str(k): v for k, v in data.items()})


_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_IUNITS = {"ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?)?b?(?:/s)?\s*$", re.IGNORECASE)


def parse_resources(text: str) -> Resources:
    """Parse ``cpu=2,memory=4GiB,storage=20GB,bandwidth=100MB`` (the CLI form).

    cpu is in cores (fractions allowed), or in millicores with Kubernetes'
    ``m`` suffix (``1500m`` is 1.5 cores: what the downward API gives for a
    container's ``limits.cpu`` with divisor ``1m``); the others in bytes
    (bandwidth in bytes/s), with an optional SI (k, M, G, T: powers of 1000)
    or binary (Ki, Mi, Gi, Ti: powers of 1024) prefix and an optional ``B``.

    Raises:
        InvalidResources: says which item is wrong and why.
    """
    values: dict[str, float | int] = {}
    for item in (i.strip() for i in text.replace(" ", ",").split(",")):
        if not item:
            continue
        name, sep, raw = item.partition("=")
        name = name.strip().lower()
        if not sep or name not in DIMENSIONS:
            raise InvalidResources(
                f"{item!r}: expected NAME=QUANTITY with NAME one of {', '.join(DIMENSIONS)}"
            )
        if name in values:
            raise InvalidResources(f"{name} given twice")
        m = _QUANTITY.match(raw)
        if m is None:
            raise InvalidResources(f"{item!r}: {raw.strip()!r} is not a quantity like 2, 0.5, 4GiB")
        number, prefix = m.group(1), (m.group(2) or "").lower()
        if name == "cpu":
            if number == raw.strip():
                values[name] = float(number)
            elif raw.strip() == number + "m":
                values[name] = float(Fraction(number) / 1000)
            else:
                raise InvalidResources(
                    f"{item!r}: cpu is a number of cores (2, 0.5) or of millicores (500m)"
                )
        else:
            scale = _IUNITS.get(prefix) or _UNITS[prefix]
            values[name] = math.ceil(Fraction(number) * scale)
    return Resources(**values)  # type: ignore[arg-type]


# --- exact arithmetic (integers, so releasing restores availability exactly) ---


def to_vec(r: Resources, *, up: bool) -> Vec:
    """Integer quantities; cpu rounded up (a request) or down (a contribution)."""
    milli = round(r.cpu * 1000, 6)  # absorbs binary noise such as 0.3 * 1000
    return (math.ceil(milli) if up else math.floor(milli), r.memory, r.storage, r.bandwidth)


def from_vec(v: Vec) -> Resources:
    return Resources(v[0] / 1000, v[1], v[2], v[3])


def vec_add(a: Vec, b: Vec) -> Vec:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3])


def vec_sub(a: Vec, b: Vec) -> Vec:
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2], a[3] - b[3])


def vec_fits(need: Vec, free: Vec) -> bool:
    return all(n <= f for n, f in zip(need, free, strict=True))
