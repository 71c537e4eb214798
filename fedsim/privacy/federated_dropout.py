"""Federated dropout (Caldas et al. 2018, "Expanding the reach of federated learning by reducing
client resource requirements") as an update stage.

Every round each sampled hospital k gets a sub-network S_k: in every hidden layer, a fraction f
of the units is dropped (round(f * units) of them, at least one kept), drawn from the seed stream
FEDERATED_DROPOUT at (round, hospital) — public randomness the server recomputes. A unit is a
hidden neuron of a linear layer or a conv channel; under GroupNorm a whole group of channels, so
that the kept channels' normalisation never sees a dropped one. The sub-network's entries are the
parameters of the kept units with their connections from kept units of the layer below (and the
units' normalisation parameters and statistics). The hospital receives only those entries, trains
the sub-network (dropped units output zero; nothing is rescaled) and sends only those entries.

Aggregation: entry e of the new model averages the updates of the hospitals that hold it, with
the strategy's weights,

    w_{t+1}[e] = w_t[e] + sum_{k in H(e)} p_k delta_k[e] / sum_{k in H(e)} p_k     (w_t[e] if H(e) is empty),

H(e) the kept (not quarantined) hospitals whose sub-network holds e. The server half computes it
from the strategy's weighted sum, where non-holders contributed a zero update, by rescaling the
update part of each entry by W_K / sum_{k in H(e)} p_k (W_K: the kept hospitals' weight).

With central DP the holder sets depend on who was sampled, which the DP analysis keeps secret, so
the denominator is the expected one instead: the noised sum's update part of entry e is divided
by P(e), the chance a sampled hospital holds e (the product of the keep fractions of the layers
e connects) — post-processing of the noised sum. With local DP, noise added to dropped entries
is discarded before anything leaves (post-processing of the hospital's private update).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import numpy as np

from fedsim.params import Params
from fedsim.pipeline.base import HospitalContext, ServerContext, UpdateStage
from fedsim.protocol import LocalPlan
from fedsim.seeding import Stream, rng_for

FLOAT32 = 4


@dataclass(frozen=True)
class UnitLayer:
    """A hidden layer's droppable units: `units` groups of `width` consecutive channels of the
    activation module `output` produces; `members` are (parameter, axis, entries per unit along
    that axis) for every parameter indexed by these units."""

    output: str
    units: int
    width: int
    members: tuple[tuple[str, int, int], ...]


def entry_products(layers: Sequence[UnitLayer], per_unit: Sequence[np.ndarray], shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """For every parameter a layer indexes: the product, over the layers it belongs to, of that
    layer's per-unit value at each entry's unit (0/1 keep masks give the held entries; keep
    fractions give the chance an entry is held)."""
    products: dict[str, np.ndarray] = {}
    for layer, values in zip(layers, per_unit):
        for name, axis, per in layer.members:
            shape = shapes[name]
            along = np.repeat(np.asarray(values, dtype=np.float64), per)
            view = [1] * len(shape)
            view[axis] = shape[axis]
            products[name] = products.get(name, np.ones(shape)) * along.reshape(view)
    return products


@dataclass(frozen=True)
class Subnetwork:
    """One hospital's sub-network for one round (what LocalPlan.subnetwork carries)."""

    layers: tuple[UnitLayer, ...]
    kept: tuple[np.ndarray, ...]  # per layer: True for each kept unit

    def activation_masks(self) -> dict[str, np.ndarray]:
        """Module name -> 0/1 float32 mask over its output channels (dim 1)."""
        return {layer.output: np.repeat(kept, layer.width).astype(np.float32) for layer, kept in zip(self.layers, self.kept)}

    def held(self, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
        """Parameter name -> bool mask of the entries the sub-network holds (parameters no layer
        indexes, e.g. the input conv's filters over image channels, are held whole)."""
        return {name: product > 0 for name, product in entry_products(self.layers, self.kept, shapes).items()}

    def keep_held(self, values: Params, outside: Params) -> Params:
        """`values` on the sub-network's entries, `outside` everywhere else."""
        held = self.held({name: np.shape(array) for name, array in values.items()})
        return {name: np.where(held[name], array, outside[name]).astype(np.asarray(array).dtype) if name in held else array
                for name, array in values.items()}


def draw_subnetwork(layers: tuple[UnitLayer, ...], fraction: float, run_seed: int, round_index: int, hospital: int) -> Subnetwork:
    """Drop round(fraction * units) units of every layer (at least one kept), seeded by (round, hospital)."""
    rng = rng_for(run_seed, Stream.FEDERATED_DROPOUT, round_index, hospital)
    kept = []
    for layer in layers:
        mask = np.zeros(layer.units, dtype=bool)
        mask[rng.choice(layer.units, keep_count(layer.units, fraction), replace=False)] = True
        kept.append(mask)
    return Subnetwork(layers, tuple(kept))


def keep_count(units: int, fraction: float) -> int:
    return max(1, units - round(fraction * units))


class FederatedDropout(UpdateStage):
    def __init__(self, layers: tuple[UnitLayer, ...], shapes: Mapping[str, tuple[int, ...]], fraction: float, run_seed: int,
                 expected_denominator: bool) -> None:
        self.layers = layers
        self.shapes = dict(shapes)  # every parameter's shape (the float32 broadcast)
        self.fraction = fraction
        self.run_seed = run_seed
        #: central DP: divide by the expected holders, not the actual ones (see the module docstring)
        self.expected_denominator = expected_denominator

    def subnetwork(self, round_index: int, hospital: int) -> Subnetwork:
        return draw_subnetwork(self.layers, self.fraction, self.run_seed, round_index, hospital)

    def _held(self, round_index: int, hospital: int) -> dict[str, np.ndarray]:
        return self.subnetwork(round_index, hospital).held(self.shapes)

    def local_plan(self, plan: LocalPlan, context: HospitalContext) -> LocalPlan:
        return replace(plan, subnetwork=self.subnetwork(context.round_index, context.hospital))

    def hospital(self, update: Params, context: HospitalContext, state: Any) -> tuple[Params, Any, dict[str, float]]:
        """Only the sub-network's entries leave (zero elsewhere: what a later stage, such as local
        DP's noise, put on dropped entries is discarded)."""
        held = self._held(context.round_index, context.hospital)
        return {name: np.where(held[name], delta, 0.0) if name in held else delta for name, delta in update.items()}, state, {}

    def wire_bytes(self, update: Params, context: HospitalContext) -> dict[str, int]:
        held = self._held(context.round_index, context.hospital)
        return {name: FLOAT32 * int(np.count_nonzero(mask)) for name, mask in held.items()}

    def download_bytes(self, full: int, round_index: int, hospital: int) -> int:
        held = self._held(round_index, hospital)
        return full - FLOAT32 * sum(int(mask.size - np.count_nonzero(mask)) for mask in held.values())

    def server(self, total: dict[str, np.ndarray], context: ServerContext) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        denominators = self._expected_share() if self.expected_denominator else self._holder_share(context)
        unheld, entries = 0, 0
        rescaled = dict(total)
        for name, share in denominators.items():
            if name not in total:  # e.g. FedBN's local normalisation layers
                continue
            unmoved = context.unmoved(name)
            scale = np.divide(1.0, share, out=np.zeros_like(share), where=share > 0)
            rescaled[name] = unmoved + (total[name] - unmoved) * scale
            unheld += int(np.count_nonzero(share == 0))
            entries += share.size
        return rescaled, {"dropout_unheld_fraction": unheld / entries if entries else 0.0}

    def _holder_share(self, context: ServerContext) -> dict[str, np.ndarray]:
        """Per entry: the holders' share of the kept hospitals' weight."""
        kept_weight = float(sum(i.weight for i in context.instructions))
        shares: dict[str, np.ndarray] = {}
        for instruction in context.instructions:
            for name, mask in self._held(context.round_index, instruction.hospital).items():
                shares[name] = shares.get(name, 0.0) + (instruction.weight / kept_weight) * mask
        return shares

    def _expected_share(self) -> dict[str, np.ndarray]:
        fractions = [np.full(layer.units, keep_count(layer.units, self.fraction) / layer.units) for layer in self.layers]
        return entry_products(self.layers, fractions, self.shapes)
