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
    labels = torch.where(selected, ids, torch.full_like(ids, IGNORE_INDEX))
    to_mask = torch.bernoulli(torch.full(ids.shape, 0.8), generator=generator).bool() & selected
    to_random = (torch.bernoulli(torch.full(ids.shape, 0.5), generator=generator).bool()
                 & selected & ~to_mask)
    random_ids = torch.randint(vocab_size, ids.shape, generator=generator, dtype=torch.long)
    out = torch.where(to_mask, torch.full_like(ids, mask_id), ids)
    out = torch.where(to_random, random_ids, out)
    return out, labels


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
