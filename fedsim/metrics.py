"""Classification and fairness metrics, in numpy (no scikit-learn dependency for four formulas)."""

from __future__ import annotations

import numpy as np


def accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    return float(np.mean(labels == predictions)) if len(labels) else float("nan")


def balanced_accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Mean recall over the classes present in `labels`: robust to class imbalance."""
    classes = np.unique(labels)
    if classes.size == 0:
        return float("nan")
    return float(np.mean([np.mean(predictions[labels == c] == c) for c in classes]))


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


def worst_decile_mean(values: np.ndarray, higher_is_better: bool = True) -> float:
    """Mean of the worst 10% of hospitals (at least one): the fairness floor of a federation."""
    values = np.sort(np.asarray(values, dtype=np.float64)[~np.isnan(values)])
    if not higher_is_better:
        values = values[::-1]
    if values.size == 0:
        return float("nan")
    return float(values[: max(1, int(np.ceil(0.1 * values.size)))].mean())
