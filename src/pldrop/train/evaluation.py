"""Masked-LM validation of a pretraining run, and the word-order probe.

The probe scores the same validation sequences, with the same masks, after shuffling the order of
each sequence's tokens (a token's label travels with it). A model that reads word order loses
accuracy on shuffled text; a model that predicts only from *which* tokens a sequence holds -- a
bag-of-words predictor, the second plateau of small masked-LM runs after the unigram one --
scores the same on both. The gap says which of the two a short run has learned.
"""

from __future__ import annotations

import math

import torch

from ..models import loss_module

SHUFFLE_SEED = 0  # the probe's permutations are fixed, so every run and arm is probed alike


def shuffle_order(batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """``batch`` with each sequence's real tokens after the first ([CLS]) in a random order.

    ``input_ids`` and ``labels`` move together (a masked position keeps its target); padding
    (``attention_mask`` 0) and position 0 stay where they are. Returns new tensors.

    >>> b = {"input_ids": torch.tensor([[2, 10, 11, 12, 3, 0]]), "labels": torch.tensor([[-100, 10, -100, 12, -100, -100]]),
    ...      "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 0]])}
    >>> s = shuffle_order(b, torch.Generator().manual_seed(1))
    >>> s["input_ids"][0, 0].item(), s["input_ids"][0, 5].item(), sorted(s["input_ids"][0, 1:5].tolist())
    (2, 0, [3, 10, 11, 12])
    >>> bool(((s["labels"] == -100) | (s["labels"] == s["input_ids"])).all())
    True
    """
    ids, labels, mask = batch["input_ids"].clone(), batch["labels"].clone(), batch["attention_mask"]
    for row in range(ids.shape[0]):
        real = torch.nonzero(mask[row] != 0).flatten()[1:]  # the first real token ([CLS]) stays
        if real.numel() < 2:
            continue
        perm = real[torch.randperm(real.numel(), generator=generator)]
        ids[row, real], labels[row, real] = batch["input_ids"][row, perm], batch["labels"][row, perm]
    return {**batch, "input_ids": ids, "labels": labels}


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset, batch_size: int, max_seqs: int, bf16: bool, device,
             loss_fn: torch.nn.Module | None = None, shuffled: bool = False, causal: bool = False) -> dict[str, float]:
    """Masked-token loss and accuracy over (the first ``max_seqs`` of) the validation set
    (``loss_fn``: a :class:`MaskedLMLoss` to call instead of a new one, e.g. the FSDP root).

    ``causal``: next-token loss and accuracy instead, plus ``val_ppl`` (the perplexity, exp of the
    loss); the word-order probe is a masked-LM probe and gives nothing for a causal LM (its
    prediction of token t+1 sees only tokens up to t, so shuffling measures something else).

    With ``shuffled``, the word-order probe: the same sequences and masks with each sequence's
    tokens shuffled (:func:`shuffle_order`, fixed permutations); keys ``val_loss_shuffled``,
    ``val_accuracy_shuffled``.
    """
    from ..data.batches import collate

    if shuffled and causal:
        return {}
    was_training = (loss_fn if loss_fn is not None else model).training
    loss_fn = loss_fn if loss_fn is not None else loss_module(model, causal)
    loss_fn.eval()
    gen = torch.Generator().manual_seed(SHUFFLE_SEED)
    n = len(dataset) if not max_seqs else min(max_seqs, len(dataset))
    total_loss, correct, count = 0.0, 0, 0
    for start in range(0, n, batch_size):
        batch = collate([dataset[i] for i in range(start, min(n, start + batch_size))])
        if shuffled:
            batch = shuffle_order(batch, gen)
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            loss, c, m = loss_fn(batch["input_ids"], batch["attention_mask"], batch["labels"])
        if m:
            total_loss += loss.item() * m
        correct += int(c)
        count += m
    loss_fn.train(was_training)
    if shuffled:
        return {"val_loss_shuffled": total_loss / max(1, count), "val_accuracy_shuffled": correct / max(1, count)}
    out = {"val_loss": total_loss / max(1, count), "val_accuracy": correct / max(1, count), "val_tokens": count}
    if causal:
        out["val_ppl"] = math.exp(min(out["val_loss"], 700.0))  # exp overflows past ~709
    return out
