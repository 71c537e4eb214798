"""End-to-end runs on a local Ray cluster: results files, determinism, interruption."""

from __future__ import annotations

import math

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from fedsim.cli import main
from fedsim.config import load_config
from fedsim.report import render_report
from fedsim.simulation import Simulation

SMALL = [
    "data.source={kind: synthetic, classes: 3, train_samples: 1200, test_samples: 300}",
    "data.hospitals=20",
    "data.partition={scheme: dirichlet, alpha: 0.5, min_samples: 5}",
    "train.epochs=1",
]


def _run(tmp_path: Path, name: str, overrides: list[str]) -> Path:
    config = load_config(None, SMALL + overrides)
    out = tmp_path / name
    Simulation(config, out, quiet=True).run()
    return out


def test_three_rounds_twenty_hospitals_two_workers(ray_cluster, tmp_path: Path) -> None:
    out = _run(tmp_path, "run", ["rounds=3", "engine.workers=2", "sampling.clients_per_round=0.5"])
    rounds = pq.read_table(out / "rounds.parquet").to_pylist()
    assert [row["round"] for row in rounds] == [1, 2, 3]
    for row in rounds:
        assert row["hospitals"] == 10
        assert 0 <= row["global_accuracy"] <= 1 and 0 <= row["global_macro_auc"] <= 1
        assert row["hospital_accuracy_worst10"] <= row["hospital_accuracy_mean"]
        assert row["bytes_sent"] > 0 and row["bytes_received"] > 0
    clients = pq.read_table(out / "clients.parquet").to_pylist()
    assert len(clients) == 3 * 10
    partition = pq.read_table(out / "partition.parquet").to_pylist()
    sizes = {row["hospital"]: row["train_samples"] for row in partition}
    for row in clients:
        assert row["samples"] == sizes[row["hospital"]]
        assert np.isfinite(row["train_loss"]) and 0 <= row["local_accuracy"] <= 1
    weights = [sum(r["weight"] for r in clients if r["round"] == k) for k in (1, 2, 3)]
    np.testing.assert_allclose(weights, 1.0)
    evaluations = pq.read_table(out / "hospital_eval.parquet")
    assert evaluations.num_rows == 3 * 20
    assert load_config(out / "config.yaml") == load_config(None, SMALL + ["rounds=3", "sampling.clients_per_round=0.5"])
    assert "(complete)" in render_report(out)


def test_training_improves_on_chance(ray_cluster, tmp_path: Path) -> None:
    out = _run(tmp_path, "learn", ["rounds=8", "data.hospitals=4", "data.partition={scheme: iid}"])
    accuracy = pq.read_table(out / "rounds.parquet").column("global_accuracy").to_pylist()
    assert accuracy[0] < 0.45 < accuracy[-1]  # three balanced classes: chance is 1/3


def _metrics(out: Path, table: str) -> dict:
    """The table's columns (wall-clock seconds aside), NaN as None so that equal tables compare
    equal (an undefined score, e.g. a class missing from a hospital's test split, is NaN)."""
    data = pq.read_table(out / f"{table}.parquet").to_pydict()
    return {key: [None if isinstance(v, float) and math.isnan(v) else v for v in values]
            for key, values in data.items() if key != "seconds"}


def test_bitwise_identical_metrics_on_one_and_two_workers(ray_cluster, tmp_path: Path) -> None:
    overrides = ["rounds=2", "sampling.clients_per_round=8", "data.scanner_shift=0.5", "eval.hospitals=sampled"]
    one = _run(tmp_path, "one", overrides + ["engine.workers=1"])
    two = _run(tmp_path, "two", overrides + ["engine.workers=2"])
    for table in ("rounds", "clients", "hospital_eval", "partition"):
        assert _metrics(one, table) == _metrics(two, table), table
    scored = pq.read_table(one / "hospital_eval.parquet").to_pydict()
    trained = pq.read_table(one / "clients.parquet").to_pydict()
    assert list(zip(scored["round"], scored["hospital"])) == list(zip(trained["round"], trained["hospital"]))


def test_interrupted_run_keeps_every_finished_round(tmp_path: Path) -> None:
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "fedsim.cli", "run", "--quiet", "--out", str(out), "--set", "rounds=50", "--set", "engine.workers=1"]
    for setting in SMALL:
        command += ["--set", setting]
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while len(list((out / "rounds.parquet").glob("part-*.parquet"))) < 2:
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "no rounds finished in time"
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the driver and the Ray cluster it started
        process.wait()
    rounds = pq.read_table(out / "rounds.parquet").to_pylist()
    finished = [row["round"] for row in rounds]
    assert len(finished) >= 2 and sorted(finished) == list(range(1, len(finished) + 1))
    clients = pq.read_table(out / "clients.parquet").to_pylist()
    assert {row["round"] for row in clients} >= set(finished)
    assert f"incomplete: {len(finished)} of 50 rounds finished" in render_report(out)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["data.partition.alpha=0"], "data.partition.alpha"),
        (["data.partition.alpha=-1"], "data.partition.alpha"),
        (["data.hospitals=5000"], "data.hospitals"),
        (["sampling.clients_per_round=30"], "sampling.clients_per_round"),
        (["data.hopsitals=5"], "data.hopsitals: unknown key"),
        (["train.lr=fast"], "train.lr"),
        (["engine.workers=0"], "engine.workers"),
        (["data.source={kind: medmnist, path: /nonexistent/x.npz}"], "/nonexistent/x.npz"),
    ],
)
def test_config_errors_stop_before_ray_with_one_line(overrides, field, tmp_path: Path, capsys, monkeypatch) -> None:
    def ray_must_not_start(*args, **kwargs):
        raise AssertionError("Ray was started for an invalid config")

    monkeypatch.setattr("fedsim.engine.ray_backend.ray_session", ray_must_not_start)
    args = ["run", "--out", str(tmp_path / "never")]
    for setting in overrides:
        args += ["--set", setting]
    assert main(args) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and field in error, error
    assert not (tmp_path / "never").exists()


def test_more_hospitals_than_samples_of_a_real_file(tmp_path: Path, capsys) -> None:
    from conftest import SHARED_DATA

    path = SHARED_DATA / "breastmnist.npz"
    if not path.is_file():
        pytest.skip(f"real data not found at {path}")
    assert main(["run", "--set", f"data.source={{kind: medmnist, path: {path}}}", "--set", "data.hospitals=1000",
                 "--set", "data.partition={scheme: iid}", "--out", str(tmp_path / "x")]) == 2
    assert "data.hospitals: expected at most the 546 training samples" in capsys.readouterr().err


def test_existing_run_directory_is_never_overwritten(tmp_path: Path, capsys) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "rounds.parquet").mkdir()
    assert main(["run", "--out", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "rounds.parquet").is_dir()


def test_quickstart_example_spells_out_the_embedded_defaults() -> None:
    example = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "quickstart.yaml"
    assert load_config(example) == load_config(None)


def test_gpu_request_on_a_gpu_less_cluster_fails_fast(ray_cluster) -> None:
    from fedsim.config import EngineConfig
    from fedsim.engine.cluster import ClusterError, check_resources

    with pytest.raises(ClusterError, match="engine.num_gpus: .*no GPUs"):
        check_resources(EngineConfig(num_gpus=0.25), 2)
    with pytest.raises(ClusterError, match="engine.num_cpus"):
        check_resources(EngineConfig(num_cpus=2), 4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where torch sees no GPU")
def test_a_worker_given_a_gpu_its_torch_cannot_use_refuses_instead_of_running_on_cpu() -> None:
    from fedsim.engine.worker import WorkerCore
    from fedsim.pipeline.base import Pipeline
    from fedsim.strategies.fedavg import FedAvg
    from toy_task import ToyTask

    with pytest.raises(RuntimeError, match="engine.num_gpus: .*cannot use it"):
        WorkerCore(ToyTask(num_hospitals=2), FedAvg(), Pipeline([]), use_gpu=True, threads=1)


STRATEGY_COLUMNS = {
    "fedavg": ([], []),
    "{name: fedprox, mu: 0.1}": (["mu"], []),
    "fednova": (["fednova_a"], ["strategy_tau_eff"]),
    "fedbn": ([], []),
    "scaffold": (["control_variate_norm"], ["strategy_control_variate_norm"]),
    "fedadam": ([], ["strategy_server_step_norm"]),
    "fedyogi": ([], ["strategy_server_step_norm"]),
}


@pytest.mark.parametrize("strategy", list(STRATEGY_COLUMNS))
def test_every_strategy_runs_and_logs_its_quantities(strategy: str, ray_cluster, tmp_path: Path) -> None:
    overrides = ["rounds=2", "data.hospitals=6", f"strategy={strategy}", "train.epochs_mode=uniform", "train.max_epochs=3"]
    out = _run(tmp_path, "s", overrides)
    client_columns, round_columns = STRATEGY_COLUMNS[strategy]
    clients = pq.read_table(out / "clients.parquet").to_pydict()
    rounds = pq.read_table(out / "rounds.parquet").to_pydict()
    for column in client_columns:
        assert np.all(np.isfinite(clients[column])), column
    for column in round_columns:
        assert np.all(np.isfinite(rounds[column])), column
    assert np.all(np.isfinite(rounds["global_accuracy"])) and np.all(np.isfinite(rounds["hospital_accuracy_mean"]))
    assert len(set(clients["steps"])) > 1  # hospitals did different amounts of local work
