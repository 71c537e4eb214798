"""A worker's warm-up (started by the pool as soon as the worker exists) changes no result."""

from __future__ import annotations

import numpy as np
import torch

from fedsim.config import load_config
from fedsim.engine.worker import WorkerCore
from fedsim.pipeline.base import build_pipeline
from fedsim.protocol import Cohort
from fedsim.strategies import build_strategy
from fedsim.tasks.factory import build_task


def _trained(warm: bool) -> tuple[dict[str, np.ndarray], list[float], torch.Tensor]:
    config = load_config(None, ["data.source={kind: synthetic, classes: 3, train_samples: 90, test_samples: 30}",
                                "data.hospitals=3", "train.epochs=1"])
    task = build_task(config, None)
    strategy = build_strategy(config, task)
    worker = WorkerCore(task, strategy, build_pipeline(config, task), use_gpu=False, threads=1)
    torch.manual_seed(123)
    if warm:
        assert worker.warm_up() is True
    after = torch.rand(1)  # the global RNG is where it was
    cohort = Cohort(np.arange(3), task.hospital_sizes(), np.ones(3, dtype=np.int64))
    partial, reports = worker.train(1, 0, task.initial_params(0), strategy.configure(1, cohort), None, None, None)
    return partial.value(), [r.metrics["train_loss"] for r in reports], after


def test_warming_up_a_worker_changes_no_bit_of_its_round() -> None:
    cold, warm = _trained(False), _trained(True)
    assert cold[1] == warm[1]
    assert torch.equal(cold[2], warm[2])
    assert cold[0].keys() == warm[0].keys()
    for name in cold[0]:
        np.testing.assert_array_equal(np.asarray(warm[0][name]), np.asarray(cold[0][name]), err_msg=name)
