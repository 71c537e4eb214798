"""Seed streams derived from the run seed.

Every random choice is keyed by what it is for (a `Stream`) and by round and hospital, never by
which worker happens to run it. That is what makes a run bitwise identical on 1 or 64 workers.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Stream(IntEnum):
    """What a seed is for; each purpose gets an independent stream."""

    MODEL_INIT = 0
    SAMPLING = 1
    LOCAL_TRAINING = 2
    PARTITION = 3
    SCANNER = 4
    DATASET = 5
    LOCAL_WORK = 6
    UPDATE_STAGE = 7  # an update stage's randomness, per round, hospital and stage position
    SERVER_NOISE = 8  # central DP's noise on the server's sum, per round
    SECURE_AGGREGATION = 9  # secure aggregation's graph, keys, shares and dropouts, per round (and hospital)
    ATTACK = 10  # which hospitals an `attack` makes malicious
    CLIP_COUNT_NOISE = 11  # adaptive clipping's noise on the count of unclipped updates, per round
    FEDERATED_DROPOUT = 12  # each hospital's sub-network under federated dropout, per round and hospital
    SYSTEM_PROFILES = 13  # which system tier (speed, bandwidth, hours online, dropout) each hospital is in
    SYSTEM_DROPOUT = 14  # whether a hospital drops out mid-round, per round and hospital
    SKETCH = 100  # fedmrl's count-sketch projection
    FEDMRL = 101  # fedmrl's QMIX exploration and replay sampling
    SCHEDULING_PROFILES = 200  # each hospital's scheduling profile (arrivals, acuity mix, resources)
    SCHEDULING_EVAL = 201  # the fixed evaluation episodes of the scheduling task
    FINE_TUNE = 300  # evaluation's fine-tuning of a copy of the model (eval.personalise_steps), per round and hospital
    PERSONAL_TRAINING = 301  # a hospital's personal model (Ditto's v_k), per round and hospital
    CLUSTER_INIT = 302  # IFCA's initial cluster models beyond the first, per cluster


def seed_for(run_seed: int, stream: Stream, *keys: int) -> int:
    """A 63-bit seed (valid for numpy and torch.manual_seed) for `stream` at `keys`."""
    entropy = [int(run_seed) & 0xFFFFFFFF, int(run_seed) >> 32, int(stream), *(int(k) for k in keys)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]) >> 1  # (a Python shift: a third faster)


def rng_for(run_seed: int, stream: Stream, *keys: int) -> np.random.Generator:
    return np.random.default_rng(seed_for(run_seed, stream, *keys))
