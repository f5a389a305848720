"""Open a trained model folder for inference-time work (``pldrop shrink``, ``pldrop evaluate-depth``).

A folder is either a ``pldrop pretrain`` run folder (its final model, tokenizer, ``config.yaml``
and ``pldrop.json`` at the top) or any Hugging Face model folder (``config.json`` + weights). The
model is loaded with the class its config names (``architectures``), so the head it was saved with
is the head it keeps; every check ends in a one-line :class:`~pldrop.errors.UserError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                   "merges.txt", "added_tokens.json", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model",
                   "chat_template.jinja", "chat_template.json")


@dataclass
class TrainedModel:
    """A loaded model folder.

    Args:
        path: the folder.
        model: the model in eval mode (PLD is never applied: every block runs).
        causal: a causal LM (next-token loss) rather than a masked LM.
        run: the ``pldrop pretrain`` run's ``config.yaml`` as a dict, ``{}`` for other folders.
        pld: the run's ``pldrop.json`` (arm, θ̄, rule, ...), ``{}`` for other folders.
    """

    path: Path
    model: Any
    causal: bool
    run: dict = field(default_factory=dict)
    pld: dict = field(default_factory=dict)

    @property
    def has_tokenizer(self) -> bool:
        return any((self.path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))


def is_pretrain_run(folder: Path) -> bool:
    """A ``pldrop pretrain`` run folder (the files a run's setup writes first)."""
    return (folder / "config.yaml").is_file() and (folder / "pldrop.json").is_file()


def check_model_folder(model: str | Path, flag: str = "--model") -> Path:
    """``model`` as a folder holding a final model, or a one-line UserError saying what is wrong."""
    name = str(model)
    folder = Path(name)
    what = "a pldrop pretrain run folder or a Hugging Face model folder"
    if name.strip() == "":
        raise UserError(f"{flag} is empty; give {what}")
    if not folder.exists():
        raise UserError(f"{flag} {name}: not found (expected {what})")
    if not folder.is_dir():
        raise UserError(f"{flag} {name}: is a file (expected {what})")
    has_weights = any((folder / f).is_file() for f in WEIGHT_FILES)
    if is_pretrain_run(folder) and not (has_weights and (folder / "config.json").is_file()):
        raise UserError(f"{flag} {name}: the run has no final model (no config.json / model.safetensors at its top: "
                        "it did not finish); finish it with `pldrop pretrain --resume`, or give a finished run")
    if not (folder / "config.json").is_file():
        raise UserError(f"{flag} {name}: no config.json in the folder (expected {what})")
    if not has_weights:
        raise UserError(f"{flag} {name}: no weights in the folder (expected {' or '.join(WEIGHT_FILES[::2])})")
    return folder


def _model_class(config, name: str):
    """The class ``config.architectures`` names, else the masked-LM then causal-LM auto class."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES)

    for arch in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, str(arch), None)
        if cls is not None:
            return cls
    kind = getattr(config, "model_type", None)
    if kind in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return AutoModelForMaskedLM
    if kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return AutoModelForCausalLM
    raise UserError(f"{name}: model_type {kind!r} is not a family pldrop can load (its config names no "
                    "architecture and it has no masked-LM or causal-LM class in transformers)")


def is_causal_lm(model) -> bool:
    """Whether ``model`` predicts the next token (its class is a causal-LM class) rather than masked ones."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    name = type(model).__name__
    return name in set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()) or name.endswith(("ForCausalLM", "LMHeadModel"))


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def load_trained(model: str | Path, flag: str = "--model") -> TrainedModel:
    """Check and load a model folder (see the module docstring).

    Raises:
        UserError: no such folder, a run without its final model, no config or weights, an
            unreadable config, a model_type transformers does not know, or weights that do not load.
    """
    import yaml
    from transformers import AutoConfig

    from ..tasks.classifier import _quiet_transformers

    folder = check_model_folder(model, flag)
    try:
        with _quiet_transformers():
            config = AutoConfig.from_pretrained(str(folder))
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
        raise UserError(f"{flag} {model}: cannot read its config ({str(e).splitlines()[0][:200]})") from None
    cls = _model_class(config, f"{flag} {model}")
    try:
        with _quiet_transformers():
            net, info = cls.from_pretrained(str(folder), config=config, output_loading_info=True)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise UserError(f"{flag} {model}: its weights do not load ({type(e).__name__}: "
                        f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else ''})") from None
    missing = [k for k in info.get("missing_keys", []) if "position_ids" not in k]
    if missing:
        raise UserError(f"{flag} {model}: the weights miss {len(missing)} tensors of {cls.__name__} (e.g. "
                        f"{sorted(missing)[0]!r}); the folder's weights do not match its config")
    net.eval()
    run, pld = {}, {}
    # a `pldrop shrink` output knows its source run: its validation split is the source's
    source = Path(str(read_json(folder / "shrink.json").get("source", ""))) if (folder / "shrink.json").is_file() else None
    home = folder if is_pretrain_run(folder) else source if source and is_pretrain_run(source) else None
    if home is not None:
        try:
            run = yaml.safe_load((home / "config.yaml").read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            run = {}
    if is_pretrain_run(folder):  # a shrunk model's blocks no longer line up with the source's keep probabilities
        pld = read_json(folder / "pldrop.json")
    return TrainedModel(path=folder, model=net, causal=is_causal_lm(net), run=run if isinstance(run, dict) else {},
                        pld=pld)


def pld_keep_probs(pld: dict, num_layers: int) -> tuple[list[float], str]:
    """The keep probabilities ``keep-prob`` ranks blocks by, and where they came from.

    A PLD run's recorded rule at θ̄ (``pldrop.json``); any other model: the linear rule at θ̄ = 0.5.

    >>> pld_keep_probs({"enabled": True, "rule": "uniform", "theta_bar": 0.5}, 3)
    ([0.5, 0.5, 0.5], "the run's PLD settings (rule 'uniform', theta_bar 0.5)")
    >>> pld_keep_probs({}, 2)[1]
    'the linear rule at theta_bar 0.5 (not a PLD run)'
    """
    from ..schedule import keep_probs

    rule, theta_bar = pld.get("rule"), pld.get("theta_bar")
    if pld.get("enabled") and rule in ("linear", "uniform") and isinstance(theta_bar, (int, float)) \
            and 0 < theta_bar <= 1:
        return keep_probs(theta_bar, num_layers, rule), f"the run's PLD settings (rule {rule!r}, theta_bar {theta_bar})"
    return keep_probs(0.5, num_layers), "the linear rule at theta_bar 0.5 (not a PLD run)"
