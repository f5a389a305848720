"""Models to pretrain from scratch: transformers' own BERT classes, sized by preset.

- ``"pld"`` arm (and ``"preln"``): Pre-LN ``RobertaPreLayerNormForMaskedLM`` -- LayerNorm on each
  sub-layer's input, the residual path untouched, a final LayerNorm: the paper's ST block shape.
- ``"baseline"`` arm: the paper's baseline, Post-LN ``BertForMaskedLM``.
- ``"llama"`` arm (and ``"llama-pld"``): a Llama-style causal LM, ``LlamaForCausalLM`` (RMSNorm pre-norm,
  rotary positions, SwiGLU feed-forward of width ≈ 8/3·H, tied embeddings), trained on next-token loss.

Plus :func:`masked_lm_loss`, which projects only the masked positions onto the vocabulary:
output-equivalent to the HF head on all positions, and several times cheaper (the
vocabulary projection dominates the fixed, non-block cost of a step).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .arms import CAUSAL_MODELS, MODELS, arm_of
from .errors import UserError
from .presets import PRESETS  # noqa: F401 - its home is pldrop.presets (no torch)

ARMS = MODELS  # the model.arm values (pldrop.arms: every arm there builds one of them)


def preset_config(preset: str, arm: str, vocab_size: int, seq_len: int = 128, **overrides: Any):
    """An HF config for ``preset`` and ``arm`` (Post-LN BERT for baseline, Pre-LN RoBERTa else).

    >>> cfg = preset_config("tiny", "pld", vocab_size=99)
    >>> type(cfg).__name__, cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size
    ('RobertaPreLayerNormConfig', 2, 64, 256)
    """
    from transformers import BertConfig, RobertaPreLayerNormConfig

    if preset not in PRESETS:
        raise UserError(f"preset={preset!r} is not known: use one of {', '.join(PRESETS)} or a config file")
    if arm not in ARMS:
        raise UserError(f"arm={arm!r} is not known: use one of {', '.join(ARMS)}")
    layers, hidden, heads = PRESETS[preset]
    if arm in CAUSAL_MODELS:
        return _llama_config(layers, hidden, heads, vocab_size, seq_len, **overrides)
    kwargs = dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=seq_len + 2,  # RoBERTa offsets positions by padding_idx + 1
        type_vocab_size=1,
        pad_token_id=0,
    )
    kwargs.update(overrides)
    post_ln = arm_of(arm).post_ln
    return BertConfig(**kwargs) if post_ln else RobertaPreLayerNormConfig(**kwargs)


def swiglu_width(hidden: int, multiple: int = 32) -> int:
    """The SwiGLU feed-forward width for ``hidden``: 8/3·H (as many weights as a 4·H GELU MLP with its
    three matrices), rounded up to a multiple of ``multiple`` (Llama rounds to 256 at full size).

    >>> swiglu_width(64), swiglu_width(128), swiglu_width(768)
    (192, 352, 2048)
    """
    return -(-(8 * hidden) // 3 // multiple) * multiple


def _llama_config(layers: int, hidden: int, heads: int, vocab_size: int, seq_len: int, **overrides: Any):
    """A ``LlamaConfig`` at a preset's sizes. BERT's dropout keys map to Llama's one attention dropout
    (a Llama block has no hidden dropout); the special-token ids come from the caller (the tokenizer)."""
    from transformers import LlamaConfig

    overrides.pop("hidden_dropout_prob", None)
    if "attention_probs_dropout_prob" in overrides:
        overrides["attention_dropout"] = overrides.pop("attention_probs_dropout_prob")
    kwargs = dict(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                  num_key_value_heads=heads, intermediate_size=swiglu_width(hidden), max_position_embeddings=seq_len,
                  tie_word_embeddings=True, pad_token_id=0, use_cache=True)
    kwargs.update(overrides)
    return LlamaConfig(**kwargs)


MODEL_TYPES = ("bert", "roberta-prelayernorm")


def read_config_file(config_file: str | Path) -> dict[str, Any]:
    """The JSON object of an HF ``config.json`` for :func:`build_model`, or a one-line UserError.

    Checks that the file exists, is JSON, holds an object and names a model type pldrop builds.
    """
    path = Path(config_file)
    if not path.is_file():
        raise UserError(f"model config file {str(path)!r} does not exist")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UserError(f"model config file {str(path)!r} is not valid JSON: {str(e).splitlines()[0][:200]}") from None
    if not isinstance(raw, dict):
        raise UserError(f"model config file {str(path)!r} holds a JSON {type(raw).__name__}; it must hold an "
                        "object of config keys (an HF config.json)")
    if raw.get("model_type") not in MODEL_TYPES:
        raise UserError(f"model config {str(path)!r} has model_type={raw.get('model_type')!r}; "
                        "use 'bert' (Post-LN) or 'roberta-prelayernorm' (Pre-LN)")
    return raw


def check_config_file(config_file: str | Path, seq_len: int, arm: str | None = None) -> dict[str, Any]:
    """Check an HF ``config.json`` before anything is built: sizes, heads, activation, positions.

    Args:
        config_file: the JSON file.
        seq_len: the longest sequence the run feeds (``data.seq_len``).
        arm: the arm (unused for the checks; named in messages).

    RoBERTa-style models (``roberta-prelayernorm``, the Pre-LN arms) number positions from
    ``pad_token_id + 1``, so they need ``max_position_embeddings >= seq_len + pad_token_id + 1``;
    BERT needs ``>= seq_len``.
    """
    from transformers import AutoConfig
    from transformers.activations import ACT2FN

    raw = read_config_file(config_file)
    where = f"model config {str(config_file)!r}"
    try:
        cfg = AutoConfig.for_model(**{k: v for k, v in raw.items() if k != "vocab_size"})
    except Exception as e:  # noqa: BLE001 - transformers raises many types for bad values
        raise UserError(f"{where} is not a valid {raw['model_type']} config: {' '.join(str(e).split())[:240]}") from None
    ints = {k: getattr(cfg, k, None) for k in ("num_hidden_layers", "hidden_size", "num_attention_heads",
                                               "intermediate_size", "max_position_embeddings")}
    for key, value in ints.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{where}: {key}={value!r} must be an integer >= 1")
    if cfg.hidden_size % cfg.num_attention_heads:
        raise UserError(f"{where}: num_attention_heads={cfg.num_attention_heads} does not divide "
                        f"hidden_size={cfg.hidden_size}; choose heads that divide it")
    act = cfg.hidden_act
    if not isinstance(act, str) or act not in ACT2FN:
        raise UserError(f"{where}: hidden_act={act!r} is not known; use one of {', '.join(sorted(ACT2FN))}")
    offset = 0
    if raw["model_type"] != "bert":
        pad = getattr(cfg, "pad_token_id", None)
        offset = (pad if isinstance(pad, int) and pad >= 0 else 0) + 1
    if cfg.max_position_embeddings < seq_len + offset:
        extra = f" + {offset} (positions start after pad_token_id)" if offset else ""
        raise UserError(f"{where}: max_position_embeddings={cfg.max_position_embeddings} is too small for "
                        f"data.seq_len={seq_len}; it needs at least {seq_len + offset} (seq_len{extra})")
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        v = getattr(cfg, key, 0.0)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v < 1:
            raise UserError(f"{where}: {key}={v!r} must be in [0, 1)")
    return raw


def build_model(
    arm: str,
    vocab_size: int,
    preset: str = "tiny",
    config_file: str | Path | None = None,
    seq_len: int = 128,
    seed: int = 0,
    **overrides: Any,
) -> nn.Module:
    """A freshly initialised masked-LM (causal LM for the ``llama`` arms) for ``arm`` from a preset or an
    HF ``config.json``.

    Args:
        arm: ``baseline`` (Post-LN BERT), ``pld`` / ``preln`` (Pre-LN RoBERTa), or ``postln-pld``.
        vocab_size: the tokenizer's vocabulary size.
        preset: one of ``PRESETS``; ignored when ``config_file`` is given.
        config_file: an HF config JSON (its ``model_type`` must be ``bert`` or
            ``roberta-prelayernorm``); vocab size and overrides still apply.
        seq_len: longest sequence, sets ``max_position_embeddings``.
        seed: seeds the initialisation, so both arms of a comparison are reproducible.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM

    if config_file is not None and arm in CAUSAL_MODELS:
        raise UserError(f"model.config_file is not supported for arm {arm!r} yet; use a preset (model.preset)")
    if config_file is not None:
        raw = check_config_file(config_file, seq_len, arm)
        raw.update(vocab_size=vocab_size, **overrides)
        config = AutoConfig.for_model(**raw)
    else:
        config = preset_config(preset, arm, vocab_size, seq_len, **overrides)
    torch.manual_seed(seed)
    if arm in CAUSAL_MODELS:
        return AutoModelForCausalLM.from_config(config)
    return AutoModelForMaskedLM.from_config(config)


def _head(model: nn.Module) -> nn.Module:
    for name in ("cls", "lm_head"):  # BertForMaskedLM / RobertaPreLayerNormForMaskedLM
        if hasattr(model, name):
            return getattr(model, name)
    raise TypeError(f"{type(model).__name__} has no masked-LM head (cls or lm_head)")


def masked_lm_loss(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MLM loss with the vocabulary projection computed on masked positions only.

    Runs the model's encoder, gathers the N positions whose label is not -100 and applies the
    model's own MLM head to those alone. Equal (up to float rounding) to the HF model's
    ``loss`` with ``labels``, which projects all B*T positions.

    Returns:
        (mean cross-entropy, logits (N, V), labels (N,)).
    """
    base = model.base_model
    hidden = base(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
    sel = labels != -100  # (B, T)
    picked = hidden[sel]  # (N, H)
    target = labels[sel]  # (N,)
    logits = _head(model)(picked)  # (N, V)
    return F.cross_entropy(logits.float(), target), logits, target


class MaskedLMLoss(nn.Module):
    """``forward(input_ids, attention_mask, labels) -> (loss, n_correct, n_masked)`` for a model.

    Wraps :func:`masked_lm_loss` in a module so DistributedDataParallel can wrap it (gradient
    synchronisation needs the forward to go through the DDP wrapper).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, labels):
        loss, logits, target = masked_lm_loss(self.model, input_ids, attention_mask, labels)
        correct = (logits.argmax(-1) == target).sum()
        return loss, correct, target.numel()


def causal_lm_loss(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                   labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Next-token loss of a causal LM: position t predicts token t+1 (``labels``, default ``input_ids``,
    shifted by one inside, as HF does); targets where the attention mask is 0 or the label is -100 are
    left out.

    Returns:
        (mean cross-entropy, logits (N, V), targets (N,)).
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1]  # (B, T-1, V)
    target = (input_ids if labels is None else labels)[:, 1:].clone()  # (B, T-1)
    if attention_mask is not None:
        target[attention_mask[:, 1:] == 0] = -100
    sel = target != -100
    logits, target = logits[sel], target[sel]  # (N, V), (N,)
    return F.cross_entropy(logits.float(), target), logits, target


class CausalLMLoss(MaskedLMLoss):
    """:class:`MaskedLMLoss`'s interface for a causal LM: ``(next-token loss, n_correct, n_predicted)``."""

    def forward(self, input_ids, attention_mask, labels):
        loss, logits, target = causal_lm_loss(self.model, input_ids, attention_mask, labels)
        correct = (logits.argmax(-1) == target).sum()
        return loss, correct, target.numel()


def loss_module(model: nn.Module, causal: bool) -> nn.Module:
    """The training/validation loss module of a model: next-token (``causal``) or masked-token."""
    return CausalLMLoss(model) if causal else MaskedLMLoss(model)


def train_flops(config: Any, batch_size: int, seq_len: int, n_masked: int, blocks_run: float) -> float:
    """Matmul FLOPs of one training step (forward + backward = 3x forward), counted from shapes.

    Per block, per token: Q, K, V, O projections 8H², feed-forward 4HI (SwiGLU, three matrices:
    6HI); attention scores and weighted sum 4TH. The masked-only head: 2H² + 2HV per masked
    token; a decoder's head (no dense layer): 2HV per predicted token (``n_masked``). Embeddings,
    norms and softmax are ignored (a few percent at most).

    >>> from transformers import BertConfig
    >>> cfg = BertConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, vocab_size=30522)
    >>> round(train_flops(cfg, 1, 128, 20, 12) / 1e9, 1)  # GFLOPs per 128-token sequence
    69.9
    >>> from transformers import LlamaConfig
    >>> cfg = LlamaConfig(hidden_size=64, intermediate_size=192, num_hidden_layers=2, vocab_size=400)
    >>> train_flops(cfg, 1, 8, 7, 2) == 3 * (2 * (8 * (8 * 64 * 64 + 6 * 64 * 192) + 4 * 8 * 8 * 64) + 7 * 2 * 64 * 400)
    True
    """
    H, I, V = config.hidden_size, config.intermediate_size, config.vocab_size
    gated = getattr(config, "model_type", None) == "llama"  # SwiGLU: gate, up and down projections
    tokens = batch_size * seq_len
    block = tokens * (8 * H * H + (6 if gated else 4) * H * I) + batch_size * 4 * seq_len * seq_len * H
    head = n_masked * ((0 if gated else 2 * H * H) + 2 * H * V)
    return 3.0 * (blocks_run * block + head)
