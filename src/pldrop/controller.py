"""ProgressiveLayerDrop: the stateful controller that owns θ(t) and draws the gates.

Gates are not drawn from torch's RNG. Each gate is a pure function of
(seed, global step, micro-step, block index) -- a counter-based generator -- so

- every data-parallel rank draws the same gates with no communication (the slowest rank sets
  the step time, so ranks that skipped different blocks would lose most of the saving);
- a resumed run draws exactly the gates the uninterrupted run would have drawn;
- turning PLD on does not change the dropout masks or data order of the rest of training.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

from .schedule import (DEFAULT_COOLDOWN, NEEDS_LENGTH, RULES, check_cooldown, check_gamma, check_num_layers,
                       check_schedule, check_theta_bar, check_total_steps, keep_probs, theta_at_fraction,
                       theta_at_step)

_M64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def gate_uniform(seed: int, step: int, micro_step: int, block: int) -> float:
    """A uniform number in [0, 1) that depends only on its four integer arguments.

    >>> gate_uniform(0, 10, 0, 3) == gate_uniform(0, 10, 0, 3)
    True
    >>> gate_uniform(0, 10, 0, 3) != gate_uniform(0, 10, 1, 3)
    True
    >>> 0.0 <= gate_uniform(1, 2, 3, 4) < 1.0
    True
    """
    h = _splitmix64(seed & _M64)
    for v in (step, micro_step, block):
        h = _splitmix64(h ^ (v & _M64))
    return (h >> 11) * (1.0 / (1 << 53))  # top 53 bits -> a float64 in [0, 1)


def draw_gates(probs: Sequence[float], seed: int, step: int, micro_step: int) -> list[bool]:
    """Bernoulli gates G_i ~ B(1, p_i) for one forward; a block with p = 1 is always kept.

    >>> draw_gates([1.0, 1.0], seed=0, step=5, micro_step=0)
    [True, True]
    """
    return [gate_uniform(seed, step, micro_step, i) < p for i, p in enumerate(probs)]


class PLDNotSteppedWarning(UserWarning):
    """Training forwards keep coming but the controller's step never advances: θ(t) stays where
    it is (θ = 1 from the start: PLD drops nothing). Raised once per controller; see
    :attr:`ProgressiveLayerDrop.warn_after_forwards`."""


class ProgressiveLayerDrop:
    """Keeps θ(t), the per-block keep probabilities and the gates of the latest forward.

    Made by :func:`pldrop.apply_pld`; call :meth:`step` with the global optimizer step once per
    optimizer step (before the forwards of that step); under a time budget, also pass the fraction
    of the budget used (``step(t, progress=f)``). Every training forward of the model
    draws one fresh set of gates (one per block); evaluation forwards draw none and run every
    block unscaled.

    Args:
        group_sizes: number of blocks in each block list (depth is counted within each list).
        theta_bar: θ̄ in (0, 1], the keep probability θ decays to.
        gamma: γ >= 0, the decay rate of θ(t).
        seed: seeds the gates; equal seeds give equal gates on every process.
        rule: ``"linear"`` (the paper) or ``"uniform"`` depth rule.
        rescale: divide each kept block's residual branches by its keep probability p.
        schedule: the depth schedule, one of ``pld`` (θ(t), the default), ``cooldown``, ``constant``,
            ``anneal`` (see :mod:`pldrop.schedule`).
        total_steps: the run's length in optimizer steps; every schedule but ``pld`` needs it, unless
            each :meth:`step` is given ``progress``.
        cooldown: ``cooldown``'s fraction of the run spent going back to θ = 1, in (0, 1).

    Attributes:
        theta: θ for the current step.
        keep_probs: one keep probability per block (index 0 = lowest block).
        last_kept: one bool per block: which blocks ran in the latest training forward
            (``None`` before the first one).
        warn_after_forwards: warn (once, :class:`PLDNotSteppedWarning`) when more than this many
            training forwards arrive without a :meth:`step` in between -- the sign of a loop that
            never calls ``ctl.step(step)`` (or a ``Trainer`` without the callback), where θ stays 1
            and nothing is dropped. 128 is more micro-batches per optimizer step than gradient
            accumulation uses in practice; set it higher for more, ``None`` turns the check off.
            Not checked where θ never moves (γ = 0, ``schedule="constant"``) or after :meth:`hold`
            (θ held on purpose). The check is one integer comparison per training forward, in the
            eager gate-drawing hook (outside any region :mod:`pldrop.compile` compiles); eval
            forwards draw nothing.
        requires_find_unused_parameters: DistributedDataParallel must be built with
            ``find_unused_parameters=True``, because a skipped block's parameters get no
            gradient. After ``backward``, call :meth:`release_skipped_grads` so that the zero
            gradients DDP fills in for skipped blocks become ``None`` again and the optimizer
            leaves those blocks untouched (no momentum, no weight decay).
    """

    requires_find_unused_parameters = True
    warn_after_forwards: int | None = 128

    def __init__(
        self,
        group_sizes: Sequence[int],
        theta_bar: float = 0.5,
        gamma: float = 0.001,
        seed: int = 0,
        rule: str = "linear",
        rescale: bool = True,
        schedule: str = "pld",
        total_steps: int | None = None,
        cooldown: float = DEFAULT_COOLDOWN,
    ):
        self.theta_bar = check_theta_bar(theta_bar)
        self.gamma = check_gamma(gamma)
        self.schedule = check_schedule(schedule)
        self.total_steps = None if total_steps is None else check_total_steps(total_steps)
        self.cooldown = check_cooldown(cooldown)
        if rule not in RULES:
            raise ValueError(f"rule={rule!r} is not known: it must be one of {', '.join(RULES)}")
        self.group_sizes = [check_num_layers(n) for n in group_sizes]
        if not self.group_sizes:
            raise ValueError("group_sizes=[] is out of range: PLD needs at least one block")
        self.seed, self.rule, self.rescale = int(seed), rule, bool(rescale)
        self.enabled = True
        self._warned_not_stepped = False
        self.blocks: list[Any] = []  # filled in by apply_pld: the switchable block modules
        self.output_structure: dict[type, int] = {}  # block class -> tuple length it returns (0: a tensor)
        # a schedule that needs the run's length and was given none starts at progress 0; its first
        # step() must then bring the length (total_steps) or the progress
        self.step(0, None if self._knows_length else 0.0)

    @property
    def num_layers(self) -> int:
        return sum(self.group_sizes)

    @property
    def _knows_length(self) -> bool:
        return self.schedule not in NEEDS_LENGTH or self.total_steps is not None

    def step(self, global_step: int, progress: float | None = None) -> float:
        """Set θ for the forwards of optimizer step ``global_step``; returns θ.

        Args:
            global_step: the optimizer step (it also seeds the gates).
            progress: the fraction of a time budget used so far (training time / budget), for runs
                whose length is a time: θ then follows :func:`~pldrop.schedule.theta_at_fraction`
                (``pld``: γ = 100 per budget, the paper's rule). None: θ follows the step
                (:func:`~pldrop.schedule.theta_at_step` with ``gamma`` and ``total_steps``).
        """
        if progress is None and not self._knows_length:
            raise ValueError(f"schedule={self.schedule!r} needs the run's length: pass total_steps= to apply_pld "
                             "(or set ctl.total_steps), or give step() the progress of a time budget")
        self.global_step = int(global_step)
        self.progress = None if progress is None else float(progress)
        self.micro_step = 0  # training forwards since this call (gradient accumulation)
        if self.progress is None:
            th = theta_at_step(self.schedule, self.global_step, self.total_steps, self.theta_bar, self.gamma,
                               self.cooldown)
        else:
            th = theta_at_fraction(self.schedule, self.progress, self.theta_bar, cooldown=self.cooldown)
        self.hold(th)
        self._held = False  # θ follows the schedule (hold() says it is fixed on purpose)
        self.last_kept: list[bool] | None = None
        self._kept_this_step = [False] * self.num_layers
        return self.theta

    def hold(self, value: float) -> None:
        """Use θ = ``value`` for this step's forwards (``step`` sets θ(t); ablations and benchmarks
        hold a fixed θ by calling this after ``step``)."""
        self.theta = check_theta_bar(value)
        self.keep_probs = [p for n in self.group_sizes for p in keep_probs(self.theta, n, self.rule)]
        self._held = True

    def draw(self) -> list[bool]:
        """Draw the gates for the next training forward (called by the model's pre-hook)."""
        kept = draw_gates(self.keep_probs, self.seed, self.global_step, self.micro_step)
        self.micro_step += 1
        if self.warn_after_forwards is not None and self.micro_step == self.warn_after_forwards + 1:
            self._warn_not_stepped()  # one integer compare per forward, no host sync
        self.last_kept = kept
        self._kept_this_step = [a or b for a, b in zip(self._kept_this_step, kept)]
        return kept

    def _warn_not_stepped(self) -> None:
        if self._warned_not_stepped or self._held or self.gamma == 0 or self.schedule == "constant":
            return  # warned already, θ held on purpose, or θ the same at every step
        self._warned_not_stepped = True
        warnings.warn(
            f"PLD: {self.micro_step} training forwards without ProgressiveLayerDrop.step(): θ stays at "
            f"{self.theta:.4g} (step {self.global_step}){', so no block is ever dropped' if self.theta >= 1 else ''}. "
            "Call ctl.step(global_step) once per optimizer step, or under transformers.Trainer call "
            "pldrop.integrations.add_pld_callback(trainer) before trainer.train() "
            "(set ctl.warn_after_forwards higher for more gradient-accumulation micro-batches per step)",
            PLDNotSteppedWarning,
            stacklevel=2,
        )

    @property
    def expected_kept(self) -> float:
        """Expected number of blocks that run per training forward at the current θ."""
        return float(sum(self.keep_probs))

    def release_skipped_grads(self) -> int:
        """Set ``grad = None`` on every block that ran in none of this step's forwards.

        Needed only where something fills in gradients for unused parameters (DDP with
        ``find_unused_parameters=True`` all-reduces zeros for them); returns how many
        parameters were released. Call it after backward, before ``optimizer.step()``.
        """
        n = 0
        for block, kept in zip(self.blocks, self._kept_this_step):
            if not kept:
                for p in block.parameters():
                    if p.grad is not None:
                        p.grad = None
                        n += 1
        return n

    def log_dict(self) -> dict[str, float]:
        """Scalars worth logging each step: θ, expected and realised blocks kept."""
        out = {"pld/theta": self.theta, "pld/expected_kept": self.expected_kept}
        if self.last_kept is not None:
            out["pld/kept"] = float(sum(self.last_kept))
        return out

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON-able state: settings plus the position in the schedule."""
        return {
            "theta_bar": self.theta_bar,
            "gamma": self.gamma,
            "seed": self.seed,
            "rule": self.rule,
            "rescale": self.rescale,
            "enabled": self.enabled,
            "group_sizes": list(self.group_sizes),
            "global_step": self.global_step,
            "micro_step": self.micro_step,
            "schedule": self.schedule,
            "total_steps": self.total_steps,
            "cooldown": self.cooldown,
            "progress": self.progress,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore settings and schedule position; the next gates are those an unbroken run draws."""
        if list(state["group_sizes"]) != self.group_sizes:
            raise ValueError(
                f"PLD state is for block lists of sizes {state['group_sizes']}, "
                f"but this model has {self.group_sizes}"
            )
        self.theta_bar = check_theta_bar(state["theta_bar"])
        self.gamma = check_gamma(state["gamma"])
        self.seed, self.rule = int(state["seed"]), state["rule"]
        self.rescale, self.enabled = bool(state["rescale"]), bool(state.get("enabled", True))
        # states written before depth schedules existed are the pld schedule
        self.schedule = check_schedule(state.get("schedule", "pld"))
        total = state.get("total_steps")
        self.total_steps = None if total is None else check_total_steps(total)
        self.cooldown = check_cooldown(state.get("cooldown", DEFAULT_COOLDOWN))
        self.step(state["global_step"], state.get("progress"))
        self.micro_step = int(state.get("micro_step", 0))

    def __repr__(self) -> str:
        return (
            f"ProgressiveLayerDrop(blocks={self.num_layers}, theta_bar={self.theta_bar}, "
            f"gamma={self.gamma}, rule={self.rule!r}, rescale={self.rescale}, seed={self.seed}, "
            f"schedule={self.schedule!r}, "
            f"step={self.global_step}, theta={self.theta:.4f})"
        )
