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
    """A running exact sum of named float arrays."""

    def __init__(self) -> None:
        self.totals: dict[str, np.ndarray] = {}
        self.count = 0
        self._bound = 0  # sum of max |term| over all terms: no partial sum can exceed it

    def add(self, values: Mapping[str, np.ndarray]) -> None:
        """Add one contribution; raise OverflowError rather than wrap silently."""
        self.add_fixed(self.quantise(values))

    def quantise(self, values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One contribution rounded to fixed point (int64), counted against the overflow bound
        (secure aggregation masks it before `add_fixed`)."""
        quantised = {}
        for name, array in values.items():
            scaled = np.asarray(array, dtype=np.float64) * _SCALE
            peak = float(np.max(np.abs(scaled))) if scaled.size else 0.0
            if not np.isfinite(peak):
                raise OverflowError(f"contribution {name!r} contains NaN or infinity")
            self._bound += int(peak) + 1
            if self._bound >= _LIMIT:
                raise OverflowError(
                    f"contribution {name!r} is too large for exact aggregation "
                    f"(|value| must stay below {_LIMIT / _SCALE:.3g} summed over hospitals)"
                )
            quantised[name] = np.rint(scaled).astype(np.int64)
        return quantised

    def add_fixed(self, quantised: Mapping[str, np.ndarray]) -> None:
        """Add an already quantised (or masked: int64 addition wraps, i.e. works mod 2^64) contribution."""
        for name, values in quantised.items():
            if name in self.totals:
                self.totals[name] += values
            else:
                self.totals[name] = values
        self.count += 1

    def merge(self, other: "FixedPointSum") -> None:
        """Fold another partial sum into this one (exact, any order)."""
        self._bound += other._bound
        if self._bound >= _LIMIT:
            raise OverflowError("merged contributions are too large for exact aggregation")
        for name, total in other.totals.items():
            if name in self.totals:
                self.totals[name] = self.totals[name] + total
            else:
                self.totals[name] = total.copy()
        self.count += other.count

    def value(self) -> dict[str, np.ndarray]:
        """The sum as float64 arrays."""
        return {name: total.astype(np.float64) / _SCALE for name, total in self.totals.items()}
