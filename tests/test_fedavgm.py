"""FedAvgM against Hsu et al. (2019) by hand, through the engine's round protocol."""

from __future__ import annotations

import numpy as np
import pytest

from fedsim.config import load_config
from fedsim.strategies.fedavg import FedAvg
from fedsim.strategies.fedavgm import FedAvgM
from in_process import SEED, one_round
from toy_task import ToyTask, full_cohort


def _mean_update(task: ToyTask, start: np.ndarray, round_index: int) -> np.ndarray:
    from fedsim.seeding import Stream, seed_for

    p = task.hospital_sizes() / task.hospital_sizes().sum()
    local = [task.local_update(h, start, seed_for(SEED, Stream.LOCAL_TRAINING, round_index, h)) for h in range(task.num_hospitals)]
    return sum(pk * (w.astype(np.float64) - start) for pk, w in zip(p, local))


def test_two_rounds_of_server_momentum_match_the_formula() -> None:
    task, cohort = ToyTask(num_hospitals=4), full_cohort(ToyTask(num_hospitals=4))
    lr, beta = 0.5, 0.8
    strategy = FedAvgM(server_lr=lr, momentum=beta)
    first, _, states, metrics = one_round(task, strategy, cohort)
    w0 = np.zeros(5)
    v1 = _mean_update(task, w0.astype(np.float32), 1)
    np.testing.assert_allclose(first["w"], w0 + lr * v1, atol=1e-6)
    assert metrics["server_velocity_norm"] == pytest.approx(np.linalg.norm(v1), rel=1e-6)
    second, *_ = one_round(task, strategy, cohort, broadcast=first, states=states)  # the same round seeds again
    v2 = beta * v1 + _mean_update(task, first["w"], 1)
    np.testing.assert_allclose(second["w"], first["w"] + lr * v2, atol=1e-6)


def test_no_momentum_and_unit_rate_is_fedavg() -> None:
    task = ToyTask(num_hospitals=5)
    fedavgm, *_ = one_round(task, FedAvgM(server_lr=1.0, momentum=0.0), full_cohort(task))
    fedavg, *_ = one_round(task, FedAvg(), full_cohort(task))
    np.testing.assert_allclose(fedavgm["w"], fedavg["w"], atol=1e-6)


def test_config_registers_fedavgm_with_validated_settings() -> None:
    config = load_config(None, ["strategy={name: fedavgm, momentum: 0.5}"])
    assert config.strategy.momentum == 0.5 and config.strategy.server_lr == 1.0
    with pytest.raises(ValueError, match="strategy.momentum"):
        load_config(None, ["strategy={name: fedavgm, momentum: 1.0}"])
