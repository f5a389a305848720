"""Training precision: fp32, or bf16 autocast where the hardware has native bf16 and it pays.

bf16 autocast halves the bytes each matmul reads and, on hardware with bf16 units (CUDA Ampere+,
CPUs with AVX512-BF16 or AMX), runs the matmuls on them. At small widths the casts around every
matmul could cost more than the matmuls save, so ``"auto"`` picks bf16 only from the smallest width
at which it was measured faster. On the development CPU (AVX512-BF16, no AMX) bf16 was faster at
every preset measured, H = 64 (tiny) to 256 (mini) and BERT-base (H = 768, 1.67x in issue 10):
1.18x / 1.38x / 1.68x at tiny / narrow / mini with an 8,000-word vocabulary.

The threshold comes from :func:`measure` (fp32 vs bf16-autocast training steps of pldrop's Pre-LN
MLM model, interleaved in one process, medians): see benchmarks/README.md, "bf16 autocast".
"""

from __future__ import annotations

import contextlib
import random
import statistics
import time
from typing import Any

import torch

PRECISIONS = ("fp32", "bf16", "auto")

# Smallest hidden size at which bf16 autocast was measured faster than fp32 on a CPU with native
# bf16 (benchmarks/README.md, "bf16 autocast"): the tiny preset, H = 64, 1.18x (vocab 8,000) and
# 1.29x (vocab 30,522); every wider preset gained more. Narrower models were not measured: fp32.
CPU_BF16_MIN_HIDDEN = 64
# On CUDA, bf16 tensor cores win at every width we train (the cast kernels are cheap there).
CUDA_BF16_MIN_HIDDEN = 0

_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bf16 matmuls natively.

    Args:
        device: a CUDA device (``torch.cuda.is_bf16_supported()``) or the CPU (the ``avx512_bf16``
            or ``amx_bf16`` flag in /proc/cpuinfo, or torch's CPU capability ``AMX``).

    Returns:
        True where bf16 autocast runs on bf16 units rather than being emulated.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    if _cpu_flags() & set(_CPU_BF16_FLAGS):
        return True
    try:
        return "AMX" in torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001 - an old torch without the query: no native bf16 known
        return False


def resolve_precision(choice: str, device: torch.device | str, hidden_size: int) -> str:
    """The precision to train in: ``"bf16"`` (autocast) or ``"fp32"``.

    Args:
        choice: ``"fp32"``, ``"bf16"`` (always bf16 autocast, even where it is emulated), or
            ``"auto"``: bf16 where :func:`native_bf16` and the model is at least as wide as the
            width from which bf16 was measured faster (``CPU_BF16_MIN_HIDDEN`` on the CPU,
            ``CUDA_BF16_MIN_HIDDEN`` on CUDA), else fp32.
        device: where the model trains.
        hidden_size: the model's hidden size H.

    Raises:
        ValueError: ``choice`` is none of ``PRECISIONS``.

    >>> resolve_precision("fp32", "cpu", 768)
    'fp32'
    """
    if choice not in PRECISIONS:
        raise ValueError(f"precision={choice!r} is not known: use one of {', '.join(PRECISIONS)}")
    if choice != "auto":
        return choice
    device = torch.device(device)
    if not native_bf16(device):
        return "fp32"
    threshold = CUDA_BF16_MIN_HIDDEN if device.type == "cuda" else CPU_BF16_MIN_HIDDEN
    return "bf16" if hidden_size >= threshold else "fp32"


def autocast(precision: str, device: torch.device | str):
    """The context a training forward runs in: bf16 autocast, or nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def measure(
    presets: tuple[str, ...] = ("tiny", "narrow", "mini", "small", "base"),
    batch_size: int = 8,
    seq_len: int = 128,
    repeats: int = 10,
    warmup: int = 2,
    vocab_size: int = 30522,
    device: str = "cpu",
    seed: int = 0,
) -> list[dict[str, Any]]:
    """fp32 vs bf16-autocast training-step time (forward, backward, AdamW) per preset.

    The two precisions of a preset alternate step by step (a seeded order per round), so load
    on the machine hits both alike; medians of ``repeats`` steps each. Returns one row per preset:
    hidden size, the two medians and ``speedup`` = fp32 / bf16.
    """
    from .reporting.timing import _batch, _step
    from .models import build_model

    dev = torch.device(device)
    batch = {k: v.to(dev) for k, v in _batch(batch_size, seq_len, vocab_size, seed).items()}
    rows = []
    rng = random.Random(seed)
    for preset in presets:
        model = build_model("preln", vocab_size, preset, seq_len=seq_len, seed=seed).to(dev).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        times: dict[str, list[float]] = {"fp32": [], "bf16": []}
        sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
        for r in range(warmup + repeats):
            order = ["fp32", "bf16"]
            rng.shuffle(order)
            for prec in order:
                sync()
                t0 = time.perf_counter()
                _step(model, opt, batch, False, prec == "bf16")
                sync()
                if r >= warmup:
                    times[prec].append(time.perf_counter() - t0)
        f32, b16 = statistics.median(times["fp32"]), statistics.median(times["bf16"])
        rows.append({"preset": preset, "hidden": model.config.hidden_size,
                     "layers": model.config.num_hidden_layers, "fp32_s": f32, "bf16_s": b16,
                     "speedup": f32 / b16})
    return rows
