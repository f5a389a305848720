"""Deterministic batch order for training (resumable, sharded) and evaluation.

Training step ``s`` of a run is fully determined by ``(seed, s)``: epoch ``s // steps_per_epoch``
has its own seeded permutation of the sequences, the step takes the next ``batch_size *
world_size`` of them, and rank ``r`` takes its slice ``[r * batch_size, (r + 1) * batch_size)``.
Resuming at step ``N`` is ``TrainBatches(..., start_step=N)``. The incomplete global batch at
the end of each epoch is skipped (a different one every epoch, as the permutation changes).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from pldrop.data.masking import generator_for
from pldrop.data.packed import PackedDataset
from pldrop.errors import UserError

Batch = dict[str, torch.Tensor]


def collate(examples: list[Batch]) -> Batch:
    """Stack a list of examples into ``(B, T)`` tensors."""
    return {k: torch.stack([e[k] for e in examples]) for k in examples[0]}


class TrainBatches:
    """An endless, resumable iterator over training batches for one rank.

    Args:
        dataset: the training :class:`~pldrop.data.packed.PackedDataset`.
        batch_size: sequences per batch on this rank (the global batch is
            ``batch_size * world_size``).
        seed: permutation seed (masks use the dataset's own seed, epoch and index).
        start_step: the first step to yield (0 for a fresh run, N to resume after N steps).
        rank: this process's rank.
        world_size: number of processes sharing each global batch.

    Raises:
        UserError: the dataset holds fewer sequences than one global batch.
    """

    def __init__(self, dataset: PackedDataset, batch_size: int, seed: int, start_step: int = 0,
                 rank: int = 0, world_size: int = 1):
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size or start_step < 0:
            raise ValueError(f"bad batch_size={batch_size}, rank={rank}, world_size={world_size} "
                             f"or start_step={start_step}")
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.start_step, self.rank, self.world_size = start_step, rank, world_size
        self.global_batch = batch_size * world_size
        self.steps_per_epoch = len(dataset) // self.global_batch
        if self.steps_per_epoch == 0:
            raise UserError(f"the training split has {len(dataset)} sequences, fewer than one "
                            f"global batch of {self.global_batch}; use a bigger corpus, a smaller "
                            "batch size or a shorter seq_len")
        self._perm_epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def epoch_of(self, step: int) -> int:
        """The epoch that step ``step`` belongs to."""
        return step // self.steps_per_epoch

    def permutation(self, epoch: int) -> torch.Tensor:
        """The seeded order of all sequences in ``epoch`` (cached for the current epoch)."""
        if epoch != self._perm_epoch:
            g = generator_for("perm", self.seed, epoch)
            self._perm, self._perm_epoch = torch.randperm(len(self.dataset), generator=g), epoch
        return self._perm

    def indices(self, step: int) -> list[int]:
        """The dataset indices this rank uses at ``step``."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        start = pos * self.global_batch + self.rank * self.batch_size
        return self.permutation(epoch)[start:start + self.batch_size].tolist()

    def batch(self, step: int) -> Batch:
        """This rank's batch at ``step``: ``input_ids``, ``attention_mask``, ``labels``, ``(B, T)``."""
        epoch = self.epoch_of(step)
        return collate([self.dataset.get(i, epoch) for i in self.indices(step)])

    def __iter__(self) -> Iterator[Batch]:
        step = self.start_step
        while True:
            yield self.batch(step)
            step += 1


def eval_batches(dataset: PackedDataset, batch_size: int, rank: int = 0,
                 world_size: int = 1) -> Iterator[Batch]:
    """Batches over a (validation) dataset in order, the last one possibly smaller.

    Rank ``r`` of ``world_size`` takes sequences ``r, r + world_size, ...``, so the ranks
    together see every sequence exactly once.

    Args:
        dataset: the dataset (usually with ``fixed_masks``).
        batch_size: sequences per batch.
        rank: this process's rank.
        world_size: number of processes.
    """
    idx = list(range(rank, len(dataset), world_size))
    for i in range(0, len(idx), batch_size):
        yield collate([dataset[j] for j in idx[i:i + batch_size]])
