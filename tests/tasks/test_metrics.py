"""Metrics against values worked out by hand, as GLUE reports them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pldrop.tasks import compute_metrics, evaluate_splits, primary_metric, task_score


def test_cola_mcc_matches_the_confusion_matrix_formula():
    gold = [1, 1, 1, 1, 0, 0, 0, 1, 0, 1]
    pred = [1, 1, 0, 1, 0, 1, 0, 1, 0, 0]
    tp, tn, fp, fn = 4, 3, 1, 2
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert compute_metrics("cola", pred, gold) == {"mcc": pytest.approx(expected)}
    assert expected == pytest.approx(10 / math.sqrt(5 * 6 * 4 * 5))


def test_mrpc_and_qqp_f1_of_the_positive_class_and_accuracy():
    gold = [1, 1, 1, 0, 0, 1]
    pred = [1, 0, 1, 1, 0, 1]
    tp, fp, fn = 3, 1, 1
    f1 = 2 * tp / (2 * tp + fp + fn)
    for task in ("mrpc", "qqp"):
        out = compute_metrics(task, pred, gold)
        assert list(out) == ["f1", "accuracy"]
        assert out == {"f1": pytest.approx(f1), "accuracy": pytest.approx(4 / 6)}


def test_sms_spam_f1_counts_spam_as_positive():
    gold = [0, 0, 0, 0, 1, 1]  # ham = 0, spam = 1
    pred = [0, 0, 0, 1, 1, 0]
    out = compute_metrics("sms-spam", pred, gold)
    assert out == {"f1": pytest.approx(2 * 1 / (2 * 1 + 1 + 1)), "accuracy": pytest.approx(4 / 6)}


def test_stsb_pearson_and_spearman_by_hand():
    gold = np.array([0.0, 1.0, 2.0, 3.0, 5.0])
    pred = np.array([0.5, 0.7, 2.5, 2.4, 4.0])
    g, p = gold - gold.mean(), pred - pred.mean()
    pearson = (g * p).sum() / math.sqrt((g * g).sum() * (p * p).sum())
    # ranks: gold 1..5, pred 1,2,4,3,5 -> d = 0,0,1,1,0 -> rho = 1 - 6*2 / (5*24)
    spearman = 1 - 6 * 2 / (5 * (25 - 1))
    out = compute_metrics("stsb", pred.reshape(-1, 1), gold)  # (N, 1) regression head output
    assert out == {"pearson": pytest.approx(pearson), "spearman": pytest.approx(spearman)}


def test_constant_predictions_score_zero_not_nan():
    assert compute_metrics("stsb", [2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) == {"pearson": 0.0, "spearman": 0.0}
    assert compute_metrics("cola", [1, 1, 1], [0, 1, 1]) == {"mcc": 0.0}


def test_logits_and_tensors_are_accepted():
    logits = torch.tensor([[2.0, 0.1, 0.0], [0.0, 0.0, 3.0], [0.0, 1.0, 0.5], [1.0, 0.0, 0.0]])
    assert compute_metrics("mnli", logits, torch.tensor([0, 2, 2, 0])) == {"accuracy": 0.75}


def test_mnli_reports_matched_and_mismatched_separately():
    out = evaluate_splits("mnli", {"matched": ([0, 1, 2, 2], [0, 1, 2, 1]), "mismatched": ([1, 1], [1, 0])})
    assert out == {"accuracy_m": 0.75, "accuracy_mm": 0.5}
    assert task_score("mnli", out) == pytest.approx(0.625)


def test_primary_metrics_and_task_scores():
    assert primary_metric("cola") == ("mcc",)
    assert primary_metric("stsb") == ("pearson", "spearman")
    assert primary_metric("qqp") == ("f1", "accuracy")
    assert primary_metric("rte") == ("accuracy",)
    assert task_score("mrpc", {"f1": 0.9, "accuracy": 0.8}) == pytest.approx(0.85)
    assert math.isnan(task_score("mrpc", {"f1": 0.9}))


def test_mismatched_lengths_are_rejected():
    with pytest.raises(ValueError, match="one length"):
        compute_metrics("sst2", [1, 0], [1, 0, 1])
