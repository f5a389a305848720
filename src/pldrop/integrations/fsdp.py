"""FSDP2 (``torch.distributed.fsdp.fully_shard``) with PLD: a dropped block costs no communication.

FSDP2 all-gathers a block's parameters in a forward pre-hook on the block module and
reduce-scatters its gradients in a hook on the block's backward. Under plain ``fully_shard``, a
block PLD drops is still *called* (only its ``forward`` returns early), so its pre-hook still
all-gathers it, and its post-forward hook registers a pre-backward hook on the returned input,
which all-gathers it again in backward. :func:`shard_with_pld` shards each block and the root,
and marks the blocks so that a dropped block is not called at all (``SwitchableBlock.__call__``
returns its input before any hook). Because every rank draws the same gates (a counter-based
generator, :mod:`pldrop.controller`), every rank skips the same collectives and none waits.

What else touches a dropped block (checked in torch 2.13's ``_fully_shard``):

- the root's lazy init runs once and communicates nothing;
- the root's end-of-backward callback calls ``post_backward`` on every group that did not run
  it; a group whose parameters got no gradient (and ``reduce_scatter_unused_params`` off, the
  default) returns before its reduce-scatter;
- backward prefetch follows the order blocks *ran* in the forward (FSDP2 records post-forward
  order), so it already targets the previous kept block; forward prefetch is explicit, and a
  root pre-hook points each kept block at the next kept block (the gates are a pure function of
  (seed, step, micro-step), so they are known before the blocks run).

A skipped block's sharded gradients stay ``None``: AdamW leaves its parameters and state alone.

Order: ``apply_pld(model)`` first, then ``shard_with_pld(model)`` (which calls ``fully_shard``).
Sharding first and applying PLD after is refused, and ``remove_pld`` on a sharded model is not
supported.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..controller import draw_gates
from ..surgery import get_controller


def _sharded(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def kept_blocks(ctl) -> list[int]:
    """Indices of the blocks the *next* training forward will run (without drawing the gates).

    Same arguments as :meth:`ProgressiveLayerDrop.draw` (which the forward calls): the gates are
    a pure function of (seed, step, micro-step, block).
    """
    kept = draw_gates(ctl.keep_probs, ctl.seed, ctl.global_step, ctl.micro_step)
    return [i for i, k in enumerate(kept) if k]


def shard_with_pld(
    model: nn.Module,
    ctl: Any = None,
    *,
    mesh: Any = None,
    reshard_after_forward: bool | int = True,
    mp_policy: Any = None,
) -> nn.Module:
    """Shard ``model`` with FSDP2 per transformer block and at the root, skipping dropped blocks' comms.

    Args:
        model: a model PLD was applied to (``pldrop.apply_pld``), not yet sharded; its parameters
            on the device it will train on.
        ctl: its controller (default: the one ``apply_pld`` attached to ``model``).
        mesh: a 1-D ``DeviceMesh`` (default: FSDP2's, the whole world).
        reshard_after_forward: passed to ``fully_shard`` for the blocks (the root keeps its
            parameters gathered after forward, as FSDP2 recommends).
        mp_policy: a ``torch.distributed.fsdp.MixedPrecisionPolicy`` (default: FSDP2's).

    Returns:
        ``model`` (sharded in place; parameter names unchanged).

    Raises:
        ValueError: no PLD on ``model``, or a block already sharded.
    """
    from torch.distributed.fsdp import fully_shard

    ctl = ctl if ctl is not None else get_controller(model)
    if ctl is None:
        raise ValueError(
            f"{type(model).__name__} has no PLD applied: call pldrop.apply_pld(model) before shard_with_pld"
        )
    if _sharded(model) or any(_sharded(b) for b in ctl.blocks):
        raise ValueError(
            "the model is already sharded with fully_shard: pass the unsharded model (apply_pld, then "
            "shard_with_pld, which shards each block and the root)"
        )
    kw: dict[str, Any] = {"mesh": mesh}
    if mp_policy is not None:
        kw["mp_policy"] = mp_policy
    for block in ctl.blocks:
        fully_shard(block, reshard_after_forward=reshard_after_forward, **kw)
        block._pld_bypass_hooks = True  # a dropped block is not called: no hooks, no collectives
    fully_shard(model, reshard_after_forward=False, **kw)

    blocks = list(ctl.blocks)

    def point_prefetch(module, args, kwargs):
        # Before FSDP's root pre-hook (prepended last): each kept block prefetches the next kept one.
        if module.training and ctl.enabled:
            run = [blocks[i] for i in kept_blocks(ctl)]
        else:
            run = blocks
        module.set_modules_to_forward_prefetch(run[:1])
        for b in blocks:
            b.set_modules_to_forward_prefetch([])
        for b, nxt in zip(run, run[1:]):
            b.set_modules_to_forward_prefetch([nxt])

    model._pld_fsdp_hook = model.register_forward_pre_hook(point_prefetch, prepend=True, with_kwargs=True)
    return model
