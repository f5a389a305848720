"""Tiny models and data shared by the distributed tests and their worker scripts (no download)."""

from __future__ import annotations

import torch

VOCAB, HIDDEN, LAYERS = 99, 32, 4


def tiny_model(layers: int = LAYERS, seed: int = 0):
    """A Pre-LN RoBERTa MLM, hidden 32, no dropout (so runs are deterministic), same init for a seed."""
    import transformers as T

    torch.manual_seed(seed)
    cfg = T.RobertaPreLayerNormConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_attention_heads=2,
                                      intermediate_size=37, num_hidden_layers=layers, max_position_embeddings=64,
                                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return T.RobertaPreLayerNormForMaskedLM(cfg)


def global_batch(step: int, size: int = 4, seq: int = 12) -> dict[str, torch.Tensor]:
    """The global batch of a step: every token is a label, so each row has the same token count
    and the mean loss over the batch is the mean of the per-shard mean losses."""
    g = torch.Generator().manual_seed(1000 + step)
    ids = torch.randint(3, VOCAB, (size, seq), generator=g)  # (B, T)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def shard(batch: dict[str, torch.Tensor], rank: int, world: int) -> dict[str, torch.Tensor]:
    n = batch["input_ids"].shape[0] // world
    return {k: v[rank * n:(rank + 1) * n] for k, v in batch.items()}


def param_groups(model, weight_decay: float):
    """Weight decay on matrices only (BERT's convention, as in pldrop.train.loop)."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def flat_params(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])
