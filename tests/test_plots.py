"""`fedsim plot` on a run directory and on a compare.py output: the files, and what the figures say."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from fedsim.cli import main
from fedsim.comparison import plan_runs, run_all
from fedsim.config import load_config
from fedsim.plots import figures_for
from fedsim.plots.compare import curves
from fedsim.plots.run import metric_panels
from fedsim.simulation import Simulation

TINY = ["rounds=3", "data.source={kind: synthetic, classes: 3, train_samples: 300, test_samples: 60}", "data.hospitals=5",
        "train.epochs=1", "engine.backend=in_process", "engine.workers=1"]


def _titles(figure) -> list[str]:
    return [ax.get_title() for ax in figure.axes if ax.get_visible()]


def _pngs(out: str, capsys) -> list[Path]:
    written = [Path(line) for line in capsys.readouterr().out.split()]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    return written


@pytest.fixture(scope="module")
def fedmrl_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("plots") / "run"
    Simulation(load_config(None, TINY + ["strategy=fedmrl"]), out, quiet=True).run()
    return out


def test_run_plots(fedmrl_run: Path, tmp_path: Path, capsys) -> None:
    assert main(["plot", str(fedmrl_run), "--out", str(tmp_path)]) == 0
    assert [path.name for path in _pngs(str(tmp_path), capsys)] == [
        "global_metrics.png", "hospital_spread.png", "label_histograms.png", "fedmrl_mu_and_som.png"]
    figures = dict(figures_for(fedmrl_run))
    panels = {ax.get_title(): ax for ax in figures["global_metrics"].axes if ax.get_visible()}
    assert [text.get_text() for text in panels["accuracy"].get_legend().get_texts()] == ["test", "validation"]
    assert not any(title.startswith("val ") for title in panels)  # validation is drawn beside its test twin
    assert [text.get_text() for text in panels["sensitivity per class"].get_legend().get_texts()] == ["0", "1", "2"]
    assert all(ax.get_xlabel() == "round" for ax in figures["global_metrics"].axes if ax.get_visible())
    spread = figures["hospital_spread"].axes[0]
    assert spread.get_title() == "accuracy at each hospital (5 hospitals)"
    assert [text.get_text() for text in spread.get_legend().get_texts()] == [
        "10th-90th percentile", "worst 10% of hospitals (range)", "median hospital", "worst-10% mean"]
    histogram = figures["label_histograms"].axes[0]
    assert (histogram.get_xlabel(), histogram.get_ylabel()) == ("hospital", "training samples")
    assert len(histogram.patches) == 5 * 3  # a bar per hospital and class
    assert _titles(figures["fedmrl_mu_and_som"])[:2] == ["proximal mu chosen per hospital (QMIX)", "SOM aggregation weight per hospital"]


def test_metric_panels_gather_per_class_and_per_level_families() -> None:
    names = ["global_loss", "global_accuracy", "global_sensitivity_0", "global_sensitivity_1", "global_val_accuracy",
             "global_val_sensitivity_0", "global_wait_mean_acuity_1", "global_wait_mean_acuity_2", "global_wait_p95_acuity_1_2"]
    assert metric_panels(names) == [
        ("loss", "", ["global_loss"]),
        ("accuracy", "", ["global_accuracy"]),
        ("sensitivity per class", "class", ["global_sensitivity_0", "global_sensitivity_1"]),
        ("wait mean per acuity", "acuity", ["global_wait_mean_acuity_1", "global_wait_mean_acuity_2"]),
        ("wait p95 acuity 1 2", "", ["global_wait_p95_acuity_1_2"]),  # a family of one is a metric of its own
    ]


def test_compare_plots_show_every_variant_with_its_seeds(tmp_path: Path, capsys) -> None:
    run_all(plan_runs(None, TINY, ["fedavg", "{name: fedprox, mu: 0.1}"], [0, 1]), tmp_path / "cmp")
    assert main(["plot", str(tmp_path / "cmp")]) == 0
    assert [path.name for path in _pngs(str(tmp_path), capsys)] == [
        "compare_global_accuracy.png", "compare_global_balanced_accuracy.png", "compare_global_macro_auc.png",
        "compare_global_quadratic_kappa.png", "compare_global_weighted_f1.png", "compare_global_mcc.png",
        "compare_global_g_mean.png", "compare_hospital_accuracy_mean.png", "compare_hospital_quadratic_kappa_mean.png",
        "compare_hospital_accuracy_worst10.png"]
    accuracy = dict(figures_for(tmp_path / "cmp"))["compare_global_accuracy"].axes[0]
    assert accuracy.get_title() == "accuracy per round (mean ± std over seeds)"
    assert (accuracy.get_xlabel(), accuracy.get_ylabel()) == ("round", "global test accuracy")
    assert [text.get_text() for text in accuracy.get_legend().get_texts()] == ["fedavg (2 seeds)", "fedprox(mu=0.1) (2 seeds)"]
    assert [list(line.get_xdata()) for line in accuracy.get_lines()] == [[1, 2, 3], [1, 2, 3]]


def test_a_variant_without_values_is_named_not_drawn() -> None:
    """local-only has no global model: its global-accuracy curve is left out and said so, and
    the other variants keep the colours they have in every other figure."""
    rows = pd.DataFrame([{"strategy": variant, "seed": seed, "round": r, "global_accuracy": value}
                         for variant, value in (("fedavg", 0.7), ("local-only", float("nan")), ("fedprox", 0.6))
                         for seed in (0, 1) for r in (1, 2)])
    ax = curves(rows, "global_accuracy", "accuracy", "global test accuracy").axes[0]
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["fedavg (2 seeds)", "fedprox (2 seeds)"]
    assert [line.get_color() for line in ax.get_lines()] == ["C0", "C2"]
    assert [text.get_text() for text in ax.texts] == ["no values, not shown: local-only"]


def test_plot_refuses_a_folder_it_cannot_tell(tmp_path: Path, capsys) -> None:
    assert main(["plot", str(tmp_path)]) == 2
    assert "not a run directory (config.yaml), a comparison (comparison.parquet) or a sweep directory" in capsys.readouterr().err
