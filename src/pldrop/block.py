"""The Switchable-Transformer block: skip the block, or run it with its branches rescaled by 1/p.

Rather than wrapping a block in a new module (which would rename every parameter and break
``state_dict`` / ``save_pretrained``), :func:`make_switchable` swaps the block's class for a
subclass whose ``forward`` first consults the controller -- the technique
``torch.nn.utils.parametrize`` uses. Parameter names, ``state_dict`` and the module object
itself are unchanged; :func:`restore` swaps the original class back.

In a training forward with gate G_i and keep probability p_i < 1:

- G_i = 0 (dropped): the block returns its input, y = x. It does no forward, so autograd
  records nothing and its parameters get no gradient (``grad is None``).
- G_i = 1 (kept), Pre-LN families whose residual branches we know (``BRANCH_OUTPUTS``):
  the paper's ST block, h = x + A(LN(x))/p ; y = h + F(LN(h))/p. The output of each branch's
  last projection is divided by p before the residual add (dropout after it commutes with
  the scaling).
- G_i = 1 (kept), any other block (Post-LN BERT, DistilBERT, unknown models): the generic
  rule y = x + (f(x) - x)/p, which rescales the block's total residual update by 1/p.
  Both rules keep E[y] equal to the eval-mode output to first order.

In eval mode, at p = 1 (θ = 1) or with the controller disabled, the original ``forward``
runs untouched, so outputs are bit-identical to the unmodified model.
"""

from __future__ import annotations

import typing
from typing import Any

import torch
from torch import nn

# Pre-LN blocks whose residual branches end in these submodules (dotted paths inside the
# block); a path absent from a given instance (e.g. no cross-attention) is skipped.
BRANCH_OUTPUTS: dict[str, tuple[str, ...]] = {
    "RobertaPreLayerNormLayer": ("attention.output.dense", "crossattention.output.dense", "output.dense"),
    "GPT2Block": ("attn.c_proj", "crossattention.c_proj", "mlp.c_proj"),
    "LlamaDecoderLayer": ("self_attn.o_proj", "mlp.down_proj"),
    "MistralDecoderLayer": ("self_attn.o_proj", "mlp.down_proj"),
    "Qwen2DecoderLayer": ("self_attn.o_proj", "mlp.down_proj"),
    "Qwen3DecoderLayer": ("self_attn.o_proj", "mlp.down_proj"),
}

_CLASSES: dict[type, type] = {}  # original block class -> its switchable subclass


def branch_outputs(block: nn.Module) -> list[nn.Module]:
    """The modules ending each residual branch of a known Pre-LN block; [] if unknown."""
    # The first known class up the MRO: the block may sit under PLD's or FSDP2's subclass.
    paths = next((BRANCH_OUTPUTS[c.__name__] for c in type(block).__mro__ if c.__name__ in BRANCH_OUTPUTS), ())
    mods = []
    for path in paths:
        try:
            mods.append(block.get_submodule(path))
        except AttributeError:
            continue
    return mods


def _first_tensor(args: tuple, kwargs: dict) -> torch.Tensor:
    x = args[0] if args else kwargs.get("hidden_states", kwargs.get("x"))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"PLD: cannot find the hidden states among the arguments of {type(x)}")
    return x


def _divide_output(p: float):
    def hook(module, inputs, output):
        return output / p

    return hook


class SwitchableBlock(nn.Module):
    """Mixin placed in front of a block's own class; see the module docstring."""

    _pld: Any  # the ProgressiveLayerDrop controller
    _pld_index: int
    _pld_orig_class: type
    _pld_branches: list[nn.Module]
    _pld_out_len: int | None  # length of the tuple the block returns, if it returns one
    _pld_probed: bool  # the output structure is known

    def forward(self, *args, **kwargs):
        ctl = self._pld
        if not (self.training and ctl.enabled):
            return self._pld_run(args, kwargs)
        i = self._pld_index
        p = ctl.keep_probs[i]
        if p >= 1.0:  # θ = 1: nothing to drop, nothing to rescale
            return self._pld_run(args, kwargs)
        if ctl.last_kept is None:  # the block was called outside the model's forward
            ctl.draw()
        if not ctl.last_kept[i]:
            return self._pld_skip(args, kwargs)
        if not ctl.rescale:
            return self._pld_run(args, kwargs)
        if self._pld_branches and self.__dict__.get("_pld_compiled") is not None:
            return self._pld_run(args, kwargs, p)  # compiled: the branches' permanent hooks divide by p
        if self._pld_branches:
            handles = [m.register_forward_hook(_divide_output(p)) for m in self._pld_branches]
            try:
                return self._pld_run(args, kwargs)
            finally:
                for h in handles:
                    h.remove()
        x = _first_tensor(args, kwargs)
        out = self._pld_run(args, kwargs)
        y = out if isinstance(out, torch.Tensor) else out[0]
        y = x + (y - x) / p  # generic rule: rescale the block's whole residual update
        return y if isinstance(out, torch.Tensor) else (y,) + tuple(out[1:])

    def __call__(self, *args, **kwargs):
        # Under FSDP2 (pldrop.integrations.fsdp), calling the module at all runs its hooks, which
        # all-gather its parameters and set up its reduce-scatter: a dropped block is not called.
        if self.__dict__.get("_pld_bypass_hooks") and self.training:
            ctl = self._pld
            i = self._pld_index
            if ctl.enabled and ctl.keep_probs[i] < 1.0 and ctl.last_kept is not None and not ctl.last_kept[i]:
                return self._pld_skip(args, kwargs)
        return super().__call__(*args, **kwargs)

    def _pld_skip(self, args, kwargs):
        """The output of a dropped block: its input, in the structure the block returns."""
        x = _first_tensor(args, kwargs)  # (B, T, H)
        if not self._pld_probed:
            known = self._pld.output_structure.get(self._pld_orig_class)  # a sibling block has run
            if known is not None:
                self._pld_out_len, self._pld_probed = known or None, True
            else:
                self._pld_probe(args, kwargs)
        if self._pld_out_len is None:
            return x
        return (x,) + (None,) * (self._pld_out_len - 1)  # placeholders for attentions/caches

    def _pld_run(self, args, kwargs, p: float = 1.0):
        compiled = self.__dict__.get("_pld_compiled")
        if compiled is None:
            out = super().forward(*args, **kwargs)
        else:  # pldrop.compile.compile_blocks: the original forward, compiled; p reaches it as a tensor
            set_branch_scale(self, p)
            out = compiled(*args, **kwargs)
        self._pld_out_len = None if isinstance(out, torch.Tensor) else len(out)
        self._pld_probed = True
        self._pld.output_structure[self._pld_orig_class] = self._pld_out_len or 0
        return out

    @torch.no_grad()
    def _pld_probe(self, args, kwargs) -> None:
        """Learn the block's output structure (tensor or tuple) before its first-ever skip.

        Blocks that return a tuple (e.g. DeBERTa's (hidden, attention)) must get a tuple back
        when skipped. If a block is dropped before it ever ran, it runs once here, without
        autograd and with torch's RNG state restored, so training is unaffected.
        """
        sharded = self.__dict__.get("_pld_bypass_hooks")  # FSDP2: parameters must be gathered first
        if sharded:
            self.unshard()
        with torch.random.fork_rng(devices=[]):
            self._pld_run(args, kwargs)
        if sharded:
            self.reshard()


def _annotated_structure(cls: type) -> tuple[int | None, bool]:
    """(tuple length or None for a tensor, known?) from the block's ``forward`` return annotation.

    A block skipped before it ever ran must return the structure it would have returned;
    where the annotation does not say (or a sibling block has not run yet), the block is
    probed once (see ``SwitchableBlock._pld_probe``).
    """
    try:
        ann = typing.get_type_hints(cls.forward).get("return")
    except Exception:  # noqa: BLE001 - unresolvable annotations: fall back to probing
        return None, False
    if ann is torch.Tensor:
        return None, True
    args = typing.get_args(ann)
    if typing.get_origin(ann) is tuple and args and Ellipsis not in args:
        return len(args), True
    return None, False


def set_branch_scale(block: nn.Module, p: float) -> None:
    """Set the divisor the permanent branch hooks of a compiled block apply (see pldrop.compile).

    The divisor is a 0-dim tensor, not a Python float, so a new θ changes a graph input and
    never the compiled graph. A new tensor replaces the old one (no in-place write, so a graph
    still waiting for its backward keeps the value it saw).
    """
    if block.__dict__.get("_pld_scale_value", 1.0) != p:
        block._pld_scale = torch.full((), p, dtype=block._pld_scale.dtype, device=block._pld_scale.device)
        block._pld_scale_value = p


def make_switchable(block: nn.Module, controller: Any, index: int) -> None:
    """Turn ``block`` into a switchable block in place (same object, same parameters)."""
    cls = type(block)
    if isinstance(block, SwitchableBlock):
        raise ValueError(f"block {index} ({cls.__name__}) already has PLD applied; call remove_pld first")
    if getattr(block, "_compiled_call_impl", None) is not None:
        raise ValueError(
            f"block {index} ({cls.__name__}) was compiled with Module.compile(), which would trace the PLD "
            "gate and recompile for every θ and kept set; use pldrop.compile.compile_blocks(model) instead"
        )
    compiled = block.__dict__.get("forward")
    if compiled is not None:
        if block.__dict__.get("_pld_compiled") is not compiled:  # someone else's instance forward
            raise ValueError(
                f"block {index} ({cls.__name__}) has its own instance `forward`, which would bypass the "
                "PLD gate; remove it, or compile with pldrop.compile.compile_blocks(model)"
            )
        del block.forward  # compile_blocks ran first: the switchable forward now calls it
    if cls not in _CLASSES:
        _CLASSES[cls] = type(cls.__name__, (SwitchableBlock, cls), {"__module__": cls.__module__})
    block._pld_orig_class = cls
    block._pld, block._pld_index = controller, index
    block._pld_branches = branch_outputs(block)
    block._pld_out_len, block._pld_probed = _annotated_structure(cls)
    block.__class__ = _CLASSES[cls]


def restore(block: nn.Module) -> None:
    """Undo :func:`make_switchable`: the original class back, our attributes gone."""
    block.__class__ = block._pld_orig_class
    if block.__dict__.get("_pld_compiled") is not None:
        block.forward = block._pld_compiled  # still compiled, now without the gate
        set_branch_scale(block, 1.0)
    for name in ("_pld", "_pld_index", "_pld_orig_class", "_pld_branches", "_pld_out_len", "_pld_probed",
                 "_pld_bypass_hooks"):
        block.__dict__.pop(name, None)
