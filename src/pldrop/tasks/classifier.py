"""Load a pretrained model folder as a sequence classifier, with its tokenizer.

Any folder ``AutoModelForSequenceClassification`` can read works: a ``pldrop pretrain`` run
folder (a Pre-LN run loads as ``RobertaPreLayerNormForSequenceClassification``, a Post-LN one as
``BertForSequenceClassification``; the masked-LM head is dropped, a fresh classification head is
initialised), a Hugging Face model folder, or ``hf:NAME`` for a hub model (needs the hub or a
local HF cache).

Every block is active while fine-tuning: a config's LayerDrop rates are set to 0, and PLD is
never applied here unless asked for (``pld=True`` in :mod:`pldrop.tasks.finetune`).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from pldrop.errors import UserError

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model", "vocab.model")
"""A folder holding none of these has no tokenizer (transformers 5 would silently build an empty one)."""

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


@dataclass
class ModelSource:
    """A checked model folder (or hub name) and what fine-tuning needs to know about it.

    Args:
        path: what ``from_pretrained`` is given (a folder, or the hub name without ``hf:``).
        config: the model's HF config, LayerDrop set to 0.
        tokenizer: the folder's tokenizer (a pad token is set when it had none).
        max_length: the longest input the model's position embeddings allow.
        pretrain: the run folder's ``pldrop.json`` (arm, PLD settings), ``{}`` for other folders.
        notes: lines worth telling the user (LayerDrop turned off, pad token added).
    """

    path: str
    config: object
    tokenizer: object
    max_length: int
    pretrain: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _quiet_transformers():
    """Hide transformers' load report and progress bar: the missing head is expected, and
    :func:`load_classifier` checks for missing encoder weights itself."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _position_limit(config) -> int | None:
    """Longest input the position embeddings allow; RoBERTa-style models start positions at
    ``pad_token_id + 1``."""
    n = getattr(config, "max_position_embeddings", None)
    if not isinstance(n, int) or n <= 0:
        return None
    if "roberta" in str(getattr(config, "model_type", "")) or getattr(config, "model_type", "") == "camembert":
        n -= (getattr(config, "pad_token_id", None) or 0) + 1
    return n


def open_model(model: str | Path) -> ModelSource:
    """Check that ``model`` is a folder (or ``hf:NAME``) with a classifiable config and a tokenizer.

    Raises:
        UserError: no such folder, no ``config.json``, no weights, an architecture without a
            sequence-classification head, no tokenizer, or a tokenizer larger than the model's
            vocabulary.
    """
    from transformers import AutoConfig, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

    name = str(model)
    hub = name.startswith("hf:")
    path = name[3:] if hub else name
    what = "a pldrop pretrain run folder or a Hugging Face model folder"
    if not hub:
        folder = Path(path)
        if not folder.exists():
            raise UserError(f"--model {name}: not found (expected {what}, or hf:NAME)")
        if not folder.is_dir():
            raise UserError(f"--model {name}: is a file (expected {what})")
        if not (folder / "config.json").is_file():
            raise UserError(f"--model {name}: no config.json in the folder (expected {what})")
        if not any((folder / f).is_file() for f in WEIGHT_FILES):
            raise UserError(f"--model {name}: no weights in the folder (expected {' or '.join(WEIGHT_FILES[::2])})")
        if not any((folder / f).is_file() for f in TOKENIZER_FILES):
            raise UserError(f"--model {name}: no tokenizer in the folder (expected one of "
                            f"{', '.join(TOKENIZER_FILES)})")
    try:
        with _quiet_transformers():
            config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
        raise UserError(f"--model {name}: cannot read its config ({str(e).splitlines()[0]})") from None
    kind = getattr(config, "model_type", None)
    if kind not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES:
        raise UserError(f"--model {name}: model_type {kind!r} has no sequence-classification head in transformers "
                        f"(expected a masked-LM or classifier such as bert, roberta-prelayernorm, roberta)")
    try:
        with _quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError) as e:
        raise UserError(f"--model {name}: cannot load its tokenizer ({str(e).splitlines()[0]})") from None

    notes = []
    for key in ("layerdrop", "encoder_layerdrop", "decoder_layerdrop"):
        if getattr(config, key, 0):
            notes.append(f"{key}={getattr(config, key)} in the model's config set to 0: every block runs while "
                         f"fine-tuning")
            setattr(config, key, 0.0)
    if tokenizer.pad_token is None:  # GPT-2 and other causal LMs: pad with the end-of-text token
        if tokenizer.eos_token is None:
            raise UserError(f"--model {name}: its tokenizer has neither a pad nor an end-of-sequence token")
        tokenizer.pad_token = tokenizer.eos_token
        notes.append(f"the tokenizer has no pad token; padding with {tokenizer.eos_token!r}")
    if getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = tokenizer.pad_token_id
    vocab = getattr(config, "vocab_size", None)
    if isinstance(vocab, int) and len(tokenizer) > vocab:
        raise UserError(f"--model {name}: its tokenizer has {len(tokenizer)} tokens but the model's vocabulary "
                        f"only {vocab} (a tokenizer from another model?)")
    limit = _position_limit(config)
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and 0 < tok_limit < 1_000_000:
        limit = min(limit, tok_limit) if limit else tok_limit
    pretrain = {}
    if not hub and (Path(path) / "pldrop.json").is_file():
        with contextlib.suppress(ValueError, OSError):
            pretrain = json.loads((Path(path) / "pldrop.json").read_text(encoding="utf-8"))
    return ModelSource(path, config, tokenizer, limit or 512, pretrain, notes)


def load_classifier(src: ModelSource, labels: list[str] | None):
    """A fresh ``AutoModelForSequenceClassification`` from ``src``, head initialised from the
    current torch seed.

    Args:
        src: from :func:`open_model`.
        labels: class names (the head gets ``len(labels)`` outputs), or ``None`` for regression
            (one output, MSE loss).

    Raises:
        UserError: the weights cannot be read, or the encoder's weights are missing from them
            (a folder whose weights belong to another model).
    """
    import copy

    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(src.config)
    config.num_labels = 1 if labels is None else len(labels)
    config.problem_type = "regression" if labels is None else "single_label_classification"
    if labels is not None:
        config.id2label = dict(enumerate(labels))
        config.label2id = {name: i for i, name in enumerate(labels)}
    from safetensors import SafetensorError

    try:
        with _quiet_transformers():
            model, info = AutoModelForSequenceClassification.from_pretrained(
                src.path, config=config, ignore_mismatched_sizes=True, output_loading_info=True)
    except (OSError, ValueError, RuntimeError, EOFError, SafetensorError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise UserError(f"--model {src.path}: cannot load its weights ({first})") from None
    # the head (and BERT's pooler, which masked-LM checkpoints lack) is new; the encoder must not be
    prefix = model.base_model_prefix + "."
    encoder_missing = sorted(k for k in info["missing_keys"] if k.startswith(prefix) and ".pooler." not in k)
    if encoder_missing:
        raise UserError(f"--model {src.path}: {len(encoder_missing)} encoder weights are missing from the "
                        f"checkpoint (e.g. {encoder_missing[0]}); are the weights from another model?")
    return model


def check_weights(src: ModelSource, labels: list[str] | None) -> None:
    """Load the weights once, so a damaged or foreign checkpoint fails before anything is
    deleted or trained (raises :class:`UserError` as :func:`load_classifier` does)."""
    import torch

    state = torch.random.get_rng_state()  # loading initialises a head: leave the seeds as they were
    try:
        load_classifier(src, labels)
    finally:
        torch.random.set_rng_state(state)


def model_inputs(src: ModelSource) -> tuple[str, ...]:
    """The tokenizer outputs the model's classifier takes, read off its ``forward`` signature.

    ``token_type_ids`` is left out for models with a single token type (pldrop's pretrained
    models, RoBERTa): a second segment's id 1 would be out of range there.
    """
    import inspect

    params = inspect.signature(classifier_class(src.config).forward).parameters
    keep = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in params]
    if getattr(src.config, "type_vocab_size", 2) < 2 and "token_type_ids" in keep:
        keep.remove("token_type_ids")
    return tuple(keep)


def classifier_class(config) -> type:
    """The class ``AutoModelForSequenceClassification`` builds for ``config``.

    >>> from transformers import RobertaPreLayerNormConfig
    >>> classifier_class(RobertaPreLayerNormConfig()).__name__
    'RobertaPreLayerNormForSequenceClassification'
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

    return MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(config)]
