import numpy as np
import pytest

from ml.evaluate import micro_f1, roc_auc, top_k_tags


def test_micro_f1_pools_all_decisions():
    labels = np.array([[1, 0, 1], [0, 1, 0]])
    predicted = np.array([[1, 1, 0], [0, 1, 0]])
    assert micro_f1(labels, predicted) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert micro_f1(labels, np.zeros_like(labels)) == 0.0


def test_roc_auc_by_hand_with_ties():
    assert roc_auc(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.3, 0.1])) == pytest.approx(0.75)
    assert roc_auc(np.array([1, 0]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    assert roc_auc(np.array([0, 1]), np.array([0.9, 0.1])) == pytest.approx(0.0)
    assert np.isnan(roc_auc(np.array([1, 1]), np.array([0.2, 0.3])))


def test_top_k_tags_marks_the_k_best_per_row():
    scores = np.array([[0.1, 0.9, 0.5], [0.7, 0.7, 0.2]])
    assert top_k_tags(scores, 2).astype(int).tolist() == [[0, 1, 1], [1, 1, 0]]
    assert top_k_tags(scores, 0).sum() == 0
