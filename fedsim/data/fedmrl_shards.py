"""The FedMRL authors' shard sampling, as their public code does it (github Pranabiitp/FedMRL,
`non_iid_data_preparation.py`; read, not copied), so a user can reproduce their setting.

Their procedure, for every client independently and every class c with n_c samples:
  for each of min(shards_per_class, n_c) shards:
    with probability eta: draw `samples_per_shard` distinct samples of class c;
    otherwise: draw `samples_per_shard` distinct samples of class c, then `samples_per_shard`
      draws *with replacement* from those (so fewer distinct samples);
  and copy every drawn file into the client's folder of class c.
Both branches draw from the same class c: eta does not move samples between classes or clients,
it only thins the otherwise-branch by sampling with replacement. Every client holds samples of
every class, and because files are copied, a client keeps the distinct samples it drew (a file
drawn twice is one file) and clients overlap (the same sample at several clients); samples no
client drew are unused. Their defaults: 4 clients, 200 shards per class, 5 samples per shard,
eta = 1.0.

Unlike fedsim.data.partition's schemes this is no disjoint cover: hospital parts may share
samples, so a hospital's own test split cannot be cut from its draw (other hospitals train on
nearly all of it); fedsim.data.federation holds local test images out before the draw.
fedsim's own shard rule (`scheme: shards`, fedsim.data.partition.partition_shards) is the
disjoint, label-skewed reading of the paper's text.
"""

from __future__ import annotations

import numpy as np

from fedsim.data.errors import DataError
from fedsim.data.partition import _check_labels, _sorted_parts


def partition_authors_shards(
    labels: np.ndarray, num_hospitals: int, eta: float, shards_per_class: int, samples_per_shard: int, seed: int
) -> list[np.ndarray]:
    """Each hospital's distinct sample indices under the authors' procedure (module docstring)."""
    labels = _check_labels(labels, num_hospitals)
    if not 0 <= eta <= 1:
        raise DataError(f"eta: expected a probability in [0, 1], got {eta}")
    if shards_per_class < 1:
        raise DataError(f"shards_per_class: expected >= 1, got {shards_per_class}")
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    smallest = min(len(members) for members in by_class)
    if not 1 <= samples_per_shard <= smallest:
        raise DataError(
            f"samples_per_shard: expected 1..{smallest} (the smallest class's samples; drawn without replacement), "
            f"got {samples_per_shard}"
        )
    rng = np.random.default_rng(seed)
    parts = []
    for _ in range(num_hospitals):
        drawn = []
        for members in by_class:
            for _ in range(min(shards_per_class, len(members))):
                distinct = rng.choice(members, samples_per_shard, replace=False)
                drawn.append(distinct if rng.random() < eta else rng.choice(distinct, samples_per_shard, replace=True))
        parts.append(np.unique(np.concatenate(drawn)))
    return _sorted_parts(parts)
