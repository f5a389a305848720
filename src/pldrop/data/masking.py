"""BERT's masked-language-model corruption as a pure, seedable function.

``transformers``' ``DataCollatorForLanguageModeling`` draws from a generator owned by the
collator, so a batch's masks depend on how many batches came before. pldrop needs masks fixed
by (seed, epoch, example index) so that a resumed run sees identical batches; hence this
function takes the generator as an argument. The recipe itself is Devlin et al. (2019), §3.1:
https://arxiv.org/abs/1810.04805
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch

IGNORE_INDEX = -100  # label value that torch's cross-entropy skips


def mask_tokens(input_ids: torch.Tensor, *, generator: torch.Generator, mask_id: int,
                vocab_size: int, special_ids: Iterable[int], mlm_prob: float = 0.15,
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Select ``mlm_prob`` of the non-special tokens; replace 80 % of those with ``mask_id``,
    10 % with a uniformly random token id, and leave 10 % unchanged.

    Every sequence (row of the last dimension) with a non-special token gets at least one
    selected token: when the draw selects none, one is chosen from the same seeded stream. A
    batch therefore never lacks a target, and the masked-LM loss is never 0/0 = NaN (with a
    short ``seq_len`` or a low ``mlm_prob`` that would otherwise happen).

    Args:
        input_ids: integer tensor of any shape, e.g. ``(T,)`` or ``(B, T)``; not modified.
        generator: the CPU generator all draws come from (seed it for reproducible masks).
        mask_id: id of ``[MASK]``.
        vocab_size: random replacements are drawn from ``[0, vocab_size)``, as in BERT.
        special_ids: ids never selected ([CLS], [SEP], [PAD], ...).
        mlm_prob: probability that a non-special token is selected.

    Returns:
        ``(corrupted_ids, labels)``: int64 tensors shaped like ``input_ids``; ``labels`` holds
        the original id at selected positions and ``-100`` everywhere else.

    >>> g = torch.Generator().manual_seed(0)
    >>> ids = torch.tensor([2, 10, 11, 12, 13, 3, 0])
    >>> x, y = mask_tokens(ids, generator=g, mask_id=4, vocab_size=20, special_ids=[0, 2, 3],
    ...                    mlm_prob=1.0)
    >>> y.tolist()
    [-100, 10, 11, 12, 13, -100, -100]
    >>> x[[0, 5, 6]].tolist()
    [2, 3, 0]
    """
    ids = input_ids.to(torch.long)
    special = torch.isin(ids, torch.tensor(sorted(set(special_ids)), dtype=torch.long))
    prob = torch.full(ids.shape, float(mlm_prob))
    selected = torch.bernoulli(prob, generator=generator).bool() & ~special
    to_mask = torch.bernoulli(torch.full(ids.shape, 0.8), generator=generator).bool()
    to_random = torch.bernoulli(torch.full(ids.shape, 0.5), generator=generator).bool() & ~to_mask
    random_ids = torch.randint(vocab_size, ids.shape, generator=generator, dtype=torch.long)
    # Drawn last, so every other draw (and every sequence that already has a selected token) is
    # as before: a sequence with none gets one non-special position, chosen from the same stream.
    pick = torch.rand(ids.shape[:-1], generator=generator) if ids.dim() else None
    if pick is not None:
        selected = _at_least_one(selected, ~special, pick)
    labels = torch.where(selected, ids, torch.full_like(ids, IGNORE_INDEX))
    out = torch.where(to_mask & selected, torch.full_like(ids, mask_id), ids)
    out = torch.where(to_random & selected, random_ids, out)
    return out, labels


def _at_least_one(selected: torch.Tensor, allowed: torch.Tensor, pick: torch.Tensor) -> torch.Tensor:
    """Select one ``allowed`` position (the ``floor(pick * n_allowed)``-th) in each last-dim row
    that has none selected, so no sequence -- and no batch -- is without a masked-LM target.

    >>> sel = torch.tensor([[False, False, False, False], [False, True, False, False]])
    >>> ok = torch.tensor([[False, True, True, False], [True, True, True, True]])
    >>> _at_least_one(sel, ok, torch.tensor([0.9, 0.0])).int().tolist()
    [[0, 0, 1, 0], [0, 1, 0, 0]]
    """
    n_allowed = allowed.sum(-1)  # (...,)
    need = (selected.sum(-1) == 0) & (n_allowed > 0)
    if not need.any():
        return selected
    k = (pick * n_allowed).long().clamp(max=(n_allowed - 1).clamp(min=0))  # which allowed position
    rank = allowed.long().cumsum(-1) - 1  # rank of each allowed position in its row
    chosen = allowed & (rank == k.unsqueeze(-1)) & need.unsqueeze(-1)
    return selected | chosen


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from several integers/strings, the same on every machine (blake2b).

    >>> derive_seed(0, 1, 2) == derive_seed(0, 1, 2) != derive_seed(0, 2, 1)
    True
    """
    blob = "\x1f".join(map(str, parts)).encode()
    return int.from_bytes(hashlib.blake2b(blob, digest_size=8).digest(), "big") >> 1


def generator_for(*parts: int | str) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive_seed` of ``parts``."""
    return torch.Generator().manual_seed(derive_seed(*parts))
