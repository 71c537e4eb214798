"""Classification and fairness metrics.

`classification_metrics` is the one place a classification model is scored (the global model on
the test and validation splits, each hospital on its own test split): accuracy, loss, macro AUC
and the metrics medical-imaging papers report, all read off one confusion matrix. Kappa, weighted
F1 and MCC are closed forms of that matrix, tested against scikit-learn's implementations
(tests/test_metrics.py) rather than calling them: scikit-learn 1.9 validates its inputs for
~10-40 ms a call, which made every hospital's evaluation cost about twice as much, while the
formulas take microseconds.
"""

from __future__ import annotations

import numpy as np


def accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    return float(np.mean(labels == predictions)) if len(labels) else float("nan")


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts, int64 (num_classes, num_classes): row = true class, column = predicted class."""
    flat = np.asarray(labels, dtype=np.int64) * num_classes + np.asarray(predictions, dtype=np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def sensitivities(matrix: np.ndarray) -> np.ndarray:
    """Per-class recall TP / (TP + FN); NaN for a class absent from the labels."""
    positives = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(positives > 0, np.diag(matrix) / positives, np.nan)


def specificities(matrix: np.ndarray) -> np.ndarray:
    """Per-class TN / (TN + FP), one class against the rest; NaN when every label is that class."""
    total, positives, predicted = matrix.sum(), matrix.sum(axis=1), matrix.sum(axis=0)
    negatives = total - positives
    true_negatives = total - positives - predicted + np.diag(matrix)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(negatives > 0, true_negatives / negatives, np.nan)


def balanced_accuracy(matrix: np.ndarray) -> float:
    """Mean recall over the classes present in the labels: robust to class imbalance."""
    recall = sensitivities(matrix)
    return float(np.nanmean(recall)) if np.isfinite(recall).any() else float("nan")


def g_mean(matrix: np.ndarray) -> float:
    """Geometric mean of the per-class sensitivities of the classes present (Kubat & Matwin
    1997): 0 as soon as one class is never recognised, unlike balanced accuracy."""
    recall = sensitivities(matrix)
    recall = recall[np.isfinite(recall)]
    return float(np.prod(recall) ** (1.0 / recall.size)) if recall.size else float("nan")


def binary_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic, ties counted half; NaN if one class is absent."""
    positive = positive.astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # average ranks over ties
    unique, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average_rank = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(average_rank, counts)
    rank_sum = ranks[positive].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def macro_auc(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """One-vs-rest ROC AUC averaged over classes that have both positives and negatives.

    For two classes this is the ordinary AUC of the positive class's probability.
    """
    num_classes = probabilities.shape[1]
    if num_classes == 2:
        return binary_auc(labels == 1, probabilities[:, 1])
    per_class = [binary_auc(labels == c, probabilities[:, c]) for c in range(num_classes)]
    valid = [auc for auc in per_class if not np.isnan(auc)]
    return float(np.mean(valid)) if valid else float("nan")


def cross_entropy(labels: np.ndarray, probabilities: np.ndarray) -> float:
    picked = probabilities[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, 1e-12, None)))) if len(labels) else float("nan")


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Every score of class probabilities (n, K) against integer labels, keyed as the result
    tables name them (without a global_/val_ prefix; see `classification_metric_names`):

    loss (cross-entropy), accuracy, balanced_accuracy, macro_auc, quadratic_kappa (the standard
    for ordinal grades such as diabetic retinopathy), weighted_f1, mcc, g_mean, and
    sensitivity_k and specificity_k for each class k = 0..K-1 (each defined by its function
    below). A score undefined on these labels is NaN (e.g. a class's sensitivity when the labels
    lack it; every score without samples), except MCC, 0 where its denominator is.
    """
    num_classes = probabilities.shape[1]
    predictions = probabilities.argmax(axis=1)
    matrix = confusion_matrix(labels, predictions, num_classes)
    metrics = {
        "loss": cross_entropy(labels, probabilities),
        "accuracy": accuracy(labels, predictions),
        "balanced_accuracy": balanced_accuracy(matrix),
        "macro_auc": macro_auc(labels, probabilities),
        "quadratic_kappa": quadratic_kappa(matrix),
        "weighted_f1": weighted_f1(matrix),
        "mcc": mcc(matrix),
        "g_mean": g_mean(matrix),
    }
    metrics.update({f"sensitivity_{k}": float(value) for k, value in enumerate(sensitivities(matrix))})
    metrics.update({f"specificity_{k}": float(value) for k, value in enumerate(specificities(matrix))})
    return metrics


def classification_metric_names(num_classes: int) -> tuple[str, ...]:
    """The keys of `classification_metrics` for `num_classes` classes, in its order."""
    scalars = ("loss", "accuracy", "balanced_accuracy", "macro_auc", "quadratic_kappa", "weighted_f1", "mcc", "g_mean")
    return scalars + tuple(f"{kind}_{k}" for kind in ("sensitivity", "specificity") for k in range(num_classes))


def quadratic_kappa(matrix: np.ndarray) -> float:
    """Cohen's kappa with quadratic weights, 1 - sum W*O / sum W*E (O the confusion matrix, E
    the outer product of its marginals / n, W_ij = (i - j)^2); NaN where sum W*E is 0 (labels
    and predictions all one same class)."""
    total = matrix.sum()
    if total == 0:
        return float("nan")
    classes = np.arange(len(matrix))
    weights = (classes[:, None] - classes[None, :]) ** 2
    expected = np.outer(matrix.sum(axis=1), matrix.sum(axis=0)) / total
    chance = float((weights * expected).sum())
    return 1.0 - float((weights * matrix).sum()) / chance if chance > 0 else float("nan")


def weighted_f1(matrix: np.ndarray) -> float:
    """Per-class F1 = 2 TP / (2 TP + FP + FN) (0 where undefined), averaged with each class's
    share of the labels as its weight."""
    support = matrix.sum(axis=1)
    if support.sum() == 0:
        return float("nan")
    hits = np.diag(matrix).astype(np.float64)
    denominator = support + matrix.sum(axis=0)  # 2 TP + FP + FN
    f1 = np.divide(2 * hits, denominator, out=np.zeros_like(hits), where=denominator > 0)
    return float((f1 * support).sum() / support.sum())


def mcc(matrix: np.ndarray) -> float:
    """Matthews correlation in Gorodkin (2004)'s multi-class form,
    (c n - sum_k p_k t_k) / sqrt((n^2 - sum p_k^2)(n^2 - sum t_k^2)), c correct, n samples, p_k
    predicted and t_k true counts of class k; 0 where the denominator is (scikit-learn's rule)."""
    matrix = matrix.astype(np.float64)
    total, correct = matrix.sum(), np.trace(matrix)
    if total == 0:
        return float("nan")
    truth, predicted = matrix.sum(axis=1), matrix.sum(axis=0)
    denominator = np.sqrt((total**2 - predicted @ predicted) * (total**2 - truth @ truth))
    return float((correct * total - predicted @ truth) / denominator) if denominator > 0 else 0.0


def worst_decile_mean(values: np.ndarray, higher_is_better: bool = True) -> float:
    """Mean of the worst 10% of hospitals (at least one): the fairness floor of a federation."""
    values = np.sort(np.asarray(values, dtype=np.float64)[~np.isnan(values)])
    if not higher_is_better:
        values = values[::-1]
    if values.size == 0:
        return float("nan")
    return float(values[: max(1, int(np.ceil(0.1 * values.size)))].mean())
