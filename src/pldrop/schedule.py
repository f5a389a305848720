"""The PLD schedules as pure functions: keep-probability in time and in depth.

Zhang & He, "Accelerating Training of Transformer-Based Language Models with Progressive
Layer Dropping", NeurIPS 2020, https://arxiv.org/abs/2010.13369 (Sec. 4, Eq. 4-5).

- in time:  θ(t) = (1 - θ̄)·exp(-γ·t) + θ̄   (θ(0) = 1: every block kept at the start)
- in depth: p_l(t) = 1 - (l/L)·(1 - θ(t)),  l = 1..L   (low blocks are kept more)
"""

from __future__ import annotations

import math

import numpy as np

RULES = ("linear", "uniform")


def check_theta_bar(theta_bar: float) -> float:
    """Return ``theta_bar`` as a float, or raise ``ValueError`` if it is outside (0, 1].

    >>> check_theta_bar(0.5)
    0.5
    >>> check_theta_bar(0.0)
    Traceback (most recent call last):
    ...
    ValueError: theta_bar=0.0 is out of range: it must be in (0, 1]
    """
    theta_bar = float(theta_bar)
    if not (0.0 < theta_bar <= 1.0):  # also rejects NaN
        raise ValueError(f"theta_bar={theta_bar!r} is out of range: it must be in (0, 1]")
    return theta_bar


def check_gamma(gamma: float) -> float:
    """Return ``gamma`` as a float, or raise ``ValueError`` if it is negative or not finite.

    >>> check_gamma(-1)
    Traceback (most recent call last):
    ...
    ValueError: gamma=-1.0 is out of range: it must be a finite number >= 0
    """
    gamma = float(gamma)
    if not (gamma >= 0.0 and math.isfinite(gamma)):
        raise ValueError(f"gamma={gamma!r} is out of range: it must be a finite number >= 0")
    return gamma


def check_num_layers(num_layers: int) -> int:
    """Return ``num_layers`` as an int, or raise ``ValueError`` if it is below 1.

    >>> check_num_layers(0)
    Traceback (most recent call last):
    ...
    ValueError: num_layers=0 is out of range: it must be an integer >= 1
    """
    if isinstance(num_layers, bool) or int(num_layers) != num_layers or num_layers < 1:
        raise ValueError(f"num_layers={num_layers!r} is out of range: it must be an integer >= 1")
    return int(num_layers)


def theta(step: float, theta_bar: float = 0.5, gamma: float = 0.001) -> float:
    """Global keep probability θ(t) = (1 - θ̄)·exp(-γ·t) + θ̄ at optimizer step ``step``.

    Computed in float64 with the same operations, in the same order, as DeepSpeed 0.19's
    ``ProgressiveLayerDrop.update_state``, so the two agree exactly.

    Args:
        step: the global optimizer step t (>= 0).
        theta_bar: θ̄, the value θ decays to, in (0, 1]. DeepSpeed's default is 0.5.
        gamma: γ >= 0, how fast θ decays. The paper's rule of thumb is γ = 100/T for T steps
            (see :func:`gamma_for_steps`); DeepSpeed's default is 0.001.

    >>> theta(0)
    1.0
    >>> round(theta(1000), 6)
    0.68394
    >>> theta(10**9, theta_bar=0.7)
    0.7
    """
    theta_bar, gamma = check_theta_bar(theta_bar), check_gamma(gamma)
    if step < 0:
        raise ValueError(f"step={step!r} is out of range: it must be >= 0")
    return float((1.0 - theta_bar) * np.exp(-gamma * step) + theta_bar)


def keep_probs(theta: float, num_layers: int, rule: str = "linear") -> list[float]:
    """Keep probability of each block; index 0 is the lowest block (nearest the embeddings).

    Args:
        theta: the global keep probability θ(t) in (0, 1].
        num_layers: L, the number of blocks.
        rule: ``"linear"`` is the paper's p_l = 1 - (l/L)(1 - θ), l = 1..L, so the top block is
            kept with probability θ and lower blocks more often; ``"uniform"`` keeps every block
            with probability θ (an ablation).

    >>> keep_probs(0.5, 4)
    [0.875, 0.75, 0.625, 0.5]
    >>> keep_probs(0.5, 2, rule="uniform")
    [0.5, 0.5]
    >>> keep_probs(1.0, 3)
    [1.0, 1.0, 1.0]
    """
    theta = check_theta_bar(theta)  # θ(t) lives in the same range as θ̄
    num_layers = check_num_layers(num_layers)
    if rule == "linear":
        return [1.0 - (l / num_layers) * (1.0 - theta) for l in range(1, num_layers + 1)]
    if rule == "uniform":
        return [theta] * num_layers
    raise ValueError(f"rule={rule!r} is not known: it must be one of {', '.join(RULES)}")


def expected_kept(theta: float, num_layers: int, rule: str = "linear") -> float:
    """Expected number of blocks that run in one training forward.

    For the linear rule this is L - (L+1)/2·(1 - θ): 8.75 of 12 blocks at θ = 0.5.

    >>> expected_kept(0.5, 12)
    8.75
    >>> expected_kept(0.5, 12, rule="uniform")
    6.0
    """
    return float(sum(keep_probs(theta, num_layers, rule)))


def gamma_for_steps(total_steps: int, k: float = 100.0) -> float:
    """The paper's rule of thumb γ = k/T, so θ has (almost) reached θ̄ by the end of T steps.

    >>> gamma_for_steps(100_000)
    0.001
    >>> gamma_for_steps(0)
    Traceback (most recent call last):
    ...
    ValueError: total_steps=0 is out of range: it must be >= 1
    """
    if total_steps < 1:
        raise ValueError(f"total_steps={total_steps!r} is out of range: it must be >= 1")
    return float(k) / float(total_steps)


def mean_theta(total_steps: int, theta_bar: float = 0.5, gamma: float | None = None) -> float:
    """Average θ(t) over steps 0..T-1 (default γ = 100/T): what a whole run keeps on average.

    >>> round(mean_theta(1000, 0.5), 3)
    0.505
    """
    gamma = gamma_for_steps(total_steps) if gamma is None else gamma
    return sum(theta(t, theta_bar, gamma) for t in range(total_steps)) / total_steps
