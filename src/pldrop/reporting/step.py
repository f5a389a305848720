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
        if not MIN_VOCAB <= self.vocab_size <= MAX_VOCAB:
            raise UserError(f"--vocab-size {self.vocab_size}: must be in [{MIN_VOCAB}, {MAX_VOCAB:,}] (ids 0-4 are "
                            "special tokens; BERT's is 30522)")
        if not 1 <= self.schedule_steps <= MAX_SCHEDULE_STEPS:
            raise UserError(f"--schedule-steps {self.schedule_steps}: must be in [1, {MAX_SCHEDULE_STEPS:,}] "
                            "(the T of γ = 100/T)")
        from ..train.config import MAX_SEQ_LEN

        if self.seq_len > MAX_SEQ_LEN:
            raise UserError(f"--seq-len {self.seq_len}: must be in [8, {MAX_SEQ_LEN}]")
        self.thetas = sorted(set(self.thetas), reverse=True)


MIN_VOCAB, MAX_VOCAB = 6, 10_000_000
MAX_SCHEDULE_STEPS = 10_000_000  # the whole-schedule average walks every step in Python


def step_memory_bytes(layers: int, hidden: int, heads: int, batch_size: int, seq_len: int, vocab_size: int,
                      models: int = 2) -> int:
    """A rough estimate of the memory the step benchmark needs, in bytes (fp32): ``models`` copies of
    the weights with their gradients and AdamW's two moments (4 floats per parameter), plus one
    step's activations kept for the backward pass -- per block the attention scores, probabilities
    and dropout mask (3·B·heads·T²) and about 20·B·T·H for the rest -- and the logits of the ~15 %
    masked positions.

    >>> round(step_memory_bytes(12, 768, 12, 8, 128, 30522) / 2**30, 1)  # BERT-base at the defaults, GiB
    4.2
    >>> step_memory_bytes(12, 768, 12, 8, 100_000, 30522) > 2**40  # --seq-len 100000: more than a TiB
    True
    """
    params = vocab_size * hidden + (seq_len + 2) * hidden + layers * 12 * hidden * hidden
    acts = layers * (3 * batch_size * heads * seq_len ** 2 + 20 * batch_size * seq_len * hidden)
    logits = batch_size * seq_len * vocab_size // 2  # 15 % of positions x (logits, softmax, gradient)
    return 4 * (models * 4 * params + acts + logits)


def memory_limit(device: str) -> tuple[int | None, str]:
    """The memory the benchmark may use on ``device``: the GPU's, or the machine's RAM (its cgroup
    limit when lower); ``(None, …)`` when unknown."""
    import os

    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_properties(dev.index or 0).total_memory, "GPU memory"
    try:
        limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        limit = None
    try:
        text = open("/sys/fs/cgroup/memory.max", encoding="ascii").read().strip()
        if text.isdigit():
            limit = min(limit or int(text), int(text))
    except OSError:
        pass
    return limit, "memory"


def check_device(device: str) -> str:
    """``device`` if this machine has it, else a one-line UserError (before anything is allocated)."""
    import torch

    from ..errors import UserError

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise UserError(f"--device {device!r}: not a device (expected cpu, cuda or cuda:N)") from None
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"--device {device!r}: the step benchmark runs on cpu or cuda")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA GPU here (use --device cpu)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s)")
    return device


def check_fits(s: "StepSettings", models: int = 2) -> None:
    """Refuse, in one line, a benchmark whose estimated memory (:func:`step_memory_bytes`, the
    largest preset) exceeds the device's (:func:`memory_limit`): it would swap or be killed."""
    from ..errors import UserError
    from ..models import PRESETS

    limit, what = memory_limit(s.device)
    if limit is None:
        return
    for preset in s.presets:
        layers, hidden, heads = PRESETS[preset]
        need = step_memory_bytes(layers, hidden, heads, s.batch_size, s.seq_len, s.vocab_size, models)
        if s.bf16:
            need = need * 3 // 4  # activations in bf16: a rough allowance
        if need > limit:
            raise UserError(f"bench step {preset}: batch {s.batch_size} x seq {s.seq_len} (vocab {s.vocab_size}) needs "
                            f"about {need / 2**30:,.0f} GiB, more than the {limit / 2**30:,.0f} GiB of {what} here; "
                            "give a smaller --seq-len or --batch-size")


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
