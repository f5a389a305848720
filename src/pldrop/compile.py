"""Regional compilation: compile each transformer block's own forward, keep the PLD gate eager.

Compiling the whole model traces the gate: ``ctl.last_kept[i]`` and p_i become guards, so every
new set of kept blocks (up to 2^L) and every new θ recompiles until torch gives up and falls back
to eager. Instead we compile the block's *original* forward (the HF block, as torchtune and
torchtitan compile per layer) and leave the gate in Python around it:

- a dropped block never enters the compiled code (it returns its input, as in eager);
- a kept block calls the same compiled code whatever the other gates were;
- the 1/p rescaling of a Pre-LN block's branches is done by permanent forward hooks on the
  branch outputs that divide by a 0-dim tensor ``block._pld_scale`` -- a graph input, so a new θ
  changes a value, never the graph;
- every block shares one compiled code object (same class, parameters are graph inputs), so
  compile time is that of one block.

Parameter names and ``state_dict`` are unchanged (no ``_orig_mod.`` prefix, unlike
``torch.compile(block)``).

Order: both orders work. ``apply_pld`` then ``compile_blocks`` is the one we test most; with
``compile_blocks`` first, ``apply_pld`` moves the compiled forward behind the gate. A block
compiled with ``Module.compile()`` is refused by ``apply_pld`` (it would trace the gate).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .block import SwitchableBlock, branch_outputs
from .surgery import find_block_lists, get_controller


def _blocks(model: nn.Module, layers: str | list[str] | None) -> list[nn.Module]:
    ctl = get_controller(model)
    if ctl is not None and layers is None:
        return list(ctl.blocks)
    paths = find_block_lists(model) if layers is None else ([layers] if isinstance(layers, str) else list(layers))
    if len(paths) != 1 and layers is None:
        raise ValueError(
            f"found {len(paths)} block lists in {type(model).__name__} ({', '.join(paths) or 'none'}); "
            "pass layers='dotted.path' naming the nn.ModuleList(s) of blocks"
        )
    return [b for p in paths for b in model.get_submodule(p)]


def _divide_by_scale(block: nn.Module):
    def hook(module, inputs, output):
        return output / block._pld_scale  # (B, T, H) / () -- 1 outside PLD's kept forwards

    return hook


def compile_blocks(model: nn.Module, layers: str | list[str] | None = None, **compile_kwargs: Any) -> nn.Module:
    """Compile each transformer block's forward in place; the PLD gate stays in eager Python.

    Args:
        model: a model with or without PLD applied (see the module docstring for the order).
        layers: dotted path(s) of the block list(s), where automatic search finds none or several
            (as in :func:`pldrop.apply_pld`); ignored-by-default when PLD is applied (its blocks).
        **compile_kwargs: passed to ``torch.compile`` (``backend``, ``mode``, ``dynamic``, ...).

    Returns:
        ``model`` itself (same object, same parameter names).

    Raises:
        ValueError: a block is already compiled, or no single block list is found.
    """
    blocks = _blocks(model, layers)
    for i, block in enumerate(blocks):
        if block.__dict__.get("_pld_compiled") is not None or getattr(block, "_compiled_call_impl", None) is not None:
            raise ValueError(f"block {i} ({type(block).__name__}) is already compiled")
    for block in blocks:
        orig = block._pld_orig_class if isinstance(block, SwitchableBlock) else type(block)
        ref = next(block.parameters(), None)
        block.register_buffer("_pld_scale", torch.ones((), device=ref.device if ref is not None else None),
                              persistent=False)
        block._pld_scale_value = 1.0
        for m in branch_outputs(block):
            m.register_forward_hook(_divide_by_scale(block))
        compiled = torch.compile(orig.forward.__get__(block), **compile_kwargs)
        block._pld_compiled = compiled
        if not isinstance(block, SwitchableBlock):
            block.forward = compiled  # no PLD (yet): the block just runs compiled
    return model
