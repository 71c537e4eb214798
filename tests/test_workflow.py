"""The researcher's workflow around a run: quiet output, the report table, --version, data paths
relative to the config file, TensorBoard tracking, the per-round hook."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fedsim.cli import main
from fedsim.config import load_config
from fedsim.report import render_report
from fedsim.results import ROUNDS, RunDirectory
from fedsim.simulation import Simulation, hospital_summary

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "rounds": 2,
    "data": {"hospitals": 4, "source": {"kind": "synthetic", "classes": 3, "train_samples": 240, "test_samples": 60}},
    "train": {"epochs": 1},
    "engine": {"workers": 1},
}


def _write(path: Path, settings: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(settings))
    return path


def test_quiet_run_prints_exactly_the_run_directory(tmp_path: Path) -> None:
    """On Ray, whose every start logs a token-authentication notice unless fedsim quiets it."""
    config = _write(tmp_path / "tiny.yaml", TINY)
    out = tmp_path / "run"
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "fedsim.cli", "run", "--quiet", str(config), "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env=environment, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (done.stdout + done.stderr).splitlines() == [str(out)]
    assert RunDirectory(out).read(ROUNDS).num_rows == 2


def test_version(capsys) -> None:
    import fedsim

    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0 and capsys.readouterr().out.strip() == f"fedsim {fedsim.__version__}"


def _fake_run(tmp_path: Path, settings: list[str], rows: list[dict]) -> Path:
    """A run directory holding the given rounds rows (the report reads nothing else)."""
    run = RunDirectory.create(tmp_path / "run", load_config(None, settings))
    for row in rows:
        run.append(ROUNDS, row["round"], [row])
    return run.path


def _classification_row(round_index: int, accuracy: float) -> dict:
    return {"round": round_index, "seconds": 1.0, "hospitals": 4, "global_loss": 1.0 - accuracy,
            "global_accuracy": accuracy, "global_balanced_accuracy": accuracy, "global_val_accuracy": float("nan"),
            "hospital_accuracy_mean": accuracy - 0.1, "hospital_accuracy_std": 0.05, "hospital_accuracy_worst10": accuracy - 0.3}


def test_report_counts_the_rounds_it_shows_and_never_hides_the_best(tmp_path: Path) -> None:
    # 30 rounds: 20 evenly spaced rows; the best (round 8) is not one of them and is added.
    accuracies = [0.5 + 0.01 * r for r in range(1, 31)]
    accuracies[7] = 0.99
    out = _fake_run(tmp_path, ["rounds=30"], [_classification_row(r, a) for r, a in enumerate(accuracies, start=1)])
    report = render_report(out)
    body = [line for line in report.splitlines() if line.startswith("| ") and not line.startswith("| round")]
    shown = [int(line.split("|")[1].split()[0]) for line in body]
    assert len(shown) == 21 and shown[0] == 1 and shown[-1] == 30 and 8 in shown
    assert "21 of 30 rounds shown (--all for every round)" in report
    assert next(line for line in body if line.startswith("| 8 ")).startswith("| 8 best |")
    assert "best global test accuracy 0.990 at round 8" in report
    assert "mean of the last 5 scored rounds 0.780" in report  # rounds 26..30: 0.76..0.80
    every = render_report(out, show_all=True)
    assert sum(line.startswith("| ") for line in every.splitlines()) == 1 + 30
    assert "rounds shown" not in every


def test_report_shows_every_round_of_a_short_run_and_drops_identical_columns(tmp_path: Path) -> None:
    out = _fake_run(tmp_path, ["rounds=15"], [_classification_row(r, 0.5 + 0.01 * r) for r in range(1, 16)])
    report = render_report(out)
    header = next(line for line in report.splitlines() if line.startswith("| round"))
    headings = [cell.strip() for cell in header.strip("|").split("|")]
    assert headings == ["round", "accuracy", "loss", "hosp. mean", "hosp. worst10", "seconds"]
    assert "bal. acc.: identical to accuracy in every round (not shown)" in report
    assert "val acc.: no values in this run (not shown)" in report
    assert sum(line.startswith("| ") for line in report.splitlines()) == 1 + 15 and "rounds shown" not in report


def test_report_labels_every_hospital_column_as_a_run_writes_them(tmp_path: Path) -> None:
    """rounds.parquet holds accuracy's mean / std / worst10 and every other score's hospital mean
    (hospital_summary, as a run writes them): only accuracy's are the spread, and the other
    means are named columns, shown where there is room, else listed."""
    scores = {h: {"accuracy": 0.5 + 0.1 * h, "loss": 1.0 - 0.1 * h, "macro_auc": 0.83, "sensitivity_0": 0.77, "sensitivity_1": 0.71}
              for h in range(4)}
    rows = [{**_classification_row(r, 0.6), **hospital_summary(scores, "accuracy", higher_is_better=True)} for r in (1, 2)]
    out = _fake_run(tmp_path, ["rounds=2"], rows)
    report = render_report(out)
    table = [line for line in report.splitlines() if line.startswith("|")]
    headings = [cell.strip() for cell in table[0].strip("|").split("|")]
    assert headings.count("hosp. mean") == 1 and headings.count("hosp. worst10") == 1
    assert headings[-3:] == ["hosp. mean", "hosp. worst10", "seconds"]
    assert max(len(line) for line in table) <= 100, "\n".join(table)
    assert "hosp. mean / worst10: accuracy per hospital (hospital_eval.parquet), mean and worst-10% mean" in report
    shown_means = [h for h in headings if h.startswith("hosp. ") and h not in ("hosp. mean", "hosp. worst10")]
    listed = next(line for line in report.splitlines() if line.startswith("more columns"))
    for score in ("loss", "macro_auc"):
        assert f"hosp. {score.replace('_', ' ')}" in shown_means or f"hospital_{score}_mean" in listed, score
    assert "hospital_sensitivity_0..1_mean" in listed  # a run of per-class columns is written once


def test_a_run_without_global_scores_says_so_once(tmp_path: Path) -> None:
    """local-only has no global model: one note for every global_* column, not a list of them."""
    scores = {h: {"accuracy": 0.5 + 0.1 * h, "loss": 1.0 - 0.1 * h} for h in range(4)}
    nan = float("nan")
    rows = [{"round": r, "seconds": 1.0, "hospitals": 4, "global_accuracy": nan, "global_loss": nan, "global_val_accuracy": nan,
             "global_mcc": nan, **hospital_summary(scores, "accuracy", higher_is_better=True)} for r in (1, 2)]
    report = render_report(_fake_run(tmp_path, ["rounds=2", "strategy=local_only"], rows))
    assert "every global_* column: no values in this run (not shown)" in report
    assert "mcc" not in report and "hosp. loss" in report


def test_scheduling_report_fits_a_terminal(tmp_path: Path) -> None:
    from fedsim.scheduling.metrics import METRIC_NAMES

    rows = [{"round": r, "seconds": 12.5, "hospitals": 10, **{f"global_{name}": 1000.5 + i for i, name in enumerate(METRIC_NAMES)},
             "hospital_acuity_weighted_wait_mean": 2.5, "hospital_acuity_weighted_wait_worst10": 4.0} for r in (1, 2)]
    rows[1]["global_acuity_weighted_wait"] = 1.0  # lower is better: round 2 is the best
    out = _fake_run(tmp_path, ["task=scheduling", "rounds=2"], rows)
    report = render_report(out)
    table = [line for line in report.splitlines() if line.startswith("|")]
    assert max(len(line) for line in table) <= 100, "\n".join(table)
    assert table[0].startswith("| round | weighted wait | p95 acu. 1-2 | utilisation |")
    assert table[-1].startswith("| 2 best |")
    assert "more columns in rounds.parquet: global_wait_mean, global_wait_p95," in report


def test_data_paths_resolve_against_the_config_file(tmp_path: Path, monkeypatch) -> None:
    config = _write(tmp_path / "configs" / "real.yaml", {"data": {"source": {"kind": "medmnist", "path": "../data/x.npz"}}})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_config(config).data.source.path == str(tmp_path / "data" / "x.npz")
    # a --set path is the shell's: relative to the working directory
    assert load_config(config, ["data.source.path=y.npz"]).data.source.path == str(elsewhere / "y.npz")
    # the run directory records the absolute path, and reading it back from anywhere keeps it
    run = RunDirectory.create(tmp_path / "run", load_config(config))
    assert yaml.safe_load((run.path / "config.yaml").read_text())["data"]["source"]["path"] == str(tmp_path / "data" / "x.npz")
    monkeypatch.chdir(tmp_path)
    assert run.config().data.source.path == str(tmp_path / "data" / "x.npz")


def _events(folder: Path) -> list:
    """Every Event in a folder's TensorBoard event files (TFRecord framing: length, crc, data, crc)."""
    from tensorboardX.proto.event_pb2 import Event

    events = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            events.append(Event.FromString(data[offset + 12:offset + 12 + length]))
            offset += 12 + length + 4
    return events


def test_tensorboard_events_hold_every_metric_of_every_round_and_the_hook_sees_the_rows(tmp_path: Path) -> None:
    config = load_config(None, [
        "rounds=3", "data.hospitals=4", "data.source={kind: synthetic, classes: 3, train_samples: 240, test_samples: 60}",
        "train.epochs=1", "engine.backend=in_process", "engine.workers=1", "tracking.tensorboard=true",
    ])
    seen = []
    Simulation(config, tmp_path / "run", quiet=True, on_round=seen.append).run()
    rounds = sorted(RunDirectory(tmp_path / "run").read(ROUNDS).to_pylist(), key=lambda row: row["round"])
    assert [row["round"] for row in seen] == [1, 2, 3]
    scalars = {(value.tag, event.step): value.simple_value
               for event in _events(tmp_path / "run" / "tensorboard") for value in event.summary.value}
    for row in rounds:
        assert scalars[("global/accuracy", row["round"])] == pytest.approx(row["global_accuracy"])
        assert scalars[("hospital/accuracy_worst10", row["round"])] == pytest.approx(row["hospital_accuracy_worst10"])
        assert scalars[("seconds", row["round"])] == pytest.approx(row["seconds"])
    numeric = [k for k, v in rounds[0].items() if k != "round" and isinstance(v, (int, float)) and v == v]
    assert len({tag for tag, step in scalars if step == 1}) == len(numeric)


def test_a_tracker_whose_package_is_missing_stops_before_the_run(tmp_path: Path, monkeypatch, capsys) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    args = ["run", "--out", str(tmp_path / "run"), "--set", "tracking.mlflow=true", "--set", "engine.backend=in_process"]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == (
        "fedsim: error: tracking.mlflow: needs the mlflow package (pip install mlflow, or pip install 'fedsim[tracking]'), "
        "or set it to false"
    )
    assert not (tmp_path / "run").exists()
