"""Exactly associative sums of float arrays, so partial sums on workers are deterministic.

Floating-point addition is not associative: summing hospitals' contributions on workers in a
grouping that depends on the number of workers would change the last bits of the global model.
Rounding each contribution once to fixed point (2**-40 resolution) and adding int64 is exact in
any order, so the aggregate is bitwise identical on 1 or 64 workers. Secure aggregation needs the
same fixed-point representation (modulo 2**64) later.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

FRACTION_BITS = 40
_SCALE = float(2**FRACTION_BITS)
_LIMIT = 2**62  # headroom below int64's 2**63 so a sum of bounded terms cannot wrap


class FixedPointSum:
    """A running exact sum of named float arrays.

    Overflow is guarded per element: beside each total it keeps the sum of |term| of every
    element (one more int64 array per parameter), which bounds every partial sum in any order,
    so the guard itself is order-independent and never refuses a sum whose elements are small.
    """

    def __init__(self) -> None:
        self.totals: dict[str, np.ndarray] = {}
        self.bounds: dict[str, np.ndarray] = {}  # per element: sum of |quantised term|
        self.count = 0

    def add(self, values: Mapping[str, np.ndarray], source: str = "a contribution") -> None:
        """Add one contribution (`source` names it in errors, e.g. "hospital 7"); raise
        OverflowError naming the source and the parameter rather than wrap silently."""
        quantised = quantise(values, source)
        self.add_fixed(quantised, {name: np.abs(q) for name, q in quantised.items()}, source)

    def add_fixed(self, fixed: Mapping[str, np.ndarray], bounds: Mapping[str, np.ndarray], source: str = "a contribution") -> None:
        """Add a contribution already in fixed point, with |its true quantised values| as `bounds`
        (secure aggregation adds masked words: int64 addition wraps, i.e. works mod 2**64, while
        the bounds still guard the true sum)."""
        for name, values in fixed.items():
            self._fold(name, values, bounds[name], source)
        self.count += 1

    def merge(self, other: "FixedPointSum") -> None:
        """Fold another partial sum into this one (exact, any order)."""
        for name, total in other.totals.items():
            self._fold(name, total, other.bounds[name], "merged partial sums")
        self.count += other.count

    def _fold(self, name: str, total: np.ndarray, bound: np.ndarray, source: str) -> None:
        if name not in self.totals:
            self.totals[name], self.bounds[name] = total.copy(), bound.copy()
            return
        bounds = self.bounds[name] + bound  # each operand < 2**62: no int64 wrap
        if bounds.size and int(np.max(bounds)) >= _LIMIT:
            raise OverflowError(f"{source}: parameter {name!r} {_too_large(float(np.max(bounds)))} summed over hospitals")
        self.totals[name] = self.totals[name] + total
        self.bounds[name] = bounds

    def value(self) -> dict[str, np.ndarray]:
        """The sum as float64 arrays."""
        return {name: total.astype(np.float64) / _SCALE for name, total in self.totals.items()}


def quantise(values: Mapping[str, np.ndarray], source: str = "a contribution") -> dict[str, np.ndarray]:
    """A contribution rounded once to fixed point (int64), refusing NaN/inf and elements too
    large for exact aggregation, naming `source` and the parameter."""
    quantised = {}
    for name, array in values.items():
        scaled = np.asarray(array, dtype=np.float64) * _SCALE
        if not np.all(np.isfinite(scaled)):
            raise OverflowError(f"{source}: parameter {name!r} contains NaN or infinity")
        if scaled.size and float(np.max(np.abs(scaled))) >= _LIMIT:
            raise OverflowError(f"{source}: parameter {name!r} {_too_large(float(np.max(np.abs(scaled))))}")
        quantised[name] = np.rint(scaled).astype(np.int64)
    return quantised


def _too_large(scaled_peak: float) -> str:
    return (f"is too large for exact aggregation: an element reaches |{scaled_peak / _SCALE:.3g}|, "
            f"expected below {_LIMIT / _SCALE:.3g}")
