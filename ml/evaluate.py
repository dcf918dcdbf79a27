"""Evaluation metrics for interest tags, computed in numpy so they can be checked by hand."""

from __future__ import annotations

import numpy as np


def micro_f1(labels: np.ndarray, predicted: np.ndarray) -> float:
    """F1 over all (user, tag) decisions pooled together."""
    labels = labels.astype(bool)
    predicted = predicted.astype(bool)
    tp = float(np.sum(labels & predicted))
    fp = float(np.sum(~labels & predicted))
    fn = float(np.sum(labels & ~predicted))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve via the rank statistic; ties get their average rank."""
    labels = np.asarray(labels).ravel().astype(bool)
    scores = np.asarray(scores).ravel().astype(float)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def top_k_tags(scores: np.ndarray, k: int) -> np.ndarray:
    """0/1 matrix marking each row's k highest scores (ties broken by column order)."""
    picked = np.zeros_like(scores, dtype=bool)
    if scores.size == 0 or k <= 0:
        return picked
    idx = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    np.put_along_axis(picked, idx, True, axis=1)
    return picked
