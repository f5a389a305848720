"""Depth on demand: cut a model to K of its L blocks, with no fine-tuning.

A model trained with layer dropping has learned to run with blocks missing (LayerDrop, Fan et al.
2020, https://arxiv.org/abs/1909.11556 prunes a RoBERTa to half its layers at inference). Which
blocks go is the *strategy*; each is a pure function ``(L, K) -> kept block indices``:

- ``top``: keep blocks ``0 .. K-1``, drop the highest.
- ``every-other`` (LayerDrop's): drop every other block from the top down -- positions
  ``n-1, n-3, n-5, ...`` of the ``n`` blocks still there -- one at a time until K remain; a pass
  that ends with more than K left starts again from the top of what remains. At K = L/2 this keeps
  the even blocks ``0, 2, 4, ...`` (what LayerDrop keeps at a pruning rate of 0.5).
- ``keep-prob``: drop the blocks PLD dropped most, i.e. those with the lowest keep probability
  (ties: the higher block goes first). PLD's keep probability falls with depth (linear rule) or is
  the same for all (uniform rule), so for both of pldrop's rules this *equals* ``top``.
- ``greedy``: data-driven; repeatedly remove the block whose removal costs least on a validation
  set (:func:`greedy_removal`). From L down to K it evaluates the model L + (L-1) + ... + (K+1)
  times -- about L²/2 validation passes to go all the way down.

:func:`shrink` returns a new model with only the kept blocks (renumbered; the config's layer count
and per-layer lists follow), so ``save_pretrained`` writes a folder ``AutoModelFor...`` loads
with no missing or unexpected keys. :func:`only_blocks` runs a model with a subset of its blocks
in place (for depth curves, without copying weights).
"""

from __future__ import annotations

import contextlib
import copy
from typing import Callable, Iterator, Sequence

from torch import nn

from .errors import UserError
from .surgery import _resolve, find_block_lists

STRATEGIES = ("top", "every-other", "keep-prob", "greedy")


def check_keep(keep: float | int, num_layers: int) -> int:
    """The number of blocks to keep: an integer in [1, L], or a fraction 0 < f < 1 -> round(f·L).

    >>> check_keep(6, 12), check_keep(0.75, 12), check_keep(0.5, 3)
    (6, 9, 2)
    >>> check_keep(0, 12)
    Traceback (most recent call last):
    ...
    pldrop.errors.UserError: keep=0 is out of range: give a number of blocks in [1, 12] or a fraction in (0, 1)
    """
    bad = UserError(f"keep={keep!r} is out of range: give a number of blocks in [1, {num_layers}] or a fraction "
                    "in (0, 1)")
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or keep != keep:
        raise bad
    if isinstance(keep, float) and not keep.is_integer():
        if not 0 < keep < 1:
            raise bad
        k = round(keep * num_layers)  # round half to even, as Python's round
        if k < 1:
            raise UserError(f"keep={keep!r} of {num_layers} blocks rounds to 0; keep at least one block")
        return k
    k = int(keep)
    if not 1 <= k <= num_layers:
        raise bad
    return k


def kept_top(num_layers: int, keep: int) -> list[int]:
    """``top``: the lowest ``keep`` blocks.

    >>> kept_top(6, 4)
    [0, 1, 2, 3]
    """
    return list(range(keep))


def kept_every_other(num_layers: int, keep: int) -> list[int]:
    """``every-other`` (LayerDrop's): drop positions n-1, n-3, ... of the n blocks left, top down,
    one at a time until ``keep`` remain; repeat the pass over what is left if needed.

    >>> kept_every_other(12, 6)
    [0, 2, 4, 6, 8, 10]
    >>> kept_every_other(12, 9)
    [0, 1, 2, 3, 4, 5, 6, 8, 10]
    >>> kept_every_other(12, 3)
    [0, 4, 8]
    >>> kept_every_other(4, 1), kept_every_other(5, 2)
    ([0], [1, 3])
    """
    kept = list(range(num_layers))
    while len(kept) > keep:
        for block in [kept[p] for p in range(len(kept) - 1, -1, -2)]:
            if len(kept) == keep:
                break
            kept.remove(block)
    return kept


def kept_by_keep_prob(probs: Sequence[float], keep: int) -> list[int]:
    """``keep-prob``: keep the ``keep`` blocks with the highest keep probability (ties: lower block).

    >>> from pldrop.schedule import keep_probs
    >>> kept_by_keep_prob(keep_probs(0.5, 6), 4)  # linear rule: the same as top
    [0, 1, 2, 3]
    >>> kept_by_keep_prob([0.5, 0.5, 0.5], 2)     # uniform rule: ties, the same as top
    [0, 1]
    >>> kept_by_keep_prob([0.6, 0.9, 0.7], 2)
    [1, 2]
    """
    order = sorted(range(len(probs)), key=lambda i: (-probs[i], i))
    return sorted(order[:keep])


def greedy_removal(num_layers: int, cost: Callable[[list[int]], float], min_keep: int = 1
                   ) -> list[tuple[list[int], float]]:
    """Remove blocks one by one, each time the one whose removal gives the lowest ``cost``.

    Args:
        num_layers: L.
        cost: validation loss of the model run with only the given (sorted) blocks.
        min_keep: stop when this many blocks remain.

    Returns:
        ``[(kept, cost), ...]`` from L - 1 blocks down to ``min_keep`` (the full depth is not
        evaluated here). It costs L + (L-1) + ... + (min_keep + 1) calls of ``cost``.

    >>> path = greedy_removal(4, lambda kept: -sum(kept), min_keep=2)  # prefers the high blocks
    >>> [k for k, _ in path]
    [[1, 2, 3], [2, 3]]
    """
    kept = list(range(num_layers))
    path = []
    while len(kept) > min_keep:
        trials = [(cost([b for b in kept if b != drop]), drop) for drop in kept]
        best, drop = min(trials)  # ties: the lower block goes (min over (cost, index))
        kept = [b for b in kept if b != drop]
        path.append((kept, best))
    return path


def kept_blocks(strategy: str, num_layers: int, keep: int, *, probs: Sequence[float] | None = None,
                cost: Callable[[list[int]], float] | None = None) -> list[int]:
    """The blocks ``strategy`` keeps when ``keep`` of ``num_layers`` stay (sorted, 0 = lowest).

    ``probs``: PLD keep probabilities for ``keep-prob`` (default: the linear rule at θ̄ = 0.5);
    ``cost``: the validation loss of a set of kept blocks, needed by ``greedy``.

    >>> kept_blocks("top", 4, 2), kept_blocks("every-other", 4, 2), kept_blocks("keep-prob", 4, 2)
    ([0, 1], [0, 2], [0, 1])
    """
    if strategy not in STRATEGIES:
        raise UserError(f"strategy={strategy!r} is not known: use one of {', '.join(STRATEGIES)}")
    keep = check_keep(keep, num_layers)
    if keep == num_layers:
        return list(range(num_layers))
    if strategy == "top":
        return kept_top(num_layers, keep)
    if strategy == "every-other":
        return kept_every_other(num_layers, keep)
    if strategy == "keep-prob":
        from .schedule import keep_probs

        probs = keep_probs(0.5, num_layers) if probs is None else list(probs)
        if len(probs) != num_layers:
            raise ValueError(f"{len(probs)} keep probabilities for {num_layers} blocks")
        return kept_by_keep_prob(probs, keep)
    if cost is None:
        raise UserError("strategy='greedy' needs validation data to choose blocks by (--corpus, or batches=)")
    return greedy_removal(num_layers, cost, keep)[-1][0]


# -- the model -------------------------------------------------------------------------------------


def block_list(model: nn.Module, layers: str | None = None) -> tuple[str, nn.ModuleList]:
    """The dotted path and the ``nn.ModuleList`` of ``model``'s blocks (the list ``apply_pld`` uses).

    Raises:
        UserError: no block list, or several (e.g. an encoder-decoder) and ``layers`` not given.
    """
    if getattr(model, "_pld_controller", None) is not None:
        raise UserError(f"{type(model).__name__} has PLD applied; call pldrop.remove_pld(model) before shrinking")
    if layers is None:
        paths = find_block_lists(model)
        if len(paths) != 1:
            what = "no list of transformer blocks" if not paths else f"several block lists ({', '.join(paths)})"
            raise UserError(f"{type(model).__name__} is not a family pldrop can shrink: it found {what}; "
                            "shrink handles models with one list of blocks (BERT, RoBERTa, GPT-2, Llama, ...)")
        layers = paths[0]
    try:
        return layers, _resolve(model, layers)
    except ValueError as e:
        raise UserError(str(e)) from None


def _per_layer_lists(config, num_layers: int) -> list[str]:
    """Config attributes that hold one entry per block (``layer_types``, ``mlp_layer_types``, ...)."""
    if config is None or num_layers < 2:
        return []
    return [k for k, v in vars(config).items()
            if isinstance(v, (list, tuple)) and len(v) == num_layers and k != "architectures"]


def _set_layers(config, kept: list[int], num_layers: int) -> None:
    """``config`` describing only the ``kept`` of its ``num_layers`` blocks (count, per-layer lists,
    the sparse ``per_layer_config``), renumbered 0..K-1."""
    if config is None:
        return
    for key in _per_layer_lists(config, num_layers):
        old = getattr(config, key)
        setattr(config, key, type(old)(old[i] for i in kept))
    sparse = getattr(config, "per_layer_config", None)
    if isinstance(sparse, dict) and sparse:
        config.per_layer_config = {new: sparse[k] for new, i in enumerate(kept)
                                   for k in (i, str(i)) if k in sparse}
    config.num_hidden_layers = len(kept)  # attribute_map: n_layer (GPT-2, BLOOM), n_layers (DistilBERT)


def _config_layers(config) -> int | None:
    n = getattr(config, "num_hidden_layers", None) if config is not None else None
    return n if isinstance(n, int) else None


def _check_shrinkable(model: nn.Module, blocks: nn.ModuleList) -> None:
    config = getattr(model, "config", None)
    n = _config_layers(config)
    if n is not None and n != len(blocks):
        raise UserError(f"{type(model).__name__}: config.num_hidden_layers={n} but the block list holds "
                        f"{len(blocks)} blocks; pldrop cannot tell which count to change")
    if getattr(config, "scale_attn_by_inverse_layer_idx", False):
        # GPT-2's attention scales by 1/(layer_idx + 1): a renumbered block would compute differently
        raise UserError(f"{type(model).__name__} has scale_attn_by_inverse_layer_idx=True: a block's output "
                        "depends on its position, so no shrunk model reproduces the original's kept blocks")


@contextlib.contextmanager
def only_blocks(model: nn.Module, kept: Sequence[int], layers: str | None = None) -> Iterator[nn.Module]:
    """Run ``model`` with only its ``kept`` blocks inside the ``with`` (no weights copied).

    The block list and the config's layer count and per-layer lists are swapped in place and put
    back on exit. Blocks keep their own ``layer_idx``: use it without a KV cache (``use_cache=False``).
    """
    path, blocks = block_list(model, layers)
    _check_shrinkable(model, blocks)
    kept = sorted(set(kept))
    if not kept or kept[0] < 0 or kept[-1] >= len(blocks):
        raise ValueError(f"kept={kept} must name blocks in [0, {len(blocks)})")
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path)
    config = getattr(model, "config", None)
    saved = copy.deepcopy(vars(config)) if config is not None else None
    setattr(parent, name, type(blocks)([blocks[i] for i in kept]))
    try:
        _set_layers(config, kept, len(blocks))
        yield model
    finally:
        setattr(parent, name, blocks)
        if config is not None:
            vars(config).clear()
            vars(config).update(saved)


def shrink_model(model: nn.Module, kept: Sequence[int], layers: str | None = None) -> nn.Module:
    """A copy of ``model`` with only the ``kept`` blocks, renumbered 0..K-1 (``layer_idx`` too).

    The original is untouched. ``model.config`` (if any) gets the new layer count and per-layer
    lists, so ``save_pretrained`` writes a model of K layers.
    """
    path, blocks = block_list(model, layers)
    _check_shrinkable(model, blocks)
    kept = sorted(set(kept))
    if not kept or kept[0] < 0 or kept[-1] >= len(blocks):
        raise ValueError(f"kept={kept} must name blocks in [0, {len(blocks)})")
    with only_blocks(model, kept, path):  # deepcopy the small model only, never the dropped blocks
        new = copy.deepcopy(model)
    _, new_blocks = block_list(new, path)
    for j, block in enumerate(new_blocks):
        for m in block.modules():  # attention caches index layers by layer_idx (Llama, GPT-2, OPT, ...)
            if isinstance(getattr(m, "layer_idx", None), int):
                m.layer_idx = j
    new.shrunk_from = {"num_layers": len(blocks), "kept": kept}
    return new


def shrink(model: nn.Module, keep: float | int, strategy: str = "top", *, probs: Sequence[float] | None = None,
           cost: Callable[[list[int]], float] | None = None, layers: str | None = None) -> nn.Module:
    """A new model with ``keep`` of ``model``'s L blocks, chosen by ``strategy``; ``model`` is untouched.

    Args:
        model: an HF model (any family whose one block list pldrop finds: BERT, RoBERTa(-PreLN),
            DistilBERT, GPT-2, Llama, Mistral, Qwen2, ...), PLD not applied.
        keep: number of blocks in [1, L], or a fraction 0 < f < 1 (round(f·L)).
        strategy: ``top``, ``every-other``, ``keep-prob`` or ``greedy`` (see :mod:`pldrop.prune`).
        probs: the keep probabilities PLD trained with (``keep-prob``; default linear rule).
        cost: ``cost(kept) -> validation loss`` (``greedy``); see
            :func:`pldrop.train.depth.loss_of_blocks` for the masked/causal-LM one.
        layers: dotted path of the block list, when automatic search finds several.

    Returns:
        The shrunk model (``.shrunk_from`` = ``{"num_layers": L, "kept": [...]}``); call
        ``save_pretrained`` to write it.
    """
    _, blocks = block_list(model, layers)
    kept = kept_blocks(strategy, len(blocks), keep, probs=probs, cost=cost)
    return shrink_model(model, kept, layers)
