"""Module surgery: find a model's transformer blocks, make them switchable, and undo it."""

from __future__ import annotations

import warnings
from typing import Sequence

from torch import nn

from .block import SwitchableBlock, make_switchable, restore
from .controller import ProgressiveLayerDrop
from .schedule import DEFAULT_COOLDOWN

# Attribute names HF models give their list of blocks: BERT/RoBERTa `encoder.layer`,
# DistilBERT `transformer.layer`, GPT-2 `transformer.h`, Llama & co `model.layers`, ViT-like
# `blocks`, T5 `block`.
BLOCK_LIST_NAMES = ("layer", "layers", "h", "blocks", "block")


def find_block_lists(model: nn.Module) -> list[str]:
    """Dotted paths of the lists of transformer blocks inside ``model``.

    A candidate is an ``nn.ModuleList`` named like a block list whose entries all share one
    class; lists nested inside another candidate (e.g. sub-layers of a block) are ignored.
    """
    found: list[str] = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if name.rsplit(".", 1)[-1] not in BLOCK_LIST_NAMES:
            continue
        if len({type(m) for m in module}) != 1:
            continue
        if any(name.startswith(f + ".") for f in found):
            continue
        found.append(name)
    return found


def _resolve(model: nn.Module, path: str) -> nn.ModuleList:
    try:
        mod = model.get_submodule(path)
    except AttributeError:
        raise ValueError(f"layers={path!r} names no submodule of {type(model).__name__}") from None
    if not isinstance(mod, (nn.ModuleList, nn.Sequential)) or len(mod) == 0:
        raise ValueError(
            f"layers={path!r} is a {type(mod).__name__}, not a non-empty nn.ModuleList of blocks"
        )
    return mod


def _common_parent(paths: Sequence[str]) -> str:
    """Dotted path of the innermost module that contains every path.

    >>> _common_parent(["bert.encoder.layer"])
    'bert.encoder'
    >>> _common_parent(["encoder.block", "decoder.block"])
    ''
    """
    parts = [p.split(".")[:-1] for p in paths]
    common = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return ".".join(common)


def apply_pld(
    model: nn.Module,
    theta_bar: float = 0.5,
    gamma: float = 0.001,
    seed: int = 0,
    rule: str = "linear",
    rescale: bool = True,
    layers: str | Sequence[str] | None = None,
    schedule: str = "pld",
    total_steps: int | None = None,
    cooldown: float = DEFAULT_COOLDOWN,
) -> ProgressiveLayerDrop:
    """Add Progressive Layer Dropping to ``model`` in place and return its controller.

    Each block of the model becomes a Switchable-Transformer block (see :mod:`pldrop.block`);
    parameter names, ``state_dict`` and ``save_pretrained`` output stay exactly as they were.
    Call ``ctl.step(global_step)`` once per optimizer step. Paper: https://arxiv.org/abs/2010.13369

    Args:
        model: any ``nn.Module``; the block list is found automatically for BERT, RoBERTa,
            RoBERTa-PreLayerNorm, DistilBERT, GPT-2, Llama-style (``model.layers``) and similar.
        theta_bar: θ̄ in (0, 1], where θ(t) decays to (0.5 in the paper and DeepSpeed).
        gamma: γ >= 0, decay rate of θ(t); the paper suggests 100/T (``gamma_for_steps``).
        seed: seeds the gates (same seed -> same gates on every rank and after resume).
        rule: depth rule, ``"linear"`` (paper) or ``"uniform"``.
        rescale: divide kept blocks' residual branches by their keep probability.
        layers: dotted path(s) to the ``nn.ModuleList`` of blocks, for models where automatic
            search finds none or several (e.g. ``"encoder.block"``). Depth is counted within
            each list.
        schedule: how θ moves over the run (:mod:`pldrop.schedule`): ``"pld"`` the paper's θ(t)
            (default), ``"cooldown"`` θ(t) then back to 1 over the last fraction ``cooldown``,
            ``"constant"`` one θ matched to ``pld``'s mean blocks per step, ``"anneal"`` drop rate
            falling linearly from 1 - θ̄ to 0.
        total_steps: the run's length in optimizer steps, needed by every schedule but ``pld``
            (or give ``ctl.step(t, progress=fraction_of_budget)`` under a time budget).
        cooldown: the fraction of the run ``cooldown`` spends going back to θ = 1, in (0, 1).

    Returns:
        The :class:`~pldrop.ProgressiveLayerDrop` controller.

    Raises:
        ValueError: out-of-range settings, a model already under PLD, or no block list found.
    """
    if getattr(model, "_pld_controller", None) is not None:
        raise ValueError(f"{type(model).__name__} already has PLD applied; call pldrop.remove_pld first")
    if layers is None:
        paths = find_block_lists(model)
        if not paths:
            raise ValueError(
                f"found no list of transformer blocks in {type(model).__name__}; pass "
                "layers='dotted.path' naming the nn.ModuleList that holds them"
            )
        if len(paths) > 1:
            raise ValueError(
                f"found several block lists in {type(model).__name__} ({', '.join(paths)}); pass "
                "layers= with the one(s) PLD should act on, e.g. layers=[...] for both"
            )
    else:
        paths = [layers] if isinstance(layers, str) else list(layers)
    lists = [_resolve(model, p) for p in paths]
    blocks = [b for lst in lists for b in lst]
    if len({id(b) for b in blocks}) != len(blocks):
        raise ValueError(f"layers={paths!r} name the same block twice")

    config = getattr(model, "config", None)
    if getattr(config, "layerdrop", 0) or getattr(config, "encoder_layerdrop", 0):
        warnings.warn(
            "the model's config has layerdrop > 0: HF LayerDrop and PLD would both drop blocks; "
            "set config.layerdrop = 0",
            stacklevel=2,
        )

    ctl = ProgressiveLayerDrop([len(lst) for lst in lists], theta_bar, gamma, seed, rule, rescale, schedule=schedule,
                               total_steps=total_steps, cooldown=cooldown)
    for i, block in enumerate(blocks):
        make_switchable(block, ctl, i)
    ctl.blocks = blocks
    ctl.layer_paths = paths

    def draw_gates(module, args):
        if module.training and ctl.enabled:
            ctl.draw()

    # Gates are drawn once per training forward, before the first block runs: the hook sits on
    # the innermost module holding every block list (e.g. `bert.encoder`), so it also fires when
    # a caller runs the base model directly, and not again when checkpointing recomputes blocks.
    model._pld_hook = model.get_submodule(_common_parent(paths)).register_forward_pre_hook(draw_gates)
    model._pld_controller = ctl
    return ctl


def remove_pld(model: nn.Module) -> None:
    """Undo :func:`apply_pld`: the blocks (the same objects) are plain HF blocks again."""
    ctl = getattr(model, "_pld_controller", None)
    if ctl is None:
        raise ValueError(f"{type(model).__name__} has no PLD applied")
    for block in ctl.blocks:
        if isinstance(block, SwitchableBlock):
            restore(block)
    model._pld_hook.remove()
    del model._pld_hook, model._pld_controller


def get_controller(model: nn.Module) -> ProgressiveLayerDrop | None:
    """The controller :func:`apply_pld` attached to ``model`` (also through a DDP wrapper)."""
    inner = getattr(model, "module", model)
    return getattr(inner, "_pld_controller", None) or getattr(model, "_pld_controller", None)
