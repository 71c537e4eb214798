"""experiments/compare.py's machinery: planning, running under one Ray session, tabulating."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedsim.target import parse_target
from fedsim.comparison import (
    load_variants, parse_strategy, plan_runs, plan_variants, run_all, strategy_label, strategy_variant,
    summary_table, targets_table,
)
from fedsim.config import ConfigError

TINY = [
    "rounds=1",
    "data.source={kind: synthetic, classes: 2, train_samples: 300, test_samples: 60}",
    "data.hospitals=4",
    "train.epochs=1",
]


def test_strategy_specs_and_labels() -> None:
    assert parse_strategy("fedavg") == {"name": "fedavg"}
    assert strategy_label(parse_strategy("{name: fedprox, mu: 0.1}")) == "fedprox(mu=0.1)"
    with pytest.raises(ConfigError, match="--strategies"):
        parse_strategy("[1, 2]")
    with pytest.raises(ConfigError, match="strategy.mu"):
        plan_runs(None, TINY, ["{name: fedprox, mu: -1}"], [0])


def test_run_folders_have_shell_friendly_names_and_never_share_one(tmp_path: Path) -> None:
    from fedsim.results import safe_name

    assert safe_name("fedprox(mu=0.01)") == "fedprox-mu-0.01"
    assert safe_name("fedmrl(qmix=False,fairness_lambda=0)") == "fedmrl-qmix-False-fairness_lambda-0"
    assert safe_name("no fairness") == "no-fairness"
    variants = tmp_path / "variants.yaml"
    variants.write_text("'a b': {seed: 1}\na-b: {seed: 2}\n")
    with pytest.raises(ConfigError, match="variants 'a b' and 'a-b' would share the folder a-b"):
        plan_variants(None, TINY, load_variants(variants), [0])


def test_fedmrl_ablations_file_names_its_runs_as_strategies_would() -> None:
    """Runs made with --strategies and with the variants file share labels and configs, so either
    command reuses the other's finished runs."""
    variants = load_variants(Path(__file__).parents[1] / "experiments" / "variants" / "fedmrl_ablations.yaml")
    from_file = plan_variants(None, TINY, variants, [0])
    from_strategies = plan_variants(None, TINY, [strategy_variant(v.overrides[0].removeprefix("strategy=")) for v in variants], [0])
    assert len(from_file) == 11 and from_file == from_strategies
    assert sum(config.strategy.name == "fedmrl" for _, _, config in from_file) == 7


def test_compare_runs_strategies_by_seeds_and_tabulates(ray_cluster, tmp_path: Path) -> None:
    runs = plan_runs(None, TINY, ["fedavg", "{name: fedprox, mu: 0.1}"], [0, 1])
    combined = run_all(runs, tmp_path)
    assert combined.num_rows == 4
    assert pq.read_table(tmp_path / "comparison.parquet").num_rows == 4
    accuracy = {(row["strategy"], row["seed"]): row["global_accuracy"] for row in combined.to_pylist()}
    table = summary_table(combined)
    lines = table.splitlines()
    assert lines[0].startswith("| strategy | seeds | accuracy")
    fedavg_row = next(line for line in lines if line.startswith("| fedavg |"))
    mean = (accuracy[("fedavg", 0)] + accuracy[("fedavg", 1)]) / 2
    assert f"{mean:.3f} ±" in fedavg_row and "| 2 |" in fedavg_row
    assert any(line.startswith("| fedprox(mu=0.1) |") for line in lines)
    assert sorted(path.name for path in tmp_path.iterdir() if path.is_dir()) == ["fedavg", "fedprox-mu-0.1"]
    again = run_all(runs, tmp_path)  # finished runs are reused, not rerun
    assert again.to_pylist() == combined.to_pylist()


def _rows(curves: dict[tuple[str, int], list[float]], clock: dict[tuple[str, int], list[float]] | None = None) -> pa.Table:
    """A comparison table from per-(variant, seed) curves of one metric (round 1, 2, ...)."""
    records = []
    for (label, seed), values in curves.items():
        for index, value in enumerate(values):
            record = {"strategy": label, "seed": seed, "round": index + 1, "global_accuracy": value}
            if clock is not None:
                record["sim_clock"] = clock[(label, seed)][index]
            records.append(record)
    return pa.Table.from_pylist(records)


def _cells(table: str, label: str) -> list[str]:
    row = next(line for line in table.splitlines() if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in row.strip("|").split("|")]


def test_summary_shows_the_final_round_beside_the_last_five_and_no_spread_for_one_seed() -> None:
    nan = float("nan")
    rows = _rows({
        ("a", 0): [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
        ("a", 1): [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.9],
        ("b", 0): [0.5, nan, 0.6, nan, 0.7, nan, 0.8],  # evaluated every other round
    })
    table = summary_table(rows)
    header = [cell.strip() for cell in table.splitlines()[0].strip("|").split("|")]
    assert header[:4] == ["strategy", "seeds", "accuracy", "accuracy, last 5"]
    a = _cells(table, "a")
    # final: 0.7 and 0.9; last 5: (0.3+...+0.7)/5 = 0.5 and (0.3+0.4+0.5+0.6+0.9)/5 = 0.54
    assert a[:4] == ["a", "2", f"0.800 ± {np.std([0.7, 0.9], ddof=1):.3f}", f"0.520 ± {np.std([0.5, 0.54], ddof=1):.3f}"]
    assert _cells(table, "b")[:4] == ["b", "1", "0.800 ± –", "0.650 ± –"]  # last 5 evaluated rounds: 0.5..0.8
    assert a[4] == "-" and "0.000" not in table  # a column the rows lack; no invented spread


def test_rounds_to_a_target_with_mean_std_or_how_many_seeds_fell_short() -> None:
    rows = _rows({("fast", 0): [0.5, 0.85, 0.9], ("fast", 1): [0.5, 0.6, 0.81], ("slow", 0): [0.1, 0.2, 0.9],
                  ("slow", 1): [0.1, 0.2, 0.3]})
    table = targets_table(rows, [parse_target("global_accuracy=0.8")])
    assert table.splitlines()[0] == "| strategy | seeds | rounds to global_accuracy >= 0.8 |"
    assert _cells(table, "fast") == ["fast", "2", f"2.5 ± {np.std([2, 3], ddof=1):.1f}"]
    assert _cells(table, "slow") == ["slow", "2", "not reached by 1/2 seeds"]
    at_most = targets_table(rows, [parse_target("global_accuracy<=0.15")])
    assert _cells(at_most, "slow") == ["slow", "2", "1.0 ± 0.0"] and "not reached by 2/2" in at_most


def test_rounds_to_a_target_adds_simulated_hours_where_the_runs_simulate_time() -> None:
    curves = {("a", 0): [0.5, 0.9, 0.9], ("a", 1): [0.9, 0.9, 0.9]}
    clock = {("a", 0): [3600.0, 9000.0, 12600.0], ("a", 1): [1800.0, 3600.0, 5400.0]}
    table = targets_table(_rows(curves, clock), [parse_target("global_accuracy>=0.8")])
    assert table.splitlines()[0] == ("| strategy | seeds | rounds to global_accuracy >= 0.8 "
                                     "| simulated hours to global_accuracy >= 0.8 |")
    assert _cells(table, "a")[3] == f"1.500 ± {np.std([2.5, 0.5], ddof=1):.3f}"  # 9000 s and 1800 s
    assert "simulated" not in targets_table(_rows(curves), [parse_target("global_accuracy=0.8")])


def _compare_script():
    spec = importlib.util.spec_from_file_location("compare", Path(__file__).parents[1] / "experiments" / "compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_bad_target_fails_with_one_line_before_anything_runs(tmp_path: Path, capsys) -> None:
    main = _compare_script().main
    for bad, message in (("global_accuracy", "expected METRIC=VALUE"), ("global_accuracy=high", "expected METRIC=VALUE")):
        assert main(["--set", "rounds=1", "--target", bad, "--out", str(tmp_path / "out")]) == 2
        error = capsys.readouterr().err
        assert message in error and error.count("\n") == 1
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="--target global_kapa: no such column"):
        targets_table(_rows({("a", 0): [0.5]}), [parse_target("global_kapa=0.5")])
