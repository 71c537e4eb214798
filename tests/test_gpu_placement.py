"""GPU placement without a GPU: engine.num_gpus validation, the cluster check against the GPUs Ray
reports (patched), and worker results that hold no torch tensors (so no CUDA tensor can reach
Ray's object store)."""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import pytest
import torch

from fedsim.config import EngineConfig, load_config
from fedsim.engine import cluster
from fedsim.engine.worker import WorkerCore
from fedsim.errors import ClusterError, ConfigError
from fedsim.pipeline.base import build_pipeline
from fedsim.protocol import Cohort
from fedsim.strategies import build_strategy
from fedsim.tasks.factory import build_task


@pytest.mark.parametrize("value", [0, 0.5, 0.25, 0.125, 0.2, 0.3333, 1, 2, 4])
def test_whole_gpus_and_even_shares_of_one_are_accepted(value: float) -> None:
    assert load_config(None, [f"engine.num_gpus={value}"]).engine.num_gpus == value


@pytest.mark.parametrize("value", [0.3, 0.7, 1.5, 0.6])
def test_gpu_shares_that_do_not_divide_a_gpu_are_refused_in_one_line(value: float) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(None, [f"engine.num_gpus={value}"])
    assert str(error.value) == (f"engine.num_gpus: expected 0, a whole number of GPUs or 1/k of one "
                                f"(0.5, 0.25, ...: k workers share a GPU), got {value}")
    with pytest.raises(ConfigError, match="^engine.num_gpus: .*greater than or equal to 0"):
        load_config(None, ["engine.num_gpus=-1"])


def _cluster_with(monkeypatch: pytest.MonkeyPatch, gpus: float) -> None:
    resources = {"CPU": 16.0, "memory": 64.0 * 2**30, **({"GPU": gpus} if gpus else {})}
    monkeypatch.setattr(cluster.ray, "cluster_resources", lambda: resources)


def test_gpu_requests_are_checked_against_the_gpus_the_cluster_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    _cluster_with(monkeypatch, 0)
    with pytest.raises(ClusterError, match=r"^engine.num_gpus: each worker asks for 0.25 GPU but the Ray cluster has no GPUs"):
        cluster.check_resources(EngineConfig(num_gpus=0.25), 4)
    _cluster_with(monkeypatch, 1)
    for workers, share in ((1, 1.0), (2, 0.5), (4, 0.25)):  # 1, 2 and 4 workers per GPU fit
        cluster.check_resources(EngineConfig(num_gpus=share), workers)
    with pytest.raises(ClusterError, match=r"^engine.num_gpus: 5 workers x 0.25 GPU = 1.25 GPUs, but the cluster has 1"):
        cluster.check_resources(EngineConfig(num_gpus=0.25), 5)
    with pytest.raises(ClusterError, match=r"^engine.num_gpus: 2 workers x 1.0 GPU = 2 GPUs, but the cluster has 1"):
        cluster.check_resources(EngineConfig(num_gpus=1), 2)


def _tensors_in(value: Any, seen: set[int] | None = None) -> Iterator[str]:
    """Paths of torch tensors (or object arrays) anywhere inside `value`."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, torch.Tensor):
        yield type(value).__name__
    elif isinstance(value, np.ndarray):
        if value.dtype == object:
            yield "object array"
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from (f"[{key!r}]{path}" for path in _tensors_in(item, seen))
    elif isinstance(value, (list, tuple, set, frozenset)):
        for index, item in enumerate(value):
            yield from (f"[{index}]{path}" for path in _tensors_in(item, seen))
    elif hasattr(value, "__dict__") or hasattr(value, "__slots__"):
        fields = dict(vars(value)) if hasattr(value, "__dict__") else {}
        fields.update({name: getattr(value, name) for name in getattr(value, "__slots__", ()) if hasattr(value, name)})
        for name, item in fields.items():
            yield from (f".{name}{path}" for path in _tensors_in(item, seen))


@pytest.mark.parametrize("vectorized", [0, 2])
@pytest.mark.parametrize("strategy", ["fedavg", "scaffold"])  # scaffold: states come back too
def test_what_a_worker_returns_holds_arrays_not_tensors(strategy: str, vectorized: int) -> None:
    config = load_config(None, [
        "data.source={kind: synthetic, classes: 3, train_samples: 120, test_samples: 30}", "data.hospitals=3",
        f"strategy={strategy}", f"engine.vectorized_hospitals={vectorized}", "train.epochs=1",
    ])
    task = build_task(config, None)
    strategy_ = build_strategy(config, task)
    worker = WorkerCore(task, strategy_, build_pipeline(config, task), use_gpu=False, threads=1)
    broadcast = strategy_.initial_broadcast(task.initial_params(0))
    hospitals = np.arange(3)
    cohort = Cohort(hospitals, task.hospital_sizes(), np.ones(3, dtype=np.int64))
    instructions = strategy_.configure(1, cohort)
    returned = worker.train(1, 0, broadcast, instructions, *[None] * 3, cohort=list(hospitals))
    assert len(returned) == (5 if strategy == "scaffold" else 2)  # partial, reports (, a state per hospital)
    assert list(_tensors_in(returned)) == []
    evaluated = worker.evaluate(broadcast, [0, 1], [0], *returned[2:4])
    assert list(_tensors_in(evaluated)) == []
