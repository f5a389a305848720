"""A torch ``Dataset`` over packed token sequences in a memory-mapped file, masked on the fly.

The file holds ``n_seqs`` rows of ``seq_len`` token ids (``uint16`` or ``uint32``). Only the
last row may be partial: its first ``last_len`` tokens are real and the rest are ``[PAD]``
with ``attention_mask`` 0. Masks are drawn per example from (seed, epoch, index), so the
same example in the same epoch is always masked the same way (resume-safe); with
``fixed_masks`` (validation) the epoch is ignored and every evaluation sees the same masks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pldrop.data.masking import generator_for, mask_tokens


class PackedDataset(torch.utils.data.Dataset):
    """Packed MLM examples: ``dict(input_ids, attention_mask, labels)``, each ``(seq_len,)`` int64.

    Args:
        path: the ``.bin`` file (need not exist when ``n_seqs`` is 0).
        n_seqs: number of rows.
        seq_len: tokens per row.
        dtype: numpy dtype name of the file, ``"uint16"`` or ``"uint32"``.
        last_len: real tokens in the last row (``seq_len`` when it is full).
        mask_id: id of ``[MASK]``.
        pad_id: id of ``[PAD]``.
        vocab_size: size of the vocabulary (random replacements come from it).
        special_ids: ids that are never masked.
        seed: mask seed.
        mlm_prob: share of non-special tokens selected for prediction.
        fixed_masks: ignore the epoch (validation).
        masked: corrupt the tokens for masked-LM training; False (causal LMs): the tokens as they are,
            ``labels`` the same ids with -100 on padding (the next-token loss shifts them).
    """

    def __init__(self, path: str | Path, *, n_seqs: int, seq_len: int, dtype: str, last_len: int,
                 mask_id: int, pad_id: int, vocab_size: int, special_ids: list[int], seed: int,
                 mlm_prob: float = 0.15, fixed_masks: bool = False, masked: bool = True):
        self.path, self.n_seqs, self.seq_len, self.dtype = Path(path), n_seqs, seq_len, dtype
        self.last_len, self.mask_id, self.pad_id = last_len, mask_id, pad_id
        self.vocab_size, self.special_ids = vocab_size, sorted(set(special_ids) | {pad_id})
        self.seed, self.mlm_prob, self.fixed_masks, self.masked = seed, mlm_prob, fixed_masks, masked
        self.epoch = 0
        self._rows: np.ndarray | None = None

    @property
    def rows(self) -> np.ndarray:
        """The ``(n_seqs, seq_len)`` token array, memory-mapped on first use."""
        if self._rows is None:
            if self.n_seqs == 0:
                self._rows = np.zeros((0, self.seq_len), dtype=self.dtype)
            else:
                self._rows = np.memmap(self.path, dtype=self.dtype, mode="r",
                                       shape=(self.n_seqs, self.seq_len))
        return self._rows

    def __getstate__(self):
        # Pickling a memmap would copy the whole file; workers re-open it instead.
        return {**self.__dict__, "_rows": None}

    def __len__(self) -> int:
        return self.n_seqs

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose masks ``__getitem__`` draws."""
        self.epoch = int(epoch)

    def tokens(self, idx: int) -> torch.Tensor:
        """Unmasked token ids of row ``idx``, ``(seq_len,)`` int64."""
        if not 0 <= idx < self.n_seqs:
            raise IndexError(f"index {idx} out of range for {self.n_seqs} sequences")
        return torch.from_numpy(self.rows[idx].astype(np.int64))

    def attention_mask(self, idx: int) -> torch.Tensor:
        """1 on real tokens, 0 on the padding of the last row; ``(seq_len,)`` int64."""
        mask = torch.ones(self.seq_len, dtype=torch.long)
        if idx == self.n_seqs - 1:
            mask[self.last_len:] = 0
        return mask

    def get(self, idx: int, epoch: int = 0) -> dict[str, torch.Tensor]:
        """Example ``idx`` masked as in ``epoch`` (the epoch is ignored with ``fixed_masks``)."""
        ids = self.tokens(idx)
        if not self.masked:  # a causal LM reads every token and predicts each next one
            mask = self.attention_mask(idx)
            return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}
        tag = ("valid", self.seed, idx) if self.fixed_masks else ("train", self.seed, epoch, idx)
        input_ids, labels = mask_tokens(ids, generator=generator_for("mlm", *tag),
                                        mask_id=self.mask_id, vocab_size=self.vocab_size,
                                        special_ids=self.special_ids, mlm_prob=self.mlm_prob)
        return {"input_ids": input_ids, "attention_mask": self.attention_mask(idx), "labels": labels}

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        return self.get(idx, self.epoch)
