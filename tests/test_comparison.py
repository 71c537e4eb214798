"""experiments/compare.py's machinery: planning, running under one Ray session, tabulating."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fedsim.comparison import load_variants, parse_strategy, plan_runs, plan_variants, run_all, strategy_label, strategy_variant, summary_table
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
