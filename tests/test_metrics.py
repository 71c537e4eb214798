"""The classification scores (fedsim.metrics): hand-computed examples, scikit-learn's
implementations as the reference, and the columns a run writes."""

from __future__ import annotations

import math
import warnings
import numpy as np
import pytest
from sklearn import metrics as sk

from fedsim.metrics import (
    balanced_accuracy,
    classification_metric_names,
    classification_metrics,
    confusion_matrix,
    g_mean,
    mcc,
    quadratic_kappa,
    sensitivities,
    specificities,
    weighted_f1,
)

# 10 samples, 3 ordinal grades. Row = truth, column = prediction:
#   truth 0: 3 right, 1 called 1          (4)
#   truth 1: 1 called 0, 2 right, 1 -> 2  (4)
#   truth 2: 2 right                      (2)
LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
PREDICTIONS = np.array([0, 0, 0, 1, 0, 1, 1, 2, 2, 2])
MATRIX = np.array([[3, 1, 0], [1, 2, 1], [0, 0, 2]])


def test_confusion_matrix_rows_are_truth_and_columns_predictions() -> None:
    assert confusion_matrix(LABELS, PREDICTIONS, 3).tolist() == MATRIX.tolist()
    assert confusion_matrix(np.array([1]), np.array([0]), 3).tolist() == [[0, 0, 0], [1, 0, 0], [0, 0, 0]]


def test_hand_computed_sensitivity_specificity_g_mean_and_balanced_accuracy() -> None:
    # sensitivity: 3/4, 2/4, 2/2; specificity (one class against the rest): class 0: 5 of the 6
    # others not called 0; class 1: 5 of 6 not called 1; class 2: 7 of 8 not called 2.
    assert sensitivities(MATRIX) == pytest.approx([0.75, 0.5, 1.0])
    assert specificities(MATRIX) == pytest.approx([5 / 6, 5 / 6, 7 / 8])
    assert g_mean(MATRIX) == pytest.approx((0.75 * 0.5 * 1.0) ** (1 / 3))
    assert balanced_accuracy(MATRIX) == pytest.approx(0.75)
    never_class_1 = np.array([[4, 0], [3, 0]])
    assert g_mean(never_class_1) == 0.0 and balanced_accuracy(never_class_1) == 0.5


def test_hand_computed_quadratic_kappa_and_weighted_f1() -> None:
    # kappa: disagreements weighted (i-j)^2: three off by one, none by two -> observed 3.
    # Expected under independence: marginals truth (4, 4, 2), predicted (4, 3, 3), n = 10:
    # sum_ij (i-j)^2 t_i p_j / n = [1*(4*3 + 4*4 + 4*3 + 2*3) + 4*(4*3 + 2*4)] / 10 = (46 + 80) / 10.
    assert quadratic_kappa(MATRIX) == pytest.approx(1 - 3 / 12.6)
    # F1 per class: 2TP / (2TP + FP + FN): 6/8, 4/7, 4/5; weighted by support 4, 4, 2 over 10.
    assert weighted_f1(MATRIX) == pytest.approx((4 * 6 / 8 + 4 * 4 / 7 + 2 * 4 / 5) / 10)
    # MCC (Gorodkin): c = 7, n = 10, sum p_k t_k = 16 + 12 + 6 = 34, sum p^2 = 34, sum t^2 = 36.
    assert mcc(MATRIX) == pytest.approx((7 * 10 - 34) / math.sqrt((100 - 34) * (100 - 36)))


def test_perfect_and_inverted_grading() -> None:
    grades = np.array([0, 1, 2, 3, 4])
    assert quadratic_kappa(confusion_matrix(grades, grades, 5)) == 1.0
    assert quadratic_kappa(confusion_matrix(grades, grades[::-1], 5)) == pytest.approx(-1.0)
    assert mcc(confusion_matrix(grades, grades, 5)) == 1.0


@pytest.mark.parametrize("num_classes", [2, 3, 5])
def test_kappa_f1_mcc_match_scikit_learn(num_classes: int) -> None:
    """Random labellings, including classes absent from the labels or the predictions."""
    rng = np.random.default_rng(num_classes)
    classes = np.arange(num_classes)
    for _ in range(40):
        size = int(rng.integers(1, 60))
        present = rng.choice(classes, size=int(rng.integers(1, num_classes + 1)), replace=False)
        labels = rng.choice(present, size)
        predictions = np.where(rng.random(size) < 0.6, labels, rng.integers(0, num_classes, size))
        matrix = confusion_matrix(labels, predictions, num_classes)
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore")  # scikit-learn warns of its 0/0 where kappa is undefined
            expected_kappa = sk.cohen_kappa_score(labels, predictions, labels=classes, weights="quadratic")
            expected_mcc = sk.matthews_corrcoef(labels, predictions)
        assert quadratic_kappa(matrix) == pytest.approx(expected_kappa, abs=1e-12, nan_ok=True)
        assert weighted_f1(matrix) == pytest.approx(
            sk.f1_score(labels, predictions, labels=classes, average="weighted", zero_division=0.0), abs=1e-12
        )
        assert mcc(matrix) == pytest.approx(expected_mcc, abs=1e-12)
        assert balanced_accuracy(matrix) == pytest.approx(
            sk.recall_score(labels, predictions, labels=np.unique(labels), average="macro"), abs=1e-12
        )


def test_every_score_is_named_and_undefined_ones_are_nan() -> None:
    probabilities = np.eye(3)[PREDICTIONS] * 0.8 + 0.2 / 3
    scores = classification_metrics(LABELS, probabilities)
    assert tuple(scores) == classification_metric_names(3)
    assert scores["accuracy"] == 0.7 and scores["sensitivity_1"] == 0.5 and scores["specificity_2"] == pytest.approx(7 / 8)
    one_class = classification_metrics(np.array([0, 0]), np.array([[0.9, 0.1], [0.8, 0.2]]))
    assert math.isnan(one_class["quadratic_kappa"]) and math.isnan(one_class["sensitivity_1"])
    assert one_class["g_mean"] == 1.0 and one_class["specificity_1"] == 1.0
    empty = classification_metrics(np.zeros(0, dtype=np.int64), np.zeros((0, 3)))
    assert all(math.isnan(value) for value in empty.values())


def test_a_run_writes_every_score_and_the_global_confusion_matrices(tmp_path) -> None:
    import fedsim

    config = {
        "rounds": 2, "data": {"source": {"kind": "synthetic", "classes": 3, "train_samples": 240, "test_samples": 30},
                              "hospitals": 3},
        "train": {"epochs": 1}, "engine": {"backend": "in_process", "workers": 1},
    }
    result = fedsim.run(config, out=tmp_path / "run")
    names = classification_metric_names(3)
    rounds, hospitals, confusion = result.rounds, result.hospital_eval, result.confusion
    assert {f"global_{n}" for n in names} | {f"global_val_{n}" for n in names} <= set(rounds.columns)
    assert set(names) <= set(hospitals.columns) and len(hospitals) == 2 * 3
    assert len(confusion) == 2 * 2 * 9  # rounds x splits (test, val) x classes^2
    for (round_index, split), matrix in confusion.groupby(["round", "split"]):
        counts = np.zeros((3, 3), dtype=np.int64)
        counts[matrix["true"], matrix["pred"]] = matrix["count"]
        row = rounds[rounds["round"] == round_index].iloc[0]
        prefix = "global_" if split == "test" else "global_val_"
        assert counts.sum() == 30 and counts.sum(axis=1).tolist() == [10, 10, 10]
        assert row[f"{prefix}accuracy"] == pytest.approx(np.trace(counts) / 30)
        assert row[f"{prefix}quadratic_kappa"] == pytest.approx(quadratic_kappa(counts), nan_ok=True)
        assert row[f"{prefix}sensitivity_2"] == pytest.approx(counts[2, 2] / 10)
