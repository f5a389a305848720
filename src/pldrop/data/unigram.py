"""The unigram plateau: what a masked-LM scores by predicting token frequencies alone.

A freshly initialised BERT first learns the training set's token frequencies and sits there
(loss ≈ the unigram entropy, accuracy ≈ the share of the most frequent token) before it starts
to use context. A run has learned something only once it is well below this line, so the
comparison reports print it beside the arms' validation numbers.

The reference model predicts every masked position from the training split's token counts with
add-one smoothing. Special tokens ([CLS], [SEP], [PAD], [UNK], [MASK]) are left out of the counts
and of the support: :func:`pldrop.data.masking.mask_tokens` never selects them, so they are never
labels, and giving them probability would only make the reference worse than it need be.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from pldrop.data.masking import IGNORE_INDEX


def unigram_loss(train_ids: Any, valid_labels: Any, vocab_size: int,
                 special_ids: Iterable[int] = ()) -> dict[str, float]:
    """Cross-entropy (nats) and accuracy of the add-one-smoothed unigram model on masked labels.

    Args:
        train_ids: the training split's token ids, any shape (numpy array, tensor or list).
        valid_labels: masked-LM labels, any shape: the original id at selected positions and
            ``-100`` elsewhere (what the MLM loss averages over).
        vocab_size: size of the vocabulary; ids are in ``[0, vocab_size)``.
        special_ids: ids never selected as labels; dropped from the counts and the support.

    Returns:
        ``dict(loss, accuracy, n_labels, entropy)``: ``loss`` is the mean of ``-log p(label)``
        with ``p(t) = (count(t) + 1) / (N + V)`` over the ``V`` non-special ids, ``accuracy``
        the share of labels equal to the most frequent training token, ``entropy`` the
        smoothed distribution's own entropy (what the loss tends to on a large sample).

    >>> r = unigram_loss([5, 5, 5, 6, 0, 1], [-100, 5, 6, -100, 5], vocab_size=8, special_ids=[0, 1])
    >>> # counts over ids 2..7: 5 -> 3, 6 -> 1, others 0; N = 4, V = 6: p(5) = 4/10, p(6) = 2/10
    >>> round(r["loss"], 6) == round(-(2 * math.log(0.4) + math.log(0.2)) / 3, 6)
    True
    >>> r["accuracy"], r["n_labels"]
    (0.6666666666666666, 3)
    """
    ids = np.asarray(train_ids).reshape(-1).astype(np.int64)
    labels = np.asarray(valid_labels).reshape(-1).astype(np.int64)
    labels = labels[labels != IGNORE_INDEX]
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"training ids must lie in [0, {vocab_size})")
    support = np.ones(vocab_size, dtype=bool)
    specials = [i for i in set(special_ids) if 0 <= i < vocab_size]
    support[specials] = False
    if labels.size and (labels.min() < 0 or labels.max() >= vocab_size or not support[labels].all()):
        raise ValueError("labels must be non-special ids in [0, vocab_size) (or -100)")
    counts = np.bincount(ids, minlength=vocab_size).astype(np.float64)
    counts[~support] = 0.0
    n_support = int(support.sum())
    probs = np.where(support, counts + 1.0, 0.0) / (counts.sum() + n_support)
    top = int(np.argmax(probs))
    p = probs[support]
    entropy = float(-(p * np.log(p)).sum())
    if labels.size == 0:
        return {"loss": math.nan, "accuracy": math.nan, "n_labels": 0, "entropy": entropy}
    return {"loss": float(-np.log(probs[labels]).mean()),
            "accuracy": float((labels == top).mean()),
            "n_labels": int(labels.size), "entropy": entropy}


def unigram_for_data(data: Any, max_seqs: int = 256) -> dict[str, float]:
    """:func:`unigram_loss` for a :class:`~pldrop.data.dataset.PreparedData`.

    Counts come from every token of ``data.train``; the labels are those of the first
    ``max_seqs`` validation sequences (0 = all) with their fixed masks, i.e. exactly the
    positions the training run's validation (``data.val_max_seqs``) scores.

    Args:
        data: what :func:`~pldrop.data.dataset.prepare_data` returns.
        max_seqs: validation sequences to score, as ``data.val_max_seqs``.
    """
    train, valid = data.train, data.valid
    specials = set(train.special_ids) | set(valid.special_ids)
    n = len(valid) if not max_seqs else min(max_seqs, len(valid))
    labels = np.concatenate([valid[i]["labels"].numpy() for i in range(n)]) if n else np.zeros(0)
    return unigram_loss(train.rows, labels, train.vocab_size, specials)
