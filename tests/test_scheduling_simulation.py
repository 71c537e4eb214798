"""The scheduling task on the engine: a federated DQN run of 10 hospitals writes its metrics,
identically on 1 and 2 workers, and the baselines compare in one table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from fedsim.cli import main
from fedsim.comparison import load_variants, plan_variants, run_all, summary_table
from fedsim.config import ConfigError, load_config
from fedsim.scheduling.metrics import METRIC_NAMES
from fedsim.simulation import Simulation

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
EXAMPLE = EXPERIMENTS / "configs" / "scheduling.yaml"
TINY = [
    "task=scheduling",
    "rounds=2",
    "train.epochs=1",
    "scheduling={eval_episodes: 1, env: {episode_hours: 4}, dqn: {steps_per_epoch: 60, learning_starts: 30, "
    "buffer_size: 200, batch_size: 16, target_update_steps: 40, exploration_steps: 120}}",
]
MAIN = ["wait_mean", "wait_p95", "acuity_weighted_wait", "utilisation", "transfers", "episode_return"]


def _assert_same_metrics(one: Path, two: Path, table: str) -> None:
    """Bitwise-equal columns (NaN where the other has NaN), wall-clock seconds aside."""
    first, second = (pq.read_table(run / f"{table}.parquet").to_pydict() for run in (one, two))
    assert first.keys() == second.keys(), table
    for column in first.keys() - {"seconds"}:
        np.testing.assert_array_equal(np.array(first[column]), np.array(second[column]), err_msg=f"{table}.{column}")


def test_federated_dqn_of_ten_hospitals_writes_metrics_identically_on_one_and_two_workers(ray_cluster, tmp_path: Path) -> None:
    runs = {}
    for workers in (1, 2):
        config = load_config(None, [*TINY, "scheduling.hospitals=10", f"engine.workers={workers}"])
        runs[workers] = tmp_path / f"workers-{workers}"
        Simulation(config, runs[workers], quiet=True).run()
    out = runs[2]
    rounds = pq.read_table(out / "rounds.parquet").to_pylist()
    assert [row["round"] for row in rounds] == [1, 2]
    for row in rounds:
        assert row["hospitals"] == 10 and row["bytes_received"] > 0
        assert all(np.isfinite(row[f"global_{name}"]) for name in MAIN)
        assert row["hospital_acuity_weighted_wait_worst10"] >= row["hospital_acuity_weighted_wait_mean"]
    assert {f"global_{name}" for name in METRIC_NAMES} <= set(rounds[0])
    clients = pq.read_table(out / "clients.parquet").to_pylist()
    assert len(clients) == 20
    by_round = {r: {row["hospital"]: row for row in clients if row["round"] == r} for r in (1, 2)}
    for hospital in range(10):
        first, second = by_round[1][hospital], by_round[2][hospital]
        assert first["samples"] == 60 and first["replay_size"] == 60 and second["replay_size"] == 120
        assert second["env_steps"] == 120 and second["epsilon"] < first["epsilon"]  # engine-held state came back
    evaluations = pq.read_table(out / "hospital_eval.parquet").to_pylist()
    assert len(evaluations) == 20 and set(METRIC_NAMES) <= set(evaluations[0])
    assert pq.read_table(out / "partition.parquet").num_rows == 10
    for table in ("rounds", "clients", "hospital_eval", "partition"):
        _assert_same_metrics(runs[1], runs[2], table)


def test_local_only_and_centralised_baselines_compare_in_one_table(ray_cluster, tmp_path: Path) -> None:
    variants = tmp_path / "variants.yaml"
    variants.write_text("local: {strategy: local_only}\ncentral: {scheduling: {centralised: true}}\n")
    overrides = [*TINY, "rounds=1", "scheduling.hospitals=3", "engine.workers=1"]
    rows = run_all(plan_variants(None, overrides, load_variants(variants), [0]), tmp_path / "out")
    assert rows.num_rows == 2 * 3  # hospital evaluations: 3 hospitals x 2 variants
    lines = summary_table(rows, "scheduling").splitlines()
    assert lines[0] == ("| strategy | seeds | acuity-weighted wait (h) | acuity-weighted wait (h), last 5 "
                        "| p95 wait, acuity 1-2 (h) | p95 wait, acuity 1-2 (h), last 5 | utilisation | utilisation, last 5 |")
    local = [row for row in rows.to_pylist() if row["strategy"] == "local"]
    mean = np.mean([row["acuity_weighted_wait"] for row in local])
    assert any(line.startswith(f"| local | 1 | {mean:.3f} ± – | {mean:.3f} ± – |") for line in lines)  # one round: final = last 5
    assert any(line.startswith("| central | 1 |") for line in lines)
    local_rounds = pq.read_table(tmp_path / "out" / "local" / "seed-0" / "rounds.parquet").to_pylist()
    assert local_rounds[0]["bytes_received"] == 0  # nothing leaves a hospital
    central = pq.read_table(tmp_path / "out" / "central" / "seed-0" / "clients.parquet").to_pylist()
    assert sorted(row["samples"] for row in central) == [0, 0, 3 * 60]  # one site learns from every hospital


def test_the_example_config_and_baselines_file_plan_every_run() -> None:
    config = EXPERIMENTS / "configs" / "scheduling.yaml"
    runs = plan_variants(str(config), [], load_variants(EXPERIMENTS / "variants" / "scheduling_baselines.yaml"), [0, 1, 2])
    assert len(runs) == 6 * 3
    base = runs[0][2]
    assert base.task == "scheduling" and base.num_hospitals() == 10 and base.strategy.name == "fedavg"
    labels = {label: cfg for label, seed, cfg in runs if seed == 0}
    assert labels["local-only-dqn"].strategy.name == "local_only"
    assert labels["centralised-dqn"].scheduling.centralised
    assert {labels[name].scheduling.policy for name in ("fifo", "static-priority", "mlfq")} == {"fifo", "priority", "mlfq"}


def test_a_bad_variants_file_fails_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "v.yaml"
    path.write_text("fifo: policy=fifo\n")
    with pytest.raises(ConfigError, match="fifo: expected a mapping"):
        load_variants(path)
    path.write_text("typo: {scheduling: {polcy: fifo}}\n")
    with pytest.raises(ConfigError, match="scheduling.polcy: unknown key"):
        plan_variants(None, ["task=scheduling"], load_variants(path), [0])


@pytest.mark.parametrize("strategy", ["fedbn", "scaffold", "fednova"])
def test_strategies_the_dqn_cannot_support_are_refused_before_ray_with_exit_2(strategy: str, capsys, monkeypatch) -> None:
    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("refused configs must not start Ray"))
    assert main(["run", str(EXAMPLE), "--set", f"strategy={strategy}", "--quiet"]) == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith(f"fedsim: error: strategy.name: {strategy} needs") and "\n" not in message


def test_fedprox_and_fedavgm_federate_the_dqn_for_two_rounds(tmp_path: Path) -> None:
    for strategy in ("{name: fedprox, mu: 0.1}", "fedavgm"):
        config = load_config(None, [*TINY, f"strategy={strategy}", "engine.backend=in_process"])
        out = tmp_path / config.strategy.name
        Simulation(config, out, quiet=True).run()
        rounds = pq.read_table(out / "rounds.parquet").to_pydict()
        assert rounds["round"] == [1, 2] and all(np.isfinite(rounds["global_acuity_weighted_wait"]))
