"""Step-time benchmark: full training steps (forward, backward, AdamW) with and without PLD.

Every arm runs on the same batch and its steps are interleaved (a seeded shuffle per round),
so machine noise hits all arms alike; we report medians. Arms:

- ``untouched``: the plain HF Pre-LN model (no PLD applied), MLM head on masked positions only;
- ``pld@θ``: the same architecture under ``apply_pld`` with θ held fixed;
- ``fixed``: every block skipped -- the step's fixed cost (embeddings, head, loss, optimizer);
- with ``head="both"``, also ``untouched/full-head`` and ``fixed/full-head``: the HF head on
  all B*T positions, to measure what the masked-only head saves.

The saving PLD should give follows from the blocks that actually ran:
predicted time = fixed + kept·(untouched - fixed)/L; we report realised vs predicted saving.
"""

from __future__ import annotations

import copy
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ..models import build_model, masked_lm_loss
from ..schedule import DEFAULT_COOLDOWN, gamma_for_steps, keep_probs, theta_at_step
from ..surgery import apply_pld

TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"


def reexec_with_tcmalloc(command: str | None = None) -> None:
    """Restart this process with tcmalloc preloaded, if available and not already there.

    glibc malloc page-faults heavily on these step sizes and makes CPU timings swing by
    tens of percent; tcmalloc keeps them stable. Set PLDROP_NO_TCMALLOC=1 to skip.

    Args:
        command: the ``pldrop`` subcommand asking; the restart happens only when it is this
            process's own command line (never from inside another program, e.g. a test calling
            ``pldrop.cli.main``). ``python -m pldrop`` restarts as ``-m pldrop``. None: a script.
    """
    if os.environ.get("PLDROP_NO_TCMALLOC") or "tcmalloc" in os.environ.get("LD_PRELOAD", ""):
        return
    if not os.path.exists(TCMALLOC) or platform.system() != "Linux":
        return
    if command is not None and sys.argv[1:2] != [command]:
        return
    script = Path(sys.argv[0])
    argv = [sys.executable, "-m", "pldrop"] if script.name == "__main__.py" else [sys.executable, str(script)]
    env = dict(os.environ, LD_PRELOAD=(TCMALLOC + " " + os.environ.get("LD_PRELOAD", "")).strip())
    sys.stdout.flush()
    os.execve(sys.executable, argv + sys.argv[1:], env)


def _batch(batch_size: int, seq_len: int, vocab: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch_size, seq_len), generator=g)
    labels = torch.full_like(ids, -100)
    sel = torch.rand(ids.shape, generator=g) < 0.15
    labels[sel] = ids[sel]
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def _step(model, opt, batch, full_head: bool, autocast: bool) -> None:
    with torch.autocast("cpu" if not torch.cuda.is_available() else "cuda", torch.bfloat16, enabled=autocast):
        if full_head:
            loss = model(**batch).loss
        else:
            loss = masked_lm_loss(model, batch["input_ids"], batch["attention_mask"], batch["labels"])[0]
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def interleave(arms: dict[str, Callable[[], int]], repeats: int, warmup: int, seed: int, device: torch.device,
               desc: str, progress: bool, on_warm: Callable[[], Any] | None = None,
               ) -> tuple[dict[str, list[float]], dict[str, list[int]]]:
    """Run every arm ``warmup + repeats`` times, the order of the arms shuffled (seeded) in each round.

    Each arm is a call that runs one training step and returns the blocks it ran; only the
    ``repeats`` rounds after the warm-up are timed. ``on_warm`` is called once, when the warm-up
    is over (e.g. to count the graphs compiled so far).

    Returns:
        ``(times, kept)``: per arm, the seconds of each timed step and the blocks each ran.
    """
    from tqdm.auto import tqdm

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {a: [] for a in arms}
    kept: dict[str, list[int]] = {a: [] for a in arms}
    rng = random.Random(seed)
    order = list(arms)
    with tqdm(total=(warmup + repeats) * len(order), desc=desc, disable=not progress, unit="step") as bar:
        for r in range(warmup + repeats):
            if r == warmup and on_warm is not None:
                on_warm()
            rng.shuffle(order)
            for a in order:
                sync()
                t0 = time.perf_counter()
                k = arms[a]()
                sync()
                if r >= warmup:
                    times[a].append(time.perf_counter() - t0)
                    kept[a].append(int(k))
                bar.update(1)
    return times, kept


def time_steps(
    preset: str = "base",
    batch_size: int = 8,
    seq_len: int = 128,
    thetas: tuple[float, ...] = (1.0, 0.75, 0.5),
    repeats: int = 10,
    warmup: int = 2,
    head: str = "both",
    bf16: bool = False,
    vocab_size: int = 30522,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Time interleaved training steps; returns a JSON-able dict (see module docstring)."""
    dev = torch.device(device)
    batch = {k: v.to(dev) for k, v in _batch(batch_size, seq_len, vocab_size, seed).items()}
    plain = build_model("preln", vocab_size, preset, seq_len=seq_len, seed=seed).to(dev).train()
    pld = copy.deepcopy(plain)
    ctl = apply_pld(pld, theta_bar=min(thetas), gamma=0.0, seed=seed)
    L = ctl.num_layers
    opts = {
        "plain": torch.optim.AdamW(plain.parameters(), lr=1e-4),
        "pld": torch.optim.AdamW(pld.parameters(), lr=1e-4),
    }

    calls = iter(range(10**9))  # a fresh step number per call, so each call draws new gates

    def run_pld(th: float | None, full_head=False):
        def fn():
            ctl.step(next(calls))
            if th is None:
                ctl.keep_probs = [0.0] * L  # every block skipped: the fixed cost
            else:
                ctl.hold(th)
            _step(pld, opts["pld"], batch, full_head, bf16)
            return sum(ctl.last_kept)

        return fn

    def run_plain(full_head=False):
        def fn():
            _step(plain, opts["plain"], batch, full_head, bf16)
            return L

        return fn

    arms = {"untouched": run_plain(), "fixed": run_pld(None)}
    arms.update({f"pld@{th:g}": run_pld(th) for th in thetas})
    if head == "both":
        arms["untouched/full-head"] = run_plain(True)
        arms["fixed/full-head"] = run_pld(None, True)

    times, kept = interleave(arms, repeats, warmup, seed, dev, f"bench {preset} b{batch_size}", progress)

    med = {a: statistics.median(v) for a, v in times.items()}
    t_full, t_fixed = med["untouched"], med["fixed"]
    t_block = (t_full - t_fixed) / L
    rows = []
    for th in thetas:
        a = f"pld@{th:g}"
        mean_kept = statistics.fmean(kept[a])
        predicted = t_fixed + mean_kept * t_block
        realised_saving = 1 - med[a] / t_full
        predicted_saving = 1 - predicted / t_full
        rows.append({
            "theta": th,
            "arm": a,
            "median_s": med[a],
            "mean_kept": mean_kept,
            "expected_kept": sum(keep_probs(th, L)),
            "realised_saving": realised_saving,
            "predicted_saving": predicted_saving,
            "efficiency": realised_saving / predicted_saving if predicted_saving > 1e-9 else None,
        })
    result = {
        "settings": {
            "preset": preset, "layers": L, "batch_size": batch_size, "seq_len": seq_len, "bf16": bf16,
            "repeats": repeats, "warmup": warmup, "vocab_size": vocab_size, "device": str(dev),
        },
        "machine": machine_info(),
        "median_s": med,
        "iqr_s": {a: _iqr(v) for a, v in times.items()},
        "times_s": times,
        "fixed_fraction": t_fixed / t_full,
        "block_s": t_block,
        "rows": rows,
    }
    if head == "both":
        result["head"] = {
            "fixed_full_head_s": med["fixed/full-head"],
            "fixed_masked_head_s": t_fixed,
            "fixed_cost_ratio": med["fixed/full-head"] / t_fixed,
            "step_ratio_full_over_masked": med["untouched/full-head"] / t_full,
        }
    return result


def schedule_saving(result: dict[str, Any], total_steps: int, theta_bar: float = 0.5, schedule: str = "pld",
                    cooldown: float = DEFAULT_COOLDOWN) -> dict[str, float]:
    """Average predicted saving over a whole run under a depth schedule (``pld``: θ from 1 to θ̄,
    γ = 100/T), from measured costs."""
    L = result["settings"]["layers"]
    t_full, t_fixed, t_block = result["median_s"]["untouched"], result["median_s"]["fixed"], result["block_s"]
    g = gamma_for_steps(total_steps)
    per_step = [t_fixed + sum(keep_probs(theta_at_step(schedule, t, total_steps, theta_bar, g, cooldown), L)) * t_block
                for t in range(total_steps)]
    avg = statistics.fmean(per_step)
    return {"total_steps": total_steps, "theta_bar": theta_bar, "gamma": g, "schedule": schedule, "mean_step_s": avg,
            "saving": 1 - avg / t_full}


def _iqr(v: list[float]) -> float:
    if len(v) < 4:
        return 0.0
    q = statistics.quantiles(v, n=4)
    return q[2] - q[0]


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "tcmalloc": "tcmalloc" in os.environ.get("LD_PRELOAD", ""),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def format_table(result: dict[str, Any]) -> str:
    """A markdown table of one :func:`time_steps` result."""
    s = result["settings"]
    med = result["median_s"]
    lines = [
        f"{s['preset']} (L={s['layers']}), batch {s['batch_size']}, seq {s['seq_len']}, "
        f"{'bf16' if s['bf16'] else 'fp32'}, {result['machine']['threads']} threads, "
        f"{s['repeats']} interleaved steps per arm (medians)",
        "",
        f"untouched step {med['untouched']:.3f} s; fixed cost (no blocks) {med['fixed']:.3f} s "
        f"= {100 * result['fixed_fraction']:.1f} % of a step",
        "",
        "| θ | step (s) | blocks run | saving realised | saving predicted | realised / predicted |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        eff = "n/a" if r["efficiency"] is None else f"{100 * r['efficiency']:.0f} %"
        lines.append(
            f"| {r['theta']:g} | {r['median_s']:.3f} | {r['mean_kept']:.2f} / {s['layers']} | "
            f"{100 * r['realised_saving']:.1f} % | {100 * r['predicted_saving']:.1f} % | {eff} |"
        )
    if "head" in result:
        h = result["head"]
        lines += [
            "",
            f"MLM head on all positions: fixed cost {h['fixed_full_head_s']:.3f} s vs {h['fixed_masked_head_s']:.3f} s "
            f"masked-only ({h['fixed_cost_ratio']:.2f}x); full step {h['step_ratio_full_over_masked']:.2f}x slower.",
        ]
    return "\n".join(lines)


COLUMNS = ("fp32", "bf16", "compiled", "compiled+bf16")


def time_columns(
    preset: str = "base",
    batch_size: int = 8,
    seq_len: int = 128,
    theta: float = 0.5,
    columns: tuple[str, ...] = ("fp32", "bf16", "compiled"),
    repeats: int = 10,
    warmup: int = 3,
    vocab_size: int = 30522,
    seed: int = 0,
    device: str = "cpu",
    backend: str = "inductor",
    progress: bool = True,
) -> dict[str, Any]:
    """Step time of the untouched model and of PLD at θ, in fp32, bf16 autocast and compiled, side by side.

    Every (model, column) arm runs on the same batch and the arms' steps are interleaved (a
    seeded shuffle per round); medians of ``repeats`` steps after ``warmup`` (which holds the
    compilation). ``compiled`` is :func:`pldrop.compile.compile_blocks` (regional: each block's
    forward, gate in eager Python) with ``backend``, in fp32; ``compiled+bf16`` the same under
    bf16 autocast.

    Returns:
        ``{"settings", "machine", "median_s": {"untouched/fp32": …, "pld/fp32": …, …},
        "kept": mean blocks run per PLD arm, "recompiles": graphs compiled after warmup}``.
    """
    from ..compile import compile_blocks

    bad = [c for c in columns if c not in COLUMNS]
    if bad:
        raise ValueError(f"columns {bad} are not known: use {', '.join(COLUMNS)}")
    dev = torch.device(device)
    batch = {k: v.to(dev) for k, v in _batch(batch_size, seq_len, vocab_size, seed).items()}
    plain = build_model("preln", vocab_size, preset, seq_len=seq_len, seed=seed).to(dev).train()
    models = {"untouched": plain, "pld": copy.deepcopy(plain)}
    ctls = {"pld": apply_pld(models["pld"], theta_bar=theta, gamma=0.0, seed=seed)}
    if any(c.startswith("compiled") for c in columns):
        models["untouched-c"] = compile_blocks(copy.deepcopy(plain), backend=backend)
        pc = copy.deepcopy(plain)
        ctls["pld-c"] = apply_pld(pc, theta_bar=theta, gamma=0.0, seed=seed)
        models["pld-c"] = compile_blocks(pc, backend=backend)
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in models.items()}
    L = plain.config.num_hidden_layers

    def arm(which: str, col: str):
        key = which + ("-c" if col.startswith("compiled") else "")
        bf16 = col.endswith("bf16")
        calls = iter(range(10**9))  # per arm: every column's PLD arm sees the same sequence of gates

        def fn():
            ctl = ctls.get(key)
            if ctl is not None:
                ctl.step(next(calls))
                ctl.hold(theta)
            _step(models[key], opts[key], batch, False, bf16)
            return L if ctl is None else sum(ctl.last_kept)

        return fn

    arms = {f"{w}/{c}": arm(w, c) for w in ("untouched", "pld") for c in columns}
    frames = [_frame_count()]
    times, kept = interleave(arms, repeats, warmup, seed, dev, f"columns {preset}", progress,
                             on_warm=lambda: frames.append(_frame_count()))
    return {
        "settings": {"preset": preset, "layers": L, "batch_size": batch_size, "seq_len": seq_len, "theta": theta,
                     "columns": list(columns), "repeats": repeats, "warmup": warmup, "backend": backend,
                     "device": str(dev)},
        "machine": machine_info(),
        "median_s": {a: statistics.median(v) for a, v in times.items()},
        "kept": {a: statistics.fmean(v) for a, v in kept.items() if a.startswith("pld")},
        "recompiles_after_warmup": _frame_count() - frames[-1],
    }


def _frame_count() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"].get("unique_graphs", 0))


def format_columns(result: dict[str, Any]) -> str:
    """A markdown table of :func:`time_columns`: rows untouched / PLD, one column per precision."""
    s, med = result["settings"], result["median_s"]
    cols = s["columns"]
    lines = [
        f"{s['preset']} (L={s['layers']}), batch {s['batch_size']}, seq {s['seq_len']}, PLD at θ = {s['theta']:g}, "
        f"{result['machine']['threads']} threads, {s['repeats']} interleaved steps per arm (medians); compiled = "
        f"compile_blocks, backend {s['backend']}; graphs compiled after warmup: {result['recompiles_after_warmup']}",
        "",
        "| model | " + " | ".join(f"{c} (s)" for c in cols) + " | "
        + " | ".join(f"{c} / fp32" for c in cols[1:]) + " |",
        "|---" * (1 + 2 * len(cols) - 1) + "|",
    ]
    for w in ("untouched", "pld"):
        base = med[f"{w}/{cols[0]}"]
        label = w if w == "untouched" else f"PLD ({result['kept'][f'pld/{cols[0]}']:.2f} blocks)"
        lines.append(f"| {label} | " + " | ".join(f"{med[f'{w}/{c}']:.3f}" for c in cols) + " | "
                     + " | ".join(f"{med[f'{w}/{c}'] / base:.2f}x" for c in cols[1:]) + " |")
    return "\n".join(lines)
