"""Pretraining configuration: typed dataclasses, YAML files and ``key=value`` overrides.

Every field has a docstring-comment and a check in ``__post_init__``; unknown or mistyped keys
are errors (with a suggestion), and the resolved config is written to the run folder.

    pldrop pretrain --config my.yaml optim.lr=5e-4 pld.theta_bar=0.7 budget.max_minutes=3
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..arms import CAUSAL_MODELS, DROPPING_MODELS
from ..arms import MODELS as ARMS
from ..arms import default_lr as _arm_lr
from ..errors import UserError
from ..presets import PRESETS
from ..schedule import DEFAULT_COOLDOWN, SCHEDULES


def _check(ok: bool, key: str, value: Any, accepted: str) -> None:
    if not ok:
        raise UserError(f"{key}={value!r} is out of range: {accepted}")


def _finite(value: Any) -> bool:
    """A real number that is neither NaN nor infinite (comparisons alone let ``inf`` through).

    >>> _finite(1e-3), _finite(float("inf")), _finite(float("nan")), _finite(None)
    (True, False, False, False)
    """
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


MAX_SEQ_LEN = 65_536  # position embeddings grow with seq_len; beyond this a typo, not a plan
SEED_LIMIT = 2**63  # torch.manual_seed and the hash salts take seeds below this


@dataclass
class DataConfig:
    corpus: list[str] = field(default_factory=lambda: ["wiki-vital"])  # recipe names, files, folders, globs, hf:NAME
    text_field: str = "text"  # text field of .json/.jsonl files and hf: datasets
    text_column: str = "text"  # text column of .csv/.tsv files
    tokenizer: str | None = None  # a saved tokenizer folder; None trains a WordPiece one
    vocab_size: int = 8000  # vocabulary when training a tokenizer (WordPiece; byte-level BPE for causal arms: >= 258)
    lowercase: bool = True  # uncased WordPiece (a causal arm's byte-level BPE is always cased)
    seq_len: int = 128  # tokens per packed sequence, [CLS] and [SEP] included
    val_fraction: float = 0.05  # share of documents held out (seeded hash split)
    val_max_seqs: int = 256  # validation sequences evaluated (fixed masks); 0 = all
    mlm_prob: float = 0.15  # share of tokens selected for MLM (80 % [MASK], 10 % random, 10 % kept)
    cache_dir: str | None = None  # pldrop cache (default $PLDROP_CACHE or ~/.cache/pldrop)

    def __post_init__(self):
        if isinstance(self.corpus, str):
            self.corpus = [self.corpus]
        _check(len(self.corpus) > 0, "data.corpus", self.corpus, "give at least one corpus")
        for src in self.corpus:
            _check(isinstance(src, str) and src.strip() != "", "data.corpus", src,
                   "an empty corpus name; give a recipe, a file, a folder, a glob or hf:NAME")
        _check(self.vocab_size >= 100, "data.vocab_size", self.vocab_size, "must be >= 100")
        _check(8 <= self.seq_len <= MAX_SEQ_LEN, "data.seq_len", self.seq_len, f"must be in [8, {MAX_SEQ_LEN}]")
        _check(0 < self.val_fraction < 1, "data.val_fraction", self.val_fraction, "must be in (0, 1)")
        _check(self.val_max_seqs >= 0, "data.val_max_seqs", self.val_max_seqs, "must be >= 0")
        _check(0 < self.mlm_prob < 1, "data.mlm_prob", self.mlm_prob, "must be in (0, 1)")
        if self.cache_dir is not None:
            _check(str(self.cache_dir).strip() != "", "data.cache_dir", self.cache_dir, "give a folder")
            cache = Path(self.cache_dir).expanduser()
            _check(not cache.exists() or cache.is_dir(), "--cache-dir", self.cache_dir,
                   "it is a file; give a folder (created if missing)")


@dataclass
class ModelConfig:
    arm: str = "pld"  # baseline = Post-LN BERT; pld = Pre-LN + PLD; preln = Pre-LN alone; postln-pld
    preset: str = "narrow"  # tiny | narrow (L12 H128) | mini | small | medium | base (L12 H768)
    config_file: str | None = None  # an HF config.json instead of a preset
    dropout: float = 0.1  # hidden and attention dropout
    compile: bool = False  # torch.compile each block's forward (regional: no recompiles when kept blocks change)

    def __post_init__(self):
        _check(self.arm in ARMS, "model.arm", self.arm, f"use one of {', '.join(ARMS)}")
        _check(self.preset in PRESETS, "model.preset", self.preset, f"use one of {', '.join(PRESETS)}")
        _check(0 <= self.dropout < 1, "model.dropout", self.dropout, "must be in [0, 1)")
        if self.config_file is not None:
            from ..models import read_config_file

            read_config_file(self.config_file)  # a readable JSON object with a known model type

    @property
    def uses_pld(self) -> bool:
        return self.arm in DROPPING_MODELS

    @property
    def causal(self) -> bool:
        """A causal LM (next-token loss on unmasked text) rather than a masked LM."""
        return self.arm in CAUSAL_MODELS


@dataclass
class OptimConfig:
    lr: float | None = None  # peak learning rate; None = the arm's default (see default_lr)
    paper_lrs: bool = False  # the paper's rates: 1e-4 for Post-LN, 1e-3 for Pre-LN (+PLD)
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-6
    schedule: str = "linear"  # linear: warm-up then linear decay; exp: warm-up then exponential decay (the paper); constant
    warmup_ratio: float = 0.06  # warm-up as a share of the horizon in steps; under a time budget, a share of the budget
    exp_decay_rate: float = 0.99  # exp schedule: lr multiplied by this every exp_decay_every steps
    exp_decay_every: int = 10
    clip_grad: float = 1.0  # max gradient norm; 0 = no clipping
    grad_accum: int = 1  # micro-batches per optimizer step
    batch_size: int = 32  # sequences per micro-batch (per process)
    precision: str = "auto"  # fp32 | bf16 (autocast) | auto: bf16 where the hardware runs it natively and it is measured faster at this width
    bf16: bool | None = None  # deprecated alias: true = precision bf16

    def __post_init__(self):
        if self.lr is not None:
            _check(0 < self.lr < 1, "optim.lr", self.lr, "must be in (0, 1)")
        _check(0 <= self.beta1 < 1, "optim.beta1", self.beta1, "must be in [0, 1)")
        _check(0 <= self.beta2 < 1, "optim.beta2", self.beta2, "must be in [0, 1)")
        _check(_finite(self.eps) and self.eps > 0, "optim.eps", self.eps, "must be a finite number > 0")
        _check(self.schedule in ("linear", "exp", "constant"), "optim.schedule", self.schedule,
               "use linear, exp or constant")
        _check(0 <= self.warmup_ratio < 1, "optim.warmup_ratio", self.warmup_ratio, "must be in [0, 1)")
        _check(0 < self.exp_decay_rate <= 1, "optim.exp_decay_rate", self.exp_decay_rate, "must be in (0, 1]")
        _check(self.exp_decay_every >= 1, "optim.exp_decay_every", self.exp_decay_every, "must be >= 1")
        _check(_finite(self.clip_grad) and self.clip_grad >= 0, "optim.clip_grad", self.clip_grad,
               "must be a finite number >= 0 (0 = no clipping)")
        _check(self.grad_accum >= 1, "optim.grad_accum", self.grad_accum, "must be >= 1")
        _check(self.batch_size >= 1, "optim.batch_size", self.batch_size, "must be >= 1")
        if self.bf16 is not None:
            self.precision = "bf16" if self.bf16 else "fp32"
            self.bf16 = None
        _check(self.precision in ("fp32", "bf16", "auto"), "optim.precision", self.precision, "use fp32, bf16 or auto")
        _check(_finite(self.weight_decay) and self.weight_decay >= 0, "optim.weight_decay", self.weight_decay,
               "must be a finite number >= 0")


@dataclass
class PLDConfig:
    theta_bar: float = 0.5  # θ̄: the keep probability θ(t) decays to
    gamma: float | None = None  # γ; None = the paper's 100/T for a horizon of T steps
    rule: str = "linear"  # linear (paper: low blocks kept more) or uniform
    fixed: bool = False  # hold θ at θ̄ from step 0 (ablation: no progressive schedule)
    rescale: bool = True  # divide kept blocks' branches by their keep probability
    schedule: str = "pld"  # depth schedule: pld (θ(t), the paper) | cooldown (θ(t), then back to 1) | constant (matched mean) | anneal (drop rate to 0)
    cooldown: float = DEFAULT_COOLDOWN  # cooldown: the last fraction of the run over which θ ramps back to 1 (provisional default)

    def __post_init__(self):
        _check(0 < self.theta_bar <= 1, "pld.theta_bar", self.theta_bar, "must be in (0, 1]")
        if self.schedule not in SCHEDULES:
            raise UserError(f"pld.schedule={self.schedule!r} is not a depth schedule: use one of {', '.join(SCHEDULES)}")
        _check(_finite(self.cooldown) and 0 < self.cooldown < 1, "pld.cooldown", self.cooldown,
               "must be a fraction of the run in (0, 1)")
        _check(not (self.fixed and self.schedule != "pld"), "pld.fixed", self.fixed,
               f"pld.fixed holds θ at θ̄ and cannot follow pld.schedule={self.schedule}; use one of the two")
        if self.gamma is not None:
            _check(self.gamma >= 0 and math.isfinite(self.gamma), "pld.gamma", self.gamma, "must be >= 0")
        _check(self.rule in ("linear", "uniform"), "pld.rule", self.rule, "use linear or uniform")


@dataclass
class BudgetConfig:
    max_steps: int | None = None  # optimizer steps
    max_samples: int | None = None  # training sequences
    max_minutes: float | None = None  # wall-clock minutes of training (evaluation not counted)
    horizon_steps: int | None = None  # steps the lr schedule and γ assume; None = derived from the budget

    def __post_init__(self):
        set_ = [k for k in ("max_steps", "max_samples", "max_minutes") if getattr(self, k) is not None]
        _check(len(set_) <= 1, "budget", set_, "give only one of max_steps, max_samples, max_minutes")
        for k in set_:
            _check(_finite(getattr(self, k)) and getattr(self, k) > 0, f"budget.{k}", getattr(self, k),
                   "must be a finite number > 0")
        if self.horizon_steps is not None:
            _check(self.horizon_steps >= 1, "budget.horizon_steps", self.horizon_steps, "must be >= 1")
        if not set_:
            self.max_steps = 200


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    pld: PLDConfig = field(default_factory=PLDConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    eval_every: int | None = None  # validate every N optimizer steps (and at the end); None = ~10 times a run (EVAL_POINTS)
    save_every: int = 100  # checkpoint every N optimizer steps (and at the end); 0 = only at the end
    log_every: int = 1  # write metrics every N steps
    seed: int = 0  # seeds the split, initialisation, data order, masks and PLD gates
    threads: int | None = None  # torch CPU threads (default: torch's choice)
    deepspeed: str | None = None  # a DeepSpeed config JSON: train under the DeepSpeed engine (ZeRO 0/1/2)
    fsdp: bool = False  # under torchrun: shard with FSDP2 (fully_shard per block); skipped blocks cost no collectives

    def __post_init__(self):
        _check(self.eval_every is None or self.eval_every >= 1, "eval_every", self.eval_every, "must be >= 1")
        _check(self.save_every >= 0, "save_every", self.save_every, "must be >= 0")
        _check(self.log_every >= 1, "log_every", self.log_every, "must be >= 1")
        _check(not (self.fsdp and self.deepspeed), "fsdp", self.fsdp, "--fsdp and --deepspeed exclude each other")
        if self.deepspeed is not None and not Path(self.deepspeed).is_file():
            raise UserError(f"--deepspeed {self.deepspeed!r}: no such file")
        _check(0 <= self.seed < SEED_LIMIT, "seed", self.seed, f"must be in [0, 2**63) = [0, {SEED_LIMIT})")
        if self.threads is not None:
            _check(self.threads >= 1, "threads", self.threads, "must be >= 1 (leave it unset for torch's choice)")
        b = self.budget
        _check(not (self.pld.gamma is not None and self.pld.schedule != "pld" and b.max_minutes is not None
                    and b.horizon_steps is None), "pld.gamma", self.pld.gamma,
               f"γ is per step, but pld.schedule={self.pld.schedule} under a time budget follows the fraction of the "
               "budget used; leave pld.gamma unset (100 per budget, the paper's rule) or set budget.horizon_steps")
        if self.model.config_file is not None:
            from ..models import check_config_file

            check_config_file(self.model.config_file, self.data.seq_len, self.model.arm)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def default_lr(arm: str, paper: bool = False) -> float:
    """Peak learning rate of `pldrop pretrain` by architecture (``model.arm``), from the arms table
    (:mod:`pldrop.arms`, which says how each rate was chosen); ``paper``: the paper's rates.

    >>> default_lr("baseline"), default_lr("baseline", paper=True), default_lr("pld")
    (0.0005, 0.0001, 0.001)
    """
    return _arm_lr(arm, paper)


# --- loading: dicts, YAML and key=value overrides -------------------------------------------


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(key: str, value: Any, tp: Any) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if value is None:
        if type(None) in args:
            return None
        raise UserError(f"{key}=None is not allowed: a value is required")
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner[0])
    if origin is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise UserError(f"{key}={value!r} must be a list")
        return [_coerce(key, v, args[0]) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{key}={value!r} must be true or false")
    if tp is int:
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or (isinstance(value, float) and not math.isfinite(value)) or int(value) != value):
            raise UserError(f"{key}={value!r} must be an integer")
        return int(value)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{key}={value!r} must be a number")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise UserError(f"{key}={value!r} must be a string")
        return str(value)
    return value


def _unknown(key: str, accepted: list[str]) -> UserError:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], accepted, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return UserError(f"unknown config key {key!r}{hint}; accepted here: {', '.join(accepted)}")


def _build(cls, data: dict[str, Any], prefix: str = ""):
    if not isinstance(data, dict):
        raise UserError(f"config section {prefix.rstrip('.') or '(top level)'} must be a mapping, got {data!r}")
    types = _field_types(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in types:
            raise _unknown(prefix + key, list(types))
        tp = types[key]
        if dataclasses.is_dataclass(tp):  # a section: a mapping, or empty (`optim:` alone)
            kwargs[key] = _build(tp, {} if value is None else value, prefix + key + ".")
        else:
            kwargs[key] = _coerce(prefix + key, value, tp)
    try:
        return cls(**kwargs)
    except TypeError as e:  # pragma: no cover - guarded by the checks above
        raise UserError(f"bad config: {e}") from None


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"optim.lr=1e-3"`` -> (["optim", "lr"], 0.001), values parsed as YAML scalars.

    >>> parse_override("pld.theta_bar=0.7")
    (['pld', 'theta_bar'], 0.7)
    >>> parse_override("data.corpus=[a.txt, b.txt]")
    (['data', 'corpus'], ['a.txt', 'b.txt'])
    """
    if "=" not in item:
        raise UserError(f"override {item!r} is not of the form key=value (e.g. optim.lr=5e-4)")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and value.lower() in ("none", "null"):
        value = None
    # YAML reads 1e-3 as a string (no dot); accept it as a number
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in ".eE") else value
        except ValueError:
            pass
    return key.strip().split("."), value


def merge(base: dict[str, Any], path: list[str], value: Any) -> None:
    node = base
    for k in path[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise UserError(f"cannot set {'.'.join(path)}: {k} is not a section")
    node[path[-1]] = value


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


_BUDGET_KINDS = ("max_steps", "max_samples", "max_minutes")


def _with_layer(data: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    """Merge ``layer`` over ``data``; a budget kind set by ``layer`` replaces ``data``'s budget kind."""
    budget = layer.get("budget")
    if isinstance(budget, dict) and any(budget.get(k) is not None for k in _BUDGET_KINDS):
        if isinstance(data.get("budget"), dict):
            data = {**data, "budget": {k: v for k, v in data["budget"].items() if k not in _BUDGET_KINDS}}
    return _deep_merge(data, layer)


def load_config(file: str | Path | None = None, overrides: list[str] = (), base: dict[str, Any] | None = None,
                defaults: dict[str, Any] | None = None, **flat: Any) -> TrainConfig:
    """Resolve a :class:`TrainConfig` from defaults, a YAML file, flags and ``key=value`` items.

    Later sources win: ``defaults`` (a command's own defaults), ``base`` (e.g. a resumed run's
    saved config), the file, then ``flat`` (command-line flags as dotted keys, None = unset), then
    ``overrides``. A budget kind (steps, samples, minutes) set by a later source replaces the
    earlier one.
    """
    file_data: dict[str, Any] = {}
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise UserError(f"config file {str(path)!r} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise UserError(f"config file {str(path)!r} is not valid YAML: {str(e).splitlines()[0]}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise UserError(f"config file {str(path)!r} must hold a mapping of keys to values")
        file_data = loaded or {}
    explicit: dict[str, Any] = {}
    for key, value in flat.items():
        if value is not None:
            merge(explicit, key.split("."), value)
    for item in overrides:
        merge(explicit, *parse_override(item))
    data: dict[str, Any] = {}
    for layer in (defaults or {}, base or {}, file_data, explicit):
        data = _with_layer(data, layer)
    return _build(TrainConfig, data)


def dump_config(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
