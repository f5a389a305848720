"""Every arm pldrop trains, as data: one table, one entry per arm.

An arm is what `pldrop compare --arms` and `pldrop pretrain --arm` take: an architecture (the
``model.arm`` the model builder knows), the depth schedule it trains with, its default learning
rates and the name reports and plots give it. Adding a variant is one entry in :data:`TABLE`.

Learning rates: each arm carries the rate of each recipe it has one for, because the recipes
differ and their rates were searched apart:

- ``lr``: the `pldrop compare` recipe (8 blocks x H128, 2,000-token vocabulary, 64-token sequences,
  batch 32, no dropout; benchmarks/defaults-search.md): Post-LN at its tuned 1e-3 (2e-3 stalls on
  the unigram plateau), the Pre-LN arms at a Cramming-style 2e-3;
- ``pretrain_lr``: `pldrop pretrain`'s own default (12 blocks x H128, dropout 0.1): on `wiki-vital`,
  10 minutes, Post-LN reached 7.10 validation loss at 1e-4 and 6.88 at 5e-4 (a unigram model
  scores 7.03), so 5e-4 for Post-LN and 1e-3 for Pre-LN;
- ``paper_lr``: the paper's (``--paper-lrs`` / ``optim.paper_lrs``): 1e-4 for Post-LN BERT, 1e-3 for
  Pre-LN + PLD.

Torch-free and import-free of the rest of pldrop, so ``--help`` stays light and every layer may
read it.

>>> [a.name for a in TABLE][:4], arm_of("pld-cooldown").model
(['baseline', 'preln', 'pld', 'postln-pld'], 'pld')
>>> arm_of("sd-constant").pld, label("pld"), label("pld-uniform")
({'schedule': 'constant'}, 'Pre-LN + PLD', 'pld-uniform')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

POST_LN, PRE_LN = "Post-LN", "Pre-LN"
MODELS = ("baseline", "pld", "preln", "postln-pld", "llama", "llama-pld")  # the model.arm values the model builder knows
DROPPING_MODELS = ("pld", "postln-pld", "llama-pld")  # the model.arm values that drop blocks (PLD gates fitted)
CAUSAL_MODELS = ("llama", "llama-pld")  # the model.arm values that are causal LMs (next-token loss, not masked)


@dataclass(frozen=True)
class Arm:
    """One arm: its name, architecture, depth schedule, default learning rates and label."""

    name: str  # what --arms / --arm take, and the run folder's name in a comparison
    model: str  # model.arm: baseline (Post-LN BERT), preln (Pre-LN), pld (Pre-LN + PLD), postln-pld, llama, llama-pld
    label: str  # the human name in reports and plots
    lr: float  # peak learning rate in the `pldrop compare` recipe
    pretrain_lr: float  # peak learning rate of `pldrop pretrain`'s default recipe
    paper_lr: float  # the paper's rate for this architecture
    pld: dict[str, Any] = field(default_factory=dict)  # pld.* settings the arm fixes (schedule, cooldown, ...)
    help: str = ""  # one phrase for --help

    @property
    def post_ln(self) -> bool:
        return self.model in ("baseline", "postln-pld")

    @property
    def drops(self) -> bool:
        """Whether the arm drops blocks (PLD gates fitted)."""
        return self.model in DROPPING_MODELS

    @property
    def causal(self) -> bool:
        """Whether the arm is a causal LM (next-token loss) rather than a masked LM."""
        return self.model in CAUSAL_MODELS

    @property
    def full_depth(self) -> str:
        """The arm with the same blocks that drops none (``preln`` for Pre-LN arms, ``baseline`` for Post-LN,
        ``llama`` for the decoders)."""
        return "llama" if self.causal else "baseline" if self.post_ln else "preln"


def _post(name, model, label, **kw) -> Arm:
    return Arm(name, model, label, lr=1e-3, pretrain_lr=5e-4, paper_lr=1e-4, **kw)


def _pre(name, model, label, **kw) -> Arm:
    return Arm(name, model, label, lr=2e-3, pretrain_lr=1e-3, paper_lr=1e-3, **kw)


TABLE: tuple[Arm, ...] = (
    _post("baseline", "baseline", "Post-LN BERT", help="Post-LN BertForMaskedLM, the paper's baseline"),
    _pre("preln", "preln", "Pre-LN", help="Pre-LN RobertaPreLayerNorm without PLD"),
    _pre("pld", "pld", "Pre-LN + PLD", help="Pre-LN + PLD, the paper's θ(t) (pld.schedule as configured)"),
    _post("postln-pld", "postln-pld", "Post-LN + PLD", help="Post-LN BERT + PLD"),
    _pre("pld-cooldown", "pld", "Pre-LN + PLD (cooldown)", pld={"schedule": "cooldown"},
         help="Pre-LN + PLD, θ back to 1 over the last pld.cooldown of the run"),
    _pre("sd-constant", "pld", "Pre-LN + SD (constant θ)", pld={"schedule": "constant"},
         help="Pre-LN + stochastic depth at one θ, matched in mean blocks to pld"),
    _pre("pld-anneal", "pld", "Pre-LN + PLD (anneal)", pld={"schedule": "anneal"},
         help="Pre-LN + PLD, drop rate highest early, zero at the end"),
    # decoders (causal LMs, next-token loss): Llama-style blocks, pre-norm (RMSNorm) like the Pre-LN arms
    _pre("llama", "llama", "Llama", help="Llama-style causal LM (RMSNorm, rotary, SwiGLU) without PLD"),
    _pre("llama-pld", "llama-pld", "Llama + PLD", help="Llama-style causal LM + PLD (ST rescale on its pre-norm blocks)"),
    _pre("llama-pld-cooldown", "llama-pld", "Llama + PLD (cooldown)", pld={"schedule": "cooldown"},
         help="Llama + PLD, θ back to 1 over the last pld.cooldown of the run"),
)
BY_NAME: dict[str, Arm] = {a.name: a for a in TABLE}
ARMS: tuple[str, ...] = tuple(BY_NAME)
DEFAULT_COMPARE = ["baseline", "preln", "pld"]


def arm_of(name: str) -> Arm:
    """The table's entry for ``name`` (KeyError if unknown; :func:`check_arms` gives the user's error)."""
    return BY_NAME[name]


def unknown_message(names, what: str = "--arms") -> str | None:
    """One line naming the unknown arms and listing the known ones, or None when all are known.

    >>> unknown_message(["pld", "nope"])
    '--arms: unknown arm nope; known arms: baseline, preln, pld, postln-pld, pld-cooldown, sd-constant, pld-anneal, llama, llama-pld, llama-pld-cooldown'
    """
    bad = [n for n in names if n not in BY_NAME]
    if not bad:
        return None
    return f"{what}: unknown arm{'s' if len(bad) > 1 else ''} {', '.join(bad)}; known arms: {', '.join(ARMS)}"


def label(name: str) -> str:
    """The display name of an arm; a name not in the table (a protocol's own arm) is kept."""
    a = BY_NAME.get(name)
    return a.label if a is not None else name


def labels_for(names) -> dict[str, str]:
    """Display names of arms (``pld`` -> ``Pre-LN + PLD``); unknown names are kept."""
    return {n: label(n) for n in names}


def default_lr(model: str, paper: bool = False, recipe: str = "pretrain") -> float:
    """Peak learning rate of an architecture (``model.arm``) in a recipe: ``pretrain`` (`pldrop
    pretrain`'s default) or ``compare``; ``paper`` the paper's rate.

    >>> default_lr("baseline"), default_lr("baseline", paper=True), default_lr("pld"), default_lr("baseline", recipe="compare")
    (0.0005, 0.0001, 0.001, 0.001)
    """
    a = BY_NAME[model]
    return a.paper_lr if paper else a.lr if recipe == "compare" else a.pretrain_lr


def config_overrides(name: str) -> dict[str, Any]:
    """The config keys an arm sets: ``model.arm`` and its fixed ``pld.*`` settings.

    >>> config_overrides("pld-cooldown")
    {'model.arm': 'pld', 'pld.schedule': 'cooldown'}
    """
    a = BY_NAME[name]
    return {"model.arm": a.model, **{f"pld.{k}": v for k, v in a.pld.items()}}


def full_depth_of(name: str, preln: str = "preln", pld: str = "pld") -> str | None:
    """The arm without dropping built from the same blocks as ``name``, for an arm that drops blocks;
    None otherwise. Names outside the table (a protocol's ``pld-uniform``) follow their prefix:
    ``pld-…`` is a PLD variant, compared with ``preln``.

    >>> full_depth_of("pld"), full_depth_of("sd-constant"), full_depth_of("postln-pld"), full_depth_of("preln")
    ('preln', 'preln', 'baseline', None)
    >>> full_depth_of("pld-uniform"), full_depth_of("postln-tuned")
    ('preln', None)
    """
    a = BY_NAME.get(name)
    if a is not None and name != pld:
        return (preln if a.full_depth == "preln" else a.full_depth) if a.drops else None
    return preln if name == pld or name.startswith(pld + "-") else None


def mixed_objectives(names) -> str | None:
    """One line refusing a comparison of masked-LM arms with causal-LM arms, or None when they share one.

    >>> mixed_objectives(["llama", "llama-pld"]) is None
    True
    >>> mixed_objectives(["preln", "llama"])
    '--arms preln llama: preln trains a masked LM and llama a causal LM; their losses are not comparable -- compare masked-LM arms or causal-LM arms, not both'
    """
    known = [n for n in names if n in BY_NAME]
    mlm = [n for n in known if not BY_NAME[n].causal]
    causal = [n for n in known if BY_NAME[n].causal]
    if not mlm or not causal:
        return None
    return (f"--arms {' '.join(names)}: {', '.join(mlm)} train{'s' if len(mlm) == 1 else ''} a masked LM and "
            f"{', '.join(causal)} a causal LM; their losses are not comparable -- compare masked-LM arms or "
            "causal-LM arms, not both")


def dropping(name: str, pld: str = "pld") -> bool:
    """Whether an arm drops blocks: the table says; a name outside it by its prefix (``pld-…``)."""
    a = BY_NAME.get(name)
    return a.drops if a is not None else name == pld or name.startswith(pld + "-")
