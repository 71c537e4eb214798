"""Secure aggregation (Bonawitz et al. 2017) on the SecAgg+ neighbour graph (Bell et al. 2020),
on fedsim's fixed-point contributions taken modulo 2^64.

Per round, over the cohort (ids sorted), with public randomness from the run seed:

1. Graph: the cohort in a seeded random order on a ring; each hospital's neighbours are the
   k/2 nearest on each side (a Harary graph; every hospital's neighbourhood N(i) has k members,
   or the whole cohort when it is smaller).
2. Keys: hospital i has an X25519 key pair (s_i, S_i) and a self-mask seed b_i. With each
   neighbour j it agrees s_ij = SHA-256(X25519(s_i, S_j)) (= s_ji).
3. Shares: i splits s_i and b_i into Shamir t-of-(k+1) shares over GF(2^521 - 1), one for each
   of N(i) and itself (in a deployment encrypted to each holder and relayed by the server).
4. Masking: i sends y_i = x_i + PRG(b_i) + sum_{j in N(i), j > i} PRG(s_ij)
   - sum_{j in N(i), j < i} PRG(s_ij)  (mod 2^64), x_i its contribution in fixed point.
   PRG: numpy's PCG64 seeded with the 128-bit key, 64 raw bits per entry.
5. Dropout: after masking, each hospital drops with the configured probability (seeded) and its
   y_i never arrives.
6. Unmasking: for every survivor i the server gathers >= t shares of b_i from surviving holders
   and removes PRG(b_i); for every dropped d it gathers >= t shares of s_d, recomputes s_dj for
   each surviving neighbour j and removes the mask j added for d. What is left is
   sum_{survivors} x_i mod 2^64: the exact fixed-point sum, bitwise that of a plain round of the
   same survivors. With fewer than t holders for any needed secret the round fails.

The simulator derives every hospital's keys and Shamir coefficients from the run seed so runs
replay; a deployment draws them from the OS CSPRNG. The dealt shares travel with the partial sum
(in a deployment: encrypted to their holders, relayed by the server); the unmasking reads only
what surviving holders would reveal — shares of b_i for survivors, of s_d for the dropped, never
both for one hospital — besides the masked (pre-summed) vectors and the public keys.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal, Mapping, Sequence

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import Field, model_validator

from fedsim.engine.fixed_point import FixedPointSum, quantise
from fedsim.schema import Strict
from fedsim.seeding import Stream, rng_for, seed_for

PRIME = 2**521 - 1  # Mersenne prime: Shamir's field, larger than any 256-bit secret
KEY_BYTES, SHARE_BYTES = 32, 66  # an X25519 public key; one share (a GF(PRIME) element)


class SecureAggregationConfig(Strict):
    """`threshold` t: shares needed to rebuild a secret (at most `neighbours` + 1); `neighbours`
    k: the SecAgg+ graph's degree (even: k/2 on each side of the ring); `dropout`: chance a hospital drops after masking;
    `on_failure`: what a round with too few survivors does to the run."""

    threshold: int = Field(ge=1)
    neighbours: int = Field(ge=2, multiple_of=2)
    dropout: float = Field(0.0, ge=0, lt=1)
    on_failure: Literal["continue", "stop"] = "continue"

    @model_validator(mode="after")
    def _threshold(self) -> "SecureAggregationConfig":
        if self.threshold > self.neighbours + 1:
            raise ValueError(f"threshold: expected at most neighbours + 1 ({self.neighbours + 1}), got {self.threshold}")
        return self


# ----- the round's public structure -----------------------------------------------------------
def neighbour_graph(cohort: Sequence[int], degree: int, run_seed: int, round_index: int) -> dict[int, list[int]]:
    """Each hospital's neighbours: a Harary graph on a seeded random ring of the cohort."""
    n = len(cohort)
    if degree >= n - 1:
        return {h: [j for j in cohort if j != h] for h in cohort}
    ring = [int(h) for h in rng_for(run_seed, Stream.SECURE_AGGREGATION, round_index).permutation(np.asarray(cohort))]
    half = degree // 2
    graph = {}
    for position, h in enumerate(ring):
        graph[h] = sorted({ring[(position + step) % n] for step in range(-half, half + 1) if step})
    return graph


def _secret_rng(run_seed: int, round_index: int, hospital: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng(seed_for(run_seed, Stream.SECURE_AGGREGATION, round_index, hospital, purpose))


def private_key(run_seed: int, round_index: int, hospital: int) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(_secret_rng(run_seed, round_index, hospital, 1).bytes(32))


def public_key(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def pair_seed(own: X25519PrivateKey, other_public: bytes) -> int:
    """The 128-bit PRG seed two neighbours agree on."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

    shared = own.exchange(X25519PublicKey.from_public_bytes(other_public))
    return int.from_bytes(hashlib.sha256(shared).digest()[:16], "little")


def prg(seed: int, size: int) -> np.ndarray:
    """`size` pseudo-random 64-bit words from a 128-bit seed (PCG64)."""
    return np.random.PCG64(seed).random_raw(size).astype(np.uint64)


# ----- Shamir t-of-n sharing over GF(PRIME) ------------------------------------------------------
def share(secret: int, holders: Sequence[int], threshold: int, rng: np.random.Generator) -> dict[int, int]:
    """Shares of `secret` for each holder (evaluated at x = holder + 1)."""
    coefficients = [secret] + [int.from_bytes(rng.bytes(66), "little") % PRIME for _ in range(threshold - 1)]
    shares = {}
    for holder in holders:
        x, value = holder + 1, 0
        for coefficient in reversed(coefficients):
            value = (value * x + coefficient) % PRIME
        shares[holder] = value
    return shares


def reconstruct(shares: Mapping[int, int]) -> int:
    """Lagrange interpolation at 0 from (holder, share) pairs."""
    points = [(holder + 1, value) for holder, value in shares.items()]
    secret = 0
    for i, (xi, yi) in enumerate(points):
        numerator, denominator = 1, 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                numerator = numerator * (-xj) % PRIME
                denominator = denominator * (xi - xj) % PRIME
        secret = (secret + yi * numerator * pow(denominator, -1, PRIME)) % PRIME
    return secret


# ----- what travels --------------------------------------------------------------------------
class MaskedSum(FixedPointSum):
    """A worker's pre-sum of its hospitals' masked vectors (int64 words, wrapping = mod 2^64),
    with the secret shares its hospitals dealt, the public keys, and who dropped."""

    def __init__(self) -> None:
        super().__init__()
        self.shares: dict[int, dict[int, tuple[int, int]]] = {}  # dealer -> holder -> (share of b, share of s)
        self.public_keys: dict[int, bytes] = {}
        self.dropped: set[int] = set()

    def merge(self, other: "FixedPointSum") -> None:
        super().merge(other)
        if isinstance(other, MaskedSum):
            self.shares.update(other.shares)
            self.public_keys.update(other.public_keys)
            self.dropped |= other.dropped


class SecureAggregation:
    def __init__(self, spec: SecureAggregationConfig, run_seed: int) -> None:
        self.spec = spec
        self.run_seed = run_seed

    def new_sum(self) -> MaskedSum:
        return MaskedSum()

    def holders(self, cohort_size: int) -> int:
        """Shares each hospital deals: one per neighbour and one for itself."""
        return min(self.spec.neighbours, cohort_size - 1) + 1

    def threshold(self, cohort_size: int) -> int:
        """t, capped at the holders a small cohort allows."""
        return min(self.spec.threshold, self.holders(cohort_size))

    # hospital side ------------------------------------------------------------------------
    def add_masked(self, partial: MaskedSum, contribution: Mapping[str, np.ndarray], hospital: int, cohort: Sequence[int],
                   round_index: int, withheld: bool = False) -> bool:
        """Mask `hospital`'s contribution into `partial`; False when it drops after masking (or is
        `withheld`, e.g. quarantined: it dealt its shares but sends nothing, like a dropout)."""
        seed, spec = self.run_seed, self.spec
        graph = neighbour_graph(cohort, spec.neighbours, seed, round_index)
        key = private_key(seed, round_index, hospital)
        partial.public_keys[hospital] = public_key(key)
        secret_rng = _secret_rng(seed, round_index, hospital, 2)
        self_seed = int.from_bytes(secret_rng.bytes(16), "little")
        holders = graph[hospital] + [hospital]
        t = self.threshold(len(cohort))
        own_secret = int.from_bytes(key.private_bytes_raw(), "little")
        b_shares, s_shares = share(self_seed, holders, t, secret_rng), share(own_secret, holders, t, secret_rng)
        partial.shares[hospital] = {h: (b_shares[h], s_shares[h]) for h in holders}
        dropped = rng_for(seed, Stream.SECURE_AGGREGATION, round_index, hospital, 3).random() < spec.dropout
        if withheld or dropped:
            partial.dropped.add(hospital)
            return False
        encoded = quantise(contribution, f"hospital {hospital}")
        names = sorted(encoded)
        words = np.concatenate([encoded[n].ravel().view(np.uint64) for n in names]) if names else np.zeros(0, np.uint64)
        words = words + prg(self_seed, words.size)
        for j in graph[hospital]:
            mask = prg(pair_seed(key, public_key(private_key(seed, round_index, j))), words.size)
            words = words + mask if hospital < j else words - mask
        offset, masked = 0, {}
        for n in names:
            size = encoded[n].size
            masked[n] = words[offset : offset + size].view(np.int64).reshape(encoded[n].shape)
            offset += size
        partial.add_fixed(masked, {n: np.abs(encoded[n]) for n in names}, f"hospital {hospital}")
        return True

    def upload_bytes(self, contribution: Mapping[str, np.ndarray], cohort_size: int) -> int:
        """A masked 64-bit word per entry, a public key, and two shares per holder."""
        words = sum(np.asarray(a).size for a in contribution.values())
        return int(8 * words + KEY_BYTES + 2 * self.holders(cohort_size) * SHARE_BYTES)

    # server side --------------------------------------------------------------------------
    def unmasked_total(self, partials: Sequence[FixedPointSum], instructions: Sequence[Any], round_index: int) -> tuple[dict[str, np.ndarray] | None, dict[str, float]]:
        """The survivors' exact sum (None when the round failed), with the survivors' share of
        the round's weight among the metrics (`over_survivors` divides by it)."""
        cohort = [instruction.hospital for instruction in instructions]
        total, metrics = self.unmask(partials, cohort, round_index)
        if total is None:
            return None, metrics
        weights = {instruction.hospital: instruction.weight for instruction in instructions}
        surviving = sum(w for h, w in weights.items() if h not in total.dropped)
        return total.value(), {**metrics, "secagg_weight_share": surviving / sum(weights.values())}

    @staticmethod
    def over_survivors(summed: dict[str, np.ndarray], metrics: Mapping[str, float]) -> dict[str, np.ndarray]:
        """The sum divided by the survivors' weight share, so FedAvg averages the survivors. The
        server applies it after the stages' server halves (central DP's noise is calibrated to
        the undivided sum; dividing by a known share afterwards is post-processing). Exactly 1
        without dropouts, which leaves the sum bitwise alone."""
        share = metrics["secagg_weight_share"]
        return {name: value / share for name, value in summed.items()}

    def unmask(self, partials: Sequence[FixedPointSum], cohort: Sequence[int], round_index: int) -> tuple[MaskedSum | None, dict[str, float]]:
        """The exact fixed-point sum of the survivors (None when too few shares survive)."""
        total = MaskedSum()
        for partial in partials:
            total.merge(partial)
        graph = neighbour_graph(cohort, self.spec.neighbours, self.run_seed, round_index)
        survivors = [h for h in cohort if h not in total.dropped]
        metrics = {"secagg_survivors": float(len(survivors)), "secagg_dropped": float(len(total.dropped)), "secagg_failed": 0.0}
        t = self.threshold(len(cohort))
        alive = set(survivors)

        def rebuild(dealer: int, which: int) -> int | None:
            held = {h: pair[which] for h, pair in total.shares[dealer].items() if h in alive}
            return reconstruct(dict(list(held.items())[:t])) if len(held) >= t else None

        removals = []
        for i in survivors:
            self_seed = rebuild(i, 0)
            if self_seed is None:
                return None, {**metrics, "secagg_failed": 1.0}
            removals.append(("-", self_seed))
        for d in sorted(total.dropped):
            secret = rebuild(d, 1)
            if secret is None:
                return None, {**metrics, "secagg_failed": 1.0}
            key = X25519PrivateKey.from_private_bytes(secret.to_bytes(32, "little"))
            for j in graph[d]:
                if j in alive:  # j added +PRG(s_jd) when j < d, -PRG(s_jd) when j > d
                    removals.append(("-" if j < d else "+", pair_seed(key, total.public_keys[j])))
        names = sorted(total.totals)
        if not names:
            return total, metrics
        words = np.concatenate([total.totals[n].ravel().view(np.uint64) for n in names])
        for sign, seed in removals:
            mask = prg(seed, words.size)
            words = words - mask if sign == "-" else words + mask
        offset = 0
        for n in names:
            size = total.totals[n].size
            total.totals[n] = words[offset : offset + size].view(np.int64).reshape(total.totals[n].shape).copy()
            offset += size
        return total, metrics
