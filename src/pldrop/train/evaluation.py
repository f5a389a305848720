"""Masked-LM validation of a pretraining run."""

from __future__ import annotations

import torch

from ..models import MaskedLMLoss


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset, batch_size: int, max_seqs: int, bf16: bool, device,
             loss_fn: torch.nn.Module | None = None) -> dict[str, float]:
    """Masked-token loss and accuracy over (the first ``max_seqs`` of) the validation set
    (``loss_fn``: a :class:`MaskedLMLoss` to call instead of a new one, e.g. the FSDP root)."""
    from ..data.batches import collate

    was_training = (loss_fn if loss_fn is not None else model).training
    loss_fn = loss_fn if loss_fn is not None else MaskedLMLoss(model)
    loss_fn.eval()
    n = len(dataset) if not max_seqs else min(max_seqs, len(dataset))
    total_loss, correct, count = 0.0, 0, 0
    for start in range(0, n, batch_size):
        batch = collate([dataset[i] for i in range(start, min(n, start + batch_size))])
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            loss, c, m = loss_fn(batch["input_ids"], batch["attention_mask"], batch["labels"])
        if m:
            total_loss += loss.item() * m
        correct += int(c)
        count += m
    loss_fn.train(was_training)
    return {"val_loss": total_loss / max(1, count), "val_accuracy": correct / max(1, count), "val_tokens": count}
