"""Sweeps on Ray Tune: one hive-partitioned dataset, resume without rerunning, plots and notebook."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pyarrow.dataset as ds
import pytest
import yaml

from fedsim.cli import main as fedsim_main
from fedsim.config import ConfigError, load_config
from fedsim.sweep import RESULTS, RUNS, SweepSpec, expand, load_sweep, run_sweep, trial_resources

REPO = Path(__file__).resolve().parents[1]
# Each trial reserves half a CPU for its driver and half for its worker: on the 2-CPU test cluster
# the two trials' placement groups, placed together, hold every CPU, so a worker scheduled outside
# its own trial's group would wait forever.
TINY = {
    "set": [
        "rounds=2",
        "data.source={kind: synthetic, classes: 3, train_samples: 600, test_samples: 200}",
        "train.epochs=1",
        "engine.workers=1",
        "engine.num_cpus=0.5",
        "eval.every=2",
    ],
    "samples_per_hospital": 40,
    "driver_cpus": 0.5,
    "grid": {"hospitals": [5], "alpha": [0.5], "eta": [0.8], "strategy": ["fedavg"], "seed": [0]},
}
ALPHA_TRIAL = "hospitals=5/alpha=0.5/eta=__HIVE_DEFAULT_PARTITION__/strategy=fedavg/seed=0"
ETA_TRIAL = "hospitals=5/alpha=__HIVE_DEFAULT_PARTITION__/eta=0.8/strategy=fedavg/seed=0"


def _spec(tmp_path: Path, spec: dict, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def sweep_dir(ray_cluster, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sweep")
    outcome = run_sweep(load_sweep(_spec(folder, TINY)), folder / "out", verbose=0)
    assert sorted(outcome.ran) == sorted([ALPHA_TRIAL, ETA_TRIAL]) and not outcome.failed, outcome
    return folder / "out"


def test_trials_land_in_one_hive_partitioned_dataset(sweep_dir: Path) -> None:
    table = ds.dataset(sweep_dir / RESULTS, partitioning="hive").to_table()
    rows = table.to_pylist()
    assert len(rows) == 2 * 2  # two trials x two rounds
    assert {"hospitals", "alpha", "eta", "strategy", "seed"} <= set(table.column_names)
    by_scheme = {row["alpha"] is None: row for row in rows}
    assert by_scheme[False]["alpha"] == "0.5" and by_scheme[False]["eta"] is None  # hive reads decimals as text
    assert by_scheme[True]["eta"] == "0.8"
    for row in rows:
        assert row["hospitals"] == 5 and row["strategy"] == "fedavg" and row["seed"] == 0
        assert row["seconds"] > 0 and row["bytes_sent"] > 0 and row["bytes_received"] > 0
        assert row["driver_peak_rss"] > 0 and row["workers_peak_rss"] > 0 and row["object_store_bytes"] > 0
        assert row["hospitals_trained"] == 5
    evaluated = [row for row in rows if row["round"] == 2]
    assert all(0 <= row["global_accuracy"] <= 1 for row in evaluated)
    for label in (ALPHA_TRIAL, ETA_TRIAL):
        assert (sweep_dir / RUNS / label / "config.yaml").is_file()
    alpha_config = yaml.safe_load((sweep_dir / RUNS / ALPHA_TRIAL / "config.yaml").read_text())
    assert alpha_config["data"]["partition"]["alpha"] == 0.5 and alpha_config["data"]["source"]["train_samples"] == 200


def test_rerun_skips_finished_trials_and_reruns_interrupted_ones(sweep_dir: Path, tmp_path: Path) -> None:
    finished = next((sweep_dir / RESULTS / ALPHA_TRIAL).glob("part-*.parquet"))
    finished_stamp = finished.stat().st_mtime_ns
    # What an interruption of the eta trial before its first checkpoint leaves: a run directory with
    # only its first round, no checkpoint, no results part (with a checkpoint, the trial resumes).
    shutil.rmtree(sweep_dir / RESULTS / ETA_TRIAL)
    for part in (sweep_dir / RUNS / ETA_TRIAL).glob("*.parquet/part-000002.parquet"):
        part.unlink()
    (sweep_dir / RUNS / ETA_TRIAL / "checkpoint.pkl").unlink()
    outcome = run_sweep(load_sweep(_spec(tmp_path, TINY)), sweep_dir, verbose=0)
    assert outcome.skipped == [ALPHA_TRIAL] and outcome.ran == [ETA_TRIAL] and not outcome.failed
    assert finished.stat().st_mtime_ns == finished_stamp
    rounds = ds.dataset(sweep_dir / RESULTS / ETA_TRIAL).to_table().column("round").to_pylist()
    assert sorted(rounds) == [1, 2]


def test_a_changed_config_never_mixes_into_finished_trials(sweep_dir: Path, tmp_path: Path) -> None:
    changed = {**TINY, "set": TINY["set"] + ["train.lr=0.01"]}
    with pytest.raises(ConfigError, match="holds a finished trial with another config"):
        run_sweep(load_sweep(_spec(tmp_path, changed)), sweep_dir, verbose=0)


def test_plot_command_writes_readable_pngs(sweep_dir: Path, tmp_path: Path, capsys) -> None:
    assert fedsim_main(["plot", str(sweep_dir), "--out", str(tmp_path / "plots")]) == 0
    written = [Path(line) for line in capsys.readouterr().out.split()]
    assert [path.name for path in written] == [
        "accuracy_vs_round.png", "worst_decile_vs_heterogeneity.png", "cost_vs_hospitals.png"
    ]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000
    from fedsim.plots.sweep import figures

    drawn = dict(figures(sweep_dir))
    worst = drawn["worst_decile_vs_heterogeneity"]
    assert worst._suptitle.get_text().endswith("(mean ± std over 1 seed: no spread)")
    assert [ax.get_xlabel() for ax in worst.axes] == ["alpha", "eta"]
    assert [ax.get_title() for ax in drawn["accuracy_vs_round"].axes if ax.get_visible()] == [
        "alpha=0.5, 5 hospitals", "eta=0.8, 5 hospitals"]


def test_plot_command_rejects_a_folder_without_results(tmp_path: Path, capsys) -> None:
    assert fedsim_main(["plot", str(tmp_path)]) == 2
    assert "not a run directory (config.yaml), a comparison (comparison.parquet) or a sweep directory" in capsys.readouterr().err
    (tmp_path / RESULTS).mkdir()
    assert fedsim_main(["plot", str(tmp_path)]) == 2
    assert "no finished trial yet" in capsys.readouterr().err


def test_notebook_runs_headless_on_the_sweep(sweep_dir: Path, monkeypatch) -> None:
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    monkeypatch.setenv("FEDSIM_SWEEP_DIR", str(sweep_dir))
    notebook = nbformat.read(REPO / "notebooks" / "analysis.ipynb", as_version=4)
    nbclient.NotebookClient(notebook, timeout=120, resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    images = [cell for cell in notebook.cells if cell.cell_type == "code"
              and any("image/png" in output.get("data", {}) for output in cell.outputs)]
    assert len(images) == 3
    assert "2 trials, 4 rows" in "".join(output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", []))


LR_SWEEP = {**TINY, "grid": {"train.lr": [0.01, 0.2], "seed": [0]}}


def test_a_sweep_over_any_config_key_reports_every_round_to_tune(ray_cluster, tmp_path: Path) -> None:
    """train.lr is no built-in axis: it lands in the hive layout, the trials' configs, the Tune
    trial names and configs, and Tune gets one report per round with fedsim's metrics."""
    import json

    import pandas as pd

    from fedsim.sweep import read_results

    out = tmp_path / "out"
    labels = ["seed=0/train.lr=0.01", "seed=0/train.lr=0.2"]
    outcome = run_sweep(load_sweep(_spec(tmp_path, LR_SWEEP)), out, verbose=0)
    assert sorted(outcome.ran) == labels and not outcome.failed, outcome
    for label, lr in zip(labels, (0.01, 0.2)):
        assert load_config(out / RUNS / label / "config.yaml").train.lr == lr
    table = read_results(out).to_pandas()
    assert sorted(table["train.lr"].unique()) == [0.01, 0.2] and len(table) == 2 * 2
    trials = sorted(path.parent for path in (out / "tune").glob("sweep-*/*/params.json"))
    assert [path.name.rsplit("-", 1)[0] for path in trials] == ["seed-0_train.lr-0.01", "seed-0_train.lr-0.2"]
    for path, label, lr in zip(trials, labels, (0.01, 0.2)):
        assert json.loads((path / "params.json").read_text()) == {"point": {"trial": label, "seed": 0, "train.lr": lr}}
        progress = pd.read_csv(path / "progress.csv")
        rounds = table[table["train.lr"] == lr].sort_values("round")
        assert progress["round"].tolist() == [1, 2]  # eval.every=2: round 1 unscored (NaN)
        assert progress["hospital_accuracy_mean"].tolist() == pytest.approx(rounds["hospital_accuracy_mean"].tolist(), nan_ok=True)
    state = "".join(path.read_text() for path in (out / "tune").glob("sweep-*/experiment_state-*.json"))
    assert "seed=0,train.lr=0.01" in state and "seed=0,train.lr=0.2" in state  # the trial names


def test_placement_group_holds_the_driver_and_every_worker() -> None:
    config = load_config(None, ["engine.workers=3", "engine.num_cpus=0.5", "engine.num_gpus=0.25"])
    assert trial_resources(config, 1.0).bundles == [{"CPU": 1.0}] + [{"CPU": 0.5, "GPU": 0.25}] * 3


def test_a_trial_larger_than_the_cluster_is_refused_up_front(ray_cluster) -> None:
    from fedsim.config import EngineConfig
    from fedsim.engine.cluster import ClusterError, check_resources

    check_resources(EngineConfig(num_cpus=1), 1, driver_cpus=1)  # exactly the 2-CPU test cluster
    with pytest.raises(ClusterError, match=r"engine.num_cpus: 1 for the driver \+ 2 workers x 1.0 CPU = 3 CPUs"):
        check_resources(EngineConfig(num_cpus=1), 2, driver_cpus=1)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"grid": {"hospitals": [0]}}, "sweep.yaml: grid.hospitals.0: Input should be greater than or equal to 1"),
        ({"grid": {"hopsitals": [5]}}, "sweep.yaml: grid.hopsitals: unknown key"),
        ({"grid": {}}, "sweep.yaml: grid: name at least one axis (hospitals, alpha, eta, strategy, seed) or config key"),
        ({"grid": {"hospitals": [5, 2]}, "set": ["sampling.clients_per_round=3"]},
         "sweep trial hospitals=2: sampling.clients_per_round: expected at most data.hospitals (2), got 3"),
        ({"grid": {"strategy": ["fedprox", {"name": "fedprox"}]}}, "grid: two grid points share the folder strategy=fedprox"),
        ({"grid": {"train.lr": 0.1}}, "sweep.yaml: grid.train.lr: expected a non-empty list of values, got 0.1"),
        ({"grid": {"train/lr": [0.1]}}, "sweep.yaml: grid.train/lr: expected a dotted config key such as train.lr"),
        ({"grid": {"train.lrr": [0.1]}}, "sweep trial train.lrr=0.1: train.lrr: unknown key"),
    ],
)
def test_bad_sweep_files_stop_with_one_line(change: dict, message: str, tmp_path: Path) -> None:
    spec = {**TINY, **change}
    with pytest.raises(ConfigError) as error:
        expand(load_sweep(_spec(tmp_path, spec)))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_sweep_command_reports_errors_in_one_line(tmp_path: Path, capsys) -> None:
    module_spec = importlib.util.spec_from_file_location("sweep_cli", REPO / "experiments" / "sweep.py")
    cli = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(cli)
    assert cli.main([str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == f"sweep: error: {tmp_path / 'missing.yaml'}: sweep file not found"


def test_results_of_a_sweep_still_running_read_with_typed_keys(tmp_path: Path) -> None:
    """Only alpha trials finished so far: eta has no value yet and must not break reading."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fedsim.sweep import read_results

    for alpha, lr in [(0.1, 0.01), (1.0, 0.2)]:
        folder = tmp_path / RESULTS / f"hospitals=5/alpha={alpha}/eta=__HIVE_DEFAULT_PARTITION__/strategy=fedprox-mu-0.1/train.lr={lr}"
        folder.mkdir(parents=True)
        pq.write_table(pa.table({"round": [1, 2], "global_accuracy": [0.5, 0.6]}), folder / "part-0.parquet")
    table = read_results(tmp_path)
    types = {name: str(table.schema.field(name).type) for name in ("hospitals", "alpha", "eta", "strategy", "train.lr")}
    assert types == {"hospitals": "int64", "alpha": "double", "eta": "double", "strategy": "string", "train.lr": "double"}
    assert sorted(set(table["train.lr"].to_pylist())) == [0.01, 0.2] and set(table["eta"].to_pylist()) == {None}


def test_the_readme_sweep_example_is_a_valid_sweep(tmp_path: Path, monkeypatch) -> None:
    readme = (REPO / "README.md").read_text()
    block = readme[readme.index("```yaml\nbase: experiments"):].split("```")[1].removeprefix("yaml\n")
    monkeypatch.chdir(REPO)
    trials = expand(load_sweep(_spec(tmp_path, yaml.safe_load(block))))
    assert len(trials) == 2 * 3 * 3 * 3 * 2 * 2  # hospitals x (alpha + eta) x strategies x seeds x lr x clients
    fedprox = next(t for t in trials if t.keys["strategy"] == "fedprox-mu-0.1" and t.keys["train.lr"] == 0.05)
    assert fedprox.config.strategy.mu == 0.1 and fedprox.config.train.lr == 0.05
    assert fedprox.name.startswith("hospitals=10,alpha=0.1,strategy=fedprox-mu-0.1,seed=0,") and "train.lr=0.05" in fedprox.name


def test_unswept_axes_keep_the_base_values() -> None:
    spec = SweepSpec.model_validate({"set": ["data.hospitals=7", "seed=3"], "grid": {"strategy": ["fedavg", "fedprox"]}})
    trials = expand(spec)
    assert [trial.label for trial in trials] == ["strategy=fedavg", "strategy=fedprox"]
    assert {trial.config.data.hospitals for trial in trials} == {7} and {trial.config.seed for trial in trials} == {3}
