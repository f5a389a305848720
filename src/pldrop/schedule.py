"""The PLD schedules as pure functions: keep-probability in time and in depth.

Zhang & He, "Accelerating Training of Transformer-Based Language Models with Progressive
Layer Dropping", NeurIPS 2020, https://arxiv.org/abs/2010.13369 (Sec. 4, Eq. 4-5).

- in time:  θ(t) = (1 - θ̄)·exp(-γ·t) + θ̄   (θ(0) = 1: every block kept at the start)
- in depth: p_l(t) = 1 - (l/L)·(1 - θ(t)),  l = 1..L   (low blocks are kept more)

Depth schedules (``schedule=``, one of :data:`SCHEDULES`) say how θ moves over a run:

- ``pld``: the paper's θ(t) above (the default; bit-for-bit DeepSpeed's, never rising);
- ``cooldown``: θ(t), then a straight line back to θ = 1 over the last fraction ``cooldown`` of the run,
  so the final steps train the full model (RaPTr, arXiv 2402.05913, also ends at full depth);
- ``constant``: one θ from the first step to the last (stochastic depth), the mean of ``pld``'s θ over the
  same run, so both run the same blocks per step on average;
- ``anneal``: the drop rate 1 - θ is highest at the start, 1 - θ̄, and falls linearly to 0 at the end
  ("early dropout", Liu et al., ICML 2023).

A run's position is measured on one of two clocks: optimizer steps (:func:`theta_at_step`: step t of T,
the first step at progress 0 and the last at progress 1) or, under a time budget, the fraction of the
budget used (:func:`theta_at_fraction`). Every schedule but ``pld`` needs the run's length on the step
clock. The expected kept blocks is affine in θ for both depth rules, so a schedule's mean blocks per step
is :func:`expected_kept` of its mean θ (:func:`mean_theta`, :func:`mean_expected_kept`).
"""

from __future__ import annotations

import math

import numpy as np

RULES = ("linear", "uniform")
SCHEDULES = ("pld", "cooldown", "constant", "anneal")
NEEDS_LENGTH = ("cooldown", "constant", "anneal")  # schedules that need the run's length
# Provisional: the share of the run spent ramping back to full depth, pending the screening measurement
# of issue 24 (which will choose the shape and the fraction).
DEFAULT_COOLDOWN = 0.2
PAPER_K = 100.0  # the paper's rule of thumb γ·T = 100: θ has reached θ̄ (to e^-100) by the end of the run


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
    return _positive_int("num_layers", num_layers)


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name}={value!r} is out of range: it must be an integer >= 1")
    return int(value)


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


def gamma_for_steps(total_steps: int, k: float = PAPER_K) -> float:
    """The paper's rule of thumb γ = k/T for a run of T steps (k = 100 by default).

    θ(t) - θ̄ shrinks as exp(-k·t/T): with k = 100 it is down to e^-1 ≈ 37 % of its start after
    1 % of the run and under 1 % after 5 % (e^-5 ≈ 0.7 %), so θ sits at θ̄ for the last ~95 % of
    the steps -- the decay is early, not spread over the run. A smaller k spreads it (k = 5:
    within 1 % of θ̄ only at the end).

    >>> T = 100_000
    >>> gamma_for_steps(T)
    0.001
    >>> round(theta(T // 100, 0.5, gamma_for_steps(T)), 3), round(theta(T // 20, 0.5, gamma_for_steps(T)), 4)
    (0.684, 0.5034)
    >>> gamma_for_steps(0)
    Traceback (most recent call last):
    ...
    ValueError: total_steps=0 is out of range: it must be >= 1
    """
    if total_steps < 1:
        raise ValueError(f"total_steps={total_steps!r} is out of range: it must be >= 1")
    return float(k) / float(total_steps)


def check_schedule(schedule: str) -> str:
    """Return ``schedule``, or raise ``ValueError`` if it names no depth schedule.

    >>> check_schedule("cooldown")
    'cooldown'
    >>> check_schedule("cosine")
    Traceback (most recent call last):
    ...
    ValueError: schedule='cosine' is not known: it must be one of pld, cooldown, constant, anneal
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule={schedule!r} is not known: it must be one of {', '.join(SCHEDULES)}")
    return schedule


def check_cooldown(cooldown: float) -> float:
    """Return ``cooldown`` as a float, or raise ``ValueError`` if it is outside (0, 1).

    >>> check_cooldown(0.2)
    0.2
    >>> check_cooldown(1)
    Traceback (most recent call last):
    ...
    ValueError: cooldown=1.0 is out of range: it must be a fraction of the run in (0, 1)
    """
    cooldown = float(cooldown)
    if not (0.0 < cooldown < 1.0):  # also rejects NaN
        raise ValueError(f"cooldown={cooldown!r} is out of range: it must be a fraction of the run in (0, 1)")
    return cooldown


def check_total_steps(total_steps: int) -> int:
    """Return ``total_steps`` as an int, or raise ``ValueError`` if it is below 1.

    >>> check_total_steps(0)
    Traceback (most recent call last):
    ...
    ValueError: total_steps=0 is out of range: it must be an integer >= 1
    """
    return _positive_int("total_steps", total_steps)


def progress(step: float, total_steps: int) -> float:
    """Where optimizer step ``step`` lies in a run of ``total_steps`` steps: 0 at the first, 1 at the last.

    Steps past the end (a run resumed with a shorter horizon) count as the end.

    >>> [progress(t, 5) for t in range(5)]
    [0.0, 0.25, 0.5, 0.75, 1.0]
    >>> progress(0, 1), progress(9, 5)
    (1.0, 1.0)
    """
    total_steps = check_total_steps(total_steps)
    if total_steps == 1:  # the only step is also the last
        return 1.0
    return min(1.0, max(0.0, step / (total_steps - 1)))


def cooldown_theta(theta_now: float, theta_start: float, progress: float,
                   cooldown: float = DEFAULT_COOLDOWN) -> float:
    """``cooldown``: θ unchanged before the last fraction ``cooldown`` of the run, then a straight line
    from ``theta_start`` (θ where the cooldown starts) to exactly 1 at progress 1.

    The line is a first choice; its shape and the default fraction are provisional, to be chosen by
    the screening measurement of issue 24.

    Args:
        theta_now: the ``pld`` θ at this point of the run (used before the cooldown).
        theta_start: the ``pld`` θ at progress 1 - ``cooldown``.
        progress: the position in the run, 0 at the first step and 1 at the last.
        cooldown: the fraction of the run spent going back to full depth, in (0, 1).

    >>> cooldown_theta(0.5, 0.5, 0.7), cooldown_theta(0.5, 0.5, 0.9), cooldown_theta(0.5, 0.5, 1.0)
    (0.5, 0.75, 1.0)
    """
    cooldown = check_cooldown(cooldown)
    if progress < 1.0 - cooldown:
        return float(theta_now)
    # 1 - θ falls linearly from 1 - θ_start to 0; written this way θ is exactly 1 at progress 1
    return 1.0 - (1.0 - theta_start) * min(1.0, (1.0 - progress) / cooldown)


def anneal_theta(progress: float, theta_bar: float = 0.5) -> float:
    """``anneal``: the drop rate falls linearly from 1 - θ̄ at the first step to 0 at the last,
    1 - θ = (1 - θ̄)·(1 - progress) ("early dropout": drop early, train the full model late).

    >>> anneal_theta(0.0), anneal_theta(0.5), anneal_theta(1.0)
    (0.5, 0.75, 1.0)
    """
    theta_bar = check_theta_bar(theta_bar)
    return 1.0 - (1.0 - theta_bar) * (1.0 - min(1.0, max(0.0, progress)))


def constant_theta(total_steps: int | None, theta_bar: float = 0.5, gamma: float | None = None) -> float:
    """``constant``: the θ that runs as many blocks per step, on average, as ``pld`` over the same run.

    The expected kept blocks is affine in θ for both depth rules (L - (L+1)/2·(1 - θ) linear,
    L·θ uniform), so matching the mean kept blocks means matching the mean θ: the mean of
    θ(t) = (1 - θ̄)·exp(-γ·t) + θ̄ over the steps t = 0..T-1 (default γ = 100/T), in closed form.
    ``total_steps=None`` is a run measured as a fraction f of a time budget: the mean of
    (1 - θ̄)·exp(-γ·f) + θ̄ over f in [0, 1], with γ per budget (default 100, the paper's rule).

    >>> round(constant_theta(1000), 6), round(mean_theta(1000), 6)
    (0.505254, 0.505254)
    >>> round(constant_theta(None), 6), constant_theta(4, gamma=0.0)
    (0.505, 1.0)
    >>> round(expected_kept(constant_theta(10), 12), 12) == round(mean_expected_kept("pld", 10, 12), 12)
    True
    """
    theta_bar = check_theta_bar(theta_bar)
    if total_steps is None:
        gamma = PAPER_K if gamma is None else check_gamma(gamma)
        share = 1.0 if gamma == 0 else -math.expm1(-gamma) / gamma  # mean of exp(-γf) over [0, 1]
    else:
        total_steps = check_total_steps(total_steps)
        gamma = gamma_for_steps(total_steps) if gamma is None else check_gamma(gamma)
        # mean of exp(-γt) over t = 0..T-1: a geometric sum
        share = 1.0 if gamma == 0 else math.expm1(-gamma * total_steps) / math.expm1(-gamma) / total_steps
    return min(1.0, theta_bar + (1.0 - theta_bar) * share)


def theta_at_step(schedule: str, step: float, total_steps: int | None = None, theta_bar: float = 0.5,
                  gamma: float | None = None, cooldown: float = DEFAULT_COOLDOWN) -> float:
    """θ of optimizer step ``step`` under a depth schedule, for a run of ``total_steps`` steps.

    ``pld`` is :func:`theta` itself (bit-identical); the others need ``total_steps`` and put the
    first step at progress 0 and the last, ``total_steps - 1``, at progress 1.

    Args:
        schedule: one of :data:`SCHEDULES`.
        step: the global optimizer step t (>= 0).
        total_steps: the run's length T in optimizer steps (not needed by ``pld``).
        theta_bar: θ̄ in (0, 1].
        gamma: γ of the paper's θ(t) (``pld``, ``cooldown``, ``constant``); default 100/T
            (DeepSpeed's 0.001 for ``pld`` without ``total_steps``).
        cooldown: ``cooldown``'s fraction of the run, in (0, 1).

    >>> T = 11
    >>> [round(theta_at_step(s, T - 1, T), 4) for s in SCHEDULES]
    [0.5, 1.0, 0.5455, 1.0]
    >>> theta_at_step("pld", 1000, gamma=0.001) == theta(1000, 0.5, 0.001)
    True
    >>> theta_at_step("anneal", 3)
    Traceback (most recent call last):
    ...
    ValueError: schedule='anneal' needs the run's length: give total_steps (the run's optimizer steps)
    """
    check_schedule(schedule)
    if schedule == "pld":
        if gamma is None:  # the paper's 100/T, or DeepSpeed's default where the length is not known
            gamma = 0.001 if total_steps is None else gamma_for_steps(total_steps)
        return theta(step, theta_bar, gamma)
    if total_steps is None:
        raise ValueError(f"schedule={schedule!r} needs the run's length: give total_steps (the run's optimizer steps)")
    total_steps = check_total_steps(total_steps)
    gamma = gamma_for_steps(total_steps) if gamma is None else gamma
    p = progress(step, total_steps)
    if schedule == "anneal":
        return anneal_theta(p, theta_bar)
    if schedule == "constant":
        return constant_theta(total_steps, theta_bar, gamma)
    start = (1.0 - check_cooldown(cooldown)) * (total_steps - 1)  # the step (maybe fractional) where it starts
    return cooldown_theta(theta(step, theta_bar, gamma), theta(start, theta_bar, gamma), p, cooldown)


def theta_at_fraction(schedule: str, fraction: float, theta_bar: float = 0.5, gamma: float = PAPER_K,
                      cooldown: float = DEFAULT_COOLDOWN) -> float:
    """θ when the fraction ``fraction`` of a time budget has been used (training time / budget).

    The same schedules as :func:`theta_at_step` with progress = ``fraction`` (clamped to [0, 1]) and
    ``pld``'s θ = (1 - θ̄)·exp(-γ·fraction) + θ̄, where γ is per budget: 100 is the paper's γ = 100/T.
    The last step of a time budget starts just before the budget is used up, so ``cooldown`` and
    ``anneal`` end within one step's share of the budget of θ = 1.

    >>> [round(theta_at_fraction(s, 0.9), 4) for s in SCHEDULES]
    [0.5, 0.75, 0.505, 0.95]
    >>> theta_at_fraction("pld", 0.01) == theta(0.01, 0.5, 100.0)
    True
    """
    check_schedule(schedule)
    f = min(1.0, max(0.0, float(fraction)))
    if schedule == "pld":
        return theta(f, theta_bar, gamma)
    if schedule == "anneal":
        return anneal_theta(f, theta_bar)
    if schedule == "constant":
        return constant_theta(None, theta_bar, gamma)
    return cooldown_theta(theta(f, theta_bar, gamma), theta(1.0 - check_cooldown(cooldown), theta_bar, gamma),
                          f, cooldown)


def mean_theta(total_steps: int, theta_bar: float = 0.5, gamma: float | None = None, schedule: str = "pld",
               cooldown: float = DEFAULT_COOLDOWN) -> float:
    """Average θ over steps 0..T-1 (default γ = 100/T): what a whole run keeps on average.

    >>> round(mean_theta(1000, 0.5), 3)
    0.505
    >>> [round(mean_theta(1000, 0.5, schedule=s), 3) for s in SCHEDULES]
    [0.505, 0.555, 0.505, 0.75]
    """
    gamma = gamma_for_steps(total_steps) if gamma is None else gamma
    if schedule == "pld":  # the sum as it always was (bit-identical)
        return sum(theta(t, theta_bar, gamma) for t in range(total_steps)) / total_steps
    return sum(theta_at_step(schedule, t, total_steps, theta_bar, gamma, cooldown)
               for t in range(total_steps)) / total_steps


def mean_expected_kept(schedule: str, total_steps: int, num_layers: int, theta_bar: float = 0.5,
                       gamma: float | None = None, cooldown: float = DEFAULT_COOLDOWN, rule: str = "linear") -> float:
    """Mean expected blocks run per training forward over a run of T steps under a depth schedule:
    what FLOPs and the bound on time saved (1 - mean / L) follow.

    >>> round(mean_expected_kept("pld", 1000, 12), 3), round(mean_expected_kept("anneal", 1000, 12), 3)
    (8.784, 10.375)
    """
    return expected_kept(mean_theta(total_steps, theta_bar, gamma, schedule, cooldown), num_layers, rule)
