"""The default fine-tuning learning rates: a small grid chosen by the model's width.

BERT (Devlin et al. 2019, appendix A.3; https://arxiv.org/abs/1810.04805) and the PLD paper
(Zhang & He 2020, section 5; https://arxiv.org/abs/2010.13369) fine-tune every task over a small
grid of learning rates and keep the run with the best dev score. BERT's grid, {2e-5, 3e-5, 5e-5}
(its 4e-5 left out), suits BERT-base and wider. Narrower models want larger rates (AdamW's step
is about lr per weight whatever the width, while a wide layer sums more of them); the models
``pldrop pretrain`` makes on a laptop are also briefly pretrained, which pushes the same way.
For them the grid spans 1e-4 … 2e-3: 2e-3 was the best of 5e-5 … 5e-3 for the tiny preset
(2 x H64) on ``movie-polarity`` and ``trec6`` and for narrow (12 x H128) on ``trec6``, and
5e-5 left both at chance (docs/finetune.md has the measured table; mini was not measured). In between, width 512 (the small and medium presets, BERT-small/medium) gets
the upper half of Turc et al.'s grid for the BERT miniatures ({3e-5, 5e-5, 1e-4};
https://arxiv.org/abs/1908.08962) moved up one step, {5e-5, 1e-4, 3e-4}: not measured here.

    hidden <  512   1e-4  5e-4  2e-3   (tiny, narrow, mini; measured on tiny and narrow)
    hidden <  768   5e-5  1e-4  3e-4   (small, medium)
    hidden >= 768   2e-5  3e-5  5e-5   (base, large: BERT's grid)
"""

from __future__ import annotations

GRIDS: tuple[tuple[int, tuple[float, ...]], ...] = (
    (512, (1e-4, 5e-4, 2e-3)),
    (768, (5e-5, 1e-4, 3e-4)),
    (1 << 62, (2e-5, 3e-5, 5e-5)),
)
"""(width below which the grid applies, its rates), narrowest first."""

RULE = ("grid by model width: hidden < 512: 1e-4, 5e-4, 2e-3; 512-767: 5e-5, 1e-4, 3e-4; "
        ">= 768: 2e-5, 3e-5, 5e-5 (BERT); best dev run kept")
"""The rule in one line, as written into ``results.json``."""


def lr_grid(hidden_size: int) -> tuple[float, ...]:
    """The default learning rates for a model of width ``hidden_size`` (see the module docstring).

    >>> lr_grid(64), lr_grid(128), lr_grid(256)
    ((0.0001, 0.0005, 0.002), (0.0001, 0.0005, 0.002), (0.0001, 0.0005, 0.002))
    >>> lr_grid(512)
    (5e-05, 0.0001, 0.0003)
    >>> lr_grid(768), lr_grid(1024)
    ((2e-05, 3e-05, 5e-05), (2e-05, 3e-05, 5e-05))
    """
    for below, rates in GRIDS:
        if hidden_size < below:
            return rates
    raise AssertionError("unreachable")


def model_width(config) -> int | None:
    """The hidden size of an HF config (``hidden_size``, ``d_model``, ``n_embd`` or ``dim``).

    >>> from transformers import BertConfig
    >>> model_width(BertConfig(hidden_size=128))
    128
    """
    for key in ("hidden_size", "d_model", "n_embd", "dim"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def default_lrs(config) -> tuple[float, ...]:
    """:func:`lr_grid` of the model's width; BERT's grid when the config names no width."""
    width = model_width(config)
    return lr_grid(width if width is not None else 768)


def lr_name(lr: float) -> str:
    """A learning rate as it appears in file names and ``results.json`` keys.

    >>> lr_name(5e-4), lr_name(2e-5), lr_name(0.002)
    ('0.0005', '2e-05', '0.002')
    """
    return f"{lr:g}"
