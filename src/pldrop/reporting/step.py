"""`pldrop bench step`: time per sample against θ, baseline and PLD steps interleaved.

For each preset, :func:`pldrop.reporting.timing.time_steps` times full training steps (forward, backward,
AdamW) of the untouched Pre-LN model, of the same model under PLD with θ held at each value,
and of the fixed cost (every block skipped), all interleaved in one run so machine noise hits
them alike. From the medians: realised saving ``1 - t(θ)/t(1)`` against the saving predicted by
the blocks that ran, ``1 - (fixed + kept·block)/t(1)``; and the average predicted saving over a
whole schedule (θ from 1 to θ̄ with γ = 100/T, :func:`pldrop.reporting.timing.schedule_saving`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

DEFAULT_THETAS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)


@dataclass
class StepSettings:
    """What `pldrop bench step` measures.

    Args:
        presets: model sizes (``pldrop.models.PRESETS``).
        batch_size, seq_len: the step's shape.
        thetas: θ values held fixed, 1.0 ... 0.5.
        repeats, warmup: timed and untimed interleaved rounds per arm.
        vocab_size: vocabulary of the benchmark models (BERT's 30522 by default).
        schedule_steps, theta_bar: T and θ̄ of the whole-schedule average.
        bf16: bf16 autocast.
        device: ``cpu`` or ``cuda``.
    """

    presets: list[str] = field(default_factory=lambda: ["small", "base"])
    batch_size: int = 8
    seq_len: int = 128
    thetas: list[float] = field(default_factory=lambda: list(DEFAULT_THETAS))
    repeats: int = 3
    warmup: int = 1
    vocab_size: int = 30522
    schedule_steps: int = 10_000
    theta_bar: float = 0.5
    bf16: bool = False
    device: str = "cpu"

    def __post_init__(self):
        from ..errors import UserError
        from ..models import PRESETS

        for p in self.presets:
            if p not in PRESETS:
                raise UserError(f"step timing preset {p!r} is unknown; use {', '.join(PRESETS)}")
        if not all(0 < t <= 1 for t in self.thetas):
            raise UserError(f"--thetas {' '.join(map(str, self.thetas))}: each θ must be in (0, 1]")
        if self.repeats < 1 or self.warmup < 0 or self.batch_size < 1 or self.seq_len < 8:
            raise UserError("--repeats, --batch-size must be >= 1, --warmup >= 0, --seq-len >= 8")
        if not 0 < self.theta_bar <= 1:
            raise UserError(f"--theta-bar {self.theta_bar}: must be in (0, 1]")
        self.thetas = sorted(set(self.thetas), reverse=True)


def run_step_bench(s: StepSettings, progress: bool = False, log=print) -> dict[str, Any]:
    """Time every preset; returns the JSON section ``{"settings", "presets": {name: result}}``.

    Each result is :func:`pldrop.reporting.timing.time_steps`'s, plus ``schedule`` (the whole-schedule
    average), ``time_per_sample_s`` ({arm: median step time / batch}).
    """
    from .timing import schedule_saving, time_steps

    out: dict[str, Any] = {"settings": asdict(s), "presets": {}}
    for preset in s.presets:
        log(f"bench step: {preset}, batch {s.batch_size}, seq {s.seq_len}, θ {', '.join(f'{t:g}' for t in s.thetas)}")
        res = time_steps(preset, s.batch_size, s.seq_len, tuple(s.thetas), s.repeats, s.warmup, head="masked",
                         bf16=s.bf16, vocab_size=s.vocab_size, device=s.device, progress=progress)
        res["schedule"] = schedule_saving(res, s.schedule_steps, s.theta_bar)
        res["schedule"]["gamma_times_T"] = res["schedule"]["gamma"] * s.schedule_steps  # the paper's 100
        res["time_per_sample_s"] = {a: t / s.batch_size for a, t in res["median_s"].items()}
        out["presets"][preset] = res
    return out


def theta_row(result: dict[str, Any], theta: float) -> dict[str, Any] | None:
    """The row of ``result['rows']`` at ``theta`` (None if not measured)."""
    return next((r for r in result["rows"] if abs(r["theta"] - theta) < 1e-9), None)
