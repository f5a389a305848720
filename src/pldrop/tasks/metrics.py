"""Dev-set metrics as GLUE reports them, and each task's score for model selection and averages.

GLUE (https://gluebenchmark.com, Wang et al. 2019): CoLA Matthews correlation; STS-B Pearson
and Spearman correlation; MRPC and QQP F1 (of the positive class) and accuracy; MNLI accuracy
on the matched and the mismatched dev set; the rest accuracy. A task with several metrics
scores their unweighted mean (GLUE's rule), and the GLUE score is the mean over tasks.

Metric names: ``accuracy``, ``f1`` (binary, the spec's ``positive_label``), ``f1_macro``,
``mcc``, ``pearson``, ``spearman``. Values are fractions (0.843), not percentages.

A constant prediction has no correlation: GLUE's scorer gives NaN for Pearson/Spearman then;
here it is 0.0, as scikit-learn's MCC already does, so checkpoint selection and averages stay
defined early in training.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from pldrop.tasks.base import TaskSpec


def _spec(task: str | TaskSpec) -> TaskSpec:
    from pldrop.tasks.registry import get_spec

    return get_spec(task)


def _array(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, possibly on the accelerator
        x = x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)


def _correlation(kind: str, a: np.ndarray, b: np.ndarray) -> float:
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    from scipy import stats

    result = stats.pearsonr(a, b) if kind == "pearson" else stats.spearmanr(a, b)
    return float(result.statistic)


def compute_metrics(task: str | TaskSpec, predictions, labels) -> dict[str, float]:
    """The task's metrics on one dev split.

    Args:
        task: a task name (``"mrpc"``) or a :class:`TaskSpec` (``task_data.spec``).
        predictions: class ids ``(N,)`` or logits ``(N, C)`` (argmax is taken); for
            regression, scores ``(N,)`` or ``(N, 1)``. Lists, NumPy arrays or torch tensors.
        labels: the gold class ids ``(N,)`` or scores.

    Returns:
        ``{metric: value}`` for each of ``spec.metrics``, e.g. ``{"f1": .., "accuracy": ..}``.
        For MNLI call it once per dev split, or use :func:`evaluate_splits`.

    >>> compute_metrics("sst2", [1, 0, 1, 1], [1, 0, 0, 1])
    {'accuracy': 0.75}
    """
    spec = _spec(task)
    preds, gold = _array(predictions), _array(labels)
    if spec.is_regression:
        preds = preds.reshape(len(preds), -1)[:, 0] if preds.ndim == 2 else preds
        preds, gold = preds.astype(np.float64), gold.astype(np.float64)
    else:
        preds = preds.argmax(-1) if preds.ndim == 2 else preds
        preds, gold = preds.astype(np.int64), gold.astype(np.int64)
    if preds.shape != gold.shape or preds.ndim != 1:
        raise ValueError(f"predictions {preds.shape} and labels {gold.shape} must be two vectors of one length")
    if len(gold) == 0:
        raise ValueError("no predictions to score")

    out: dict[str, float] = {}
    for name in spec.metrics:
        if name == "accuracy":
            out[name] = float(np.mean(preds == gold))
        elif name == "mcc":
            from sklearn.metrics import matthews_corrcoef

            out[name] = float(matthews_corrcoef(gold, preds))
        elif name == "f1":
            from sklearn.metrics import f1_score

            assert spec.labels is not None and spec.positive_label is not None, spec
            pos = spec.labels.index(spec.positive_label)
            out[name] = float(f1_score(gold, preds, pos_label=pos, average="binary", zero_division=0.0))
        elif name == "f1_macro":
            from sklearn.metrics import f1_score

            out[name] = float(f1_score(gold, preds, average="macro", zero_division=0.0))
        elif name in ("pearson", "spearman"):
            out[name] = _correlation(name, preds, gold)
        else:
            raise ValueError(f"unknown metric {name!r} in the spec of {spec.name}")
    return out


def evaluate_splits(task: str | TaskSpec, outputs: Mapping[str, tuple[Sequence, Sequence]]) -> dict[str, float]:
    """The metrics of every dev split, under flat keys (``accuracy_m``, ``accuracy_mm`` for MNLI).

    Args:
        task: a task name or :class:`TaskSpec`.
        outputs: ``{split: (predictions, labels)}`` for each of the task's dev splits.

    >>> evaluate_splits("mnli", {"matched": ([0, 1], [0, 1]), "mismatched": ([0, 1], [0, 2])})
    {'accuracy_m': 1.0, 'accuracy_mm': 0.5}
    """
    spec = _spec(task)
    out: dict[str, float] = {}
    for split, (preds, gold) in outputs.items():
        for name, value in compute_metrics(spec, preds, gold).items():
            out[spec.metric_key(split, name)] = value
    return out


def primary_metric(task: str | TaskSpec) -> tuple[str, ...]:
    """The flat metric keys whose mean is the task's score (see :func:`task_score`).

    >>> primary_metric("mrpc"), primary_metric("mnli"), primary_metric("sms-spam")
    (('f1', 'accuracy'), ('accuracy_m', 'accuracy_mm'), ('f1',))
    """
    return _spec(task).primary


def task_score(task: str | TaskSpec, metrics: Mapping[str, float]) -> float:
    """The task's single score: the mean of its primary metrics (GLUE's rule); higher is better.

    Use it to choose the best checkpoint. NaN if a primary metric is missing or NaN.

    >>> task_score("stsb", {"pearson": 0.8, "spearman": 0.7})
    0.75
    """
    values = [metrics.get(k, math.nan) for k in primary_metric(task)]
    return float(np.mean(values)) if values else math.nan
