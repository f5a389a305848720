"""Figures of a run, recomputed from its ``metrics.jsonl`` alone (pure functions)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file, in order."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(ln) for ln in f if ln.strip()]


def eval_points(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records that carry a validation result."""
    return [r for r in records if "val_loss" in r]


def time_to_loss(records: list[dict[str, Any]], target: float, key: str = "wall") -> float | None:
    """First ``key`` (training seconds by default) at which validation loss reaches ``target``.

    Linear interpolation between the two evaluations around the crossing; ``None`` if never.

    >>> recs = [{"wall": 0, "val_loss": 8.0}, {"wall": 10, "val_loss": 6.0}, {"wall": 20, "val_loss": 5.0}]
    >>> time_to_loss(recs, 7.0), time_to_loss(recs, 5.0), time_to_loss(recs, 4.0)
    (5.0, 20.0, None)
    """
    pts = eval_points(records)
    prev = None
    for r in pts:
        if r["val_loss"] <= target:
            if prev is None or prev["val_loss"] == r["val_loss"]:
                return float(r[key])
            frac = (prev["val_loss"] - target) / (prev["val_loss"] - r["val_loss"])
            return float(prev[key] + frac * (r[key] - prev[key]))
        prev = r
    return None


def summarize(records: list[dict[str, Any]], num_layers: int) -> dict[str, Any]:
    """Per-run figures: time per sample, blocks run, final validation loss.

    ``time_per_sample_s`` is training time / samples over the whole run;
    ``steady_time_per_sample_s`` is the median over the second half of the steps (θ near θ̄).
    """
    last = records[-1]
    half = records[len(records) // 2:]
    evals = eval_points(records)
    return {
        "steps": last["step"],
        "samples": last["samples"],
        "train_time_s": last["wall"],
        "flops": last.get("flops"),
        "time_per_sample_s": last["wall"] / last["samples"],
        "steady_time_per_sample_s": statistics.median(r["step_time"] / (r["samples"] / r["step"]) for r in half),
        "mean_blocks_run": statistics.fmean(r["blocks_run"] for r in records),
        "steady_blocks_run": statistics.fmean(r["blocks_run"] for r in half),
        "num_layers": num_layers,
        "final_val_loss": evals[-1]["val_loss"] if evals else None,
        "final_val_accuracy": evals[-1].get("val_accuracy") if evals else None,
        "best_val_loss": min(r["val_loss"] for r in evals) if evals else None,
    }


def compare_runs(baseline: list[dict[str, Any]], pld: list[dict[str, Any]], num_layers: int) -> dict[str, Any]:
    """Baseline vs PLD: time per sample, saving vs the blocks-skipped bound, time to the baseline's loss."""
    b, p = summarize(baseline, num_layers), summarize(pld, num_layers)
    target = b["final_val_loss"]
    tb, tp = time_to_loss(baseline, target), time_to_loss(pld, target)
    sb, sp = time_to_loss(baseline, target, "samples"), time_to_loss(pld, target, "samples")
    return {
        "baseline": b,
        "pld": p,
        "target_val_loss": target,
        "saving_per_sample": 1 - p["time_per_sample_s"] / b["time_per_sample_s"],
        "steady_saving_per_sample": 1 - p["steady_time_per_sample_s"] / b["steady_time_per_sample_s"],
        "theoretical_saving": 1 - p["mean_blocks_run"] / num_layers,
        "steady_theoretical_saving": 1 - p["steady_blocks_run"] / num_layers,
        "time_to_target_s": {"baseline": tb, "pld": tp},
        "samples_to_target": {"baseline": sb, "pld": sp},
        "speedup_time": (tb / tp) if tb and tp else None,
        "speedup_samples": (sb / sp) if sb and sp else None,
    }
