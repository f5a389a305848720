"""Figures across seeds and arms, recomputed from runs' ``metrics.jsonl`` alone (pure functions).

Every number ``pldrop bench converge`` and ``pldrop report`` print comes from these functions
applied to the records of :func:`pldrop.train.analysis.read_metrics`, so a reader holding the
run folders can recompute each one.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from typing import Any

from ..train.analysis import eval_points, summarize, time_to_loss

Records = list[dict[str, Any]]


def mean_std(values: Iterable[float | None]) -> dict[str, Any]:
    """Mean, sample standard deviation and count of the values that are not ``None``.

    >>> mean_std([1.0, 2.0, 3.0, None])
    {'mean': 2.0, 'std': 1.0, 'n': 3}
    >>> mean_std([5.0])
    {'mean': 5.0, 'std': None, 'n': 1}
    >>> mean_std([None])
    {'mean': None, 'std': None, 'n': 0}
    """
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else None, "n": len(vals)}


def run_figures(records: Records, num_layers: int) -> dict[str, Any]:
    """One run's figures: :func:`~pldrop.train.analysis.summarize` plus FLOPs per sample and the
    first validation loss (used to tell a stable run from one that got worse)."""
    fig = summarize(records, num_layers)
    evals = eval_points(records)
    fig["first_val_loss"] = evals[0]["val_loss"] if evals else None
    fig["flops_per_sample"] = fig["flops"] / fig["samples"] if fig.get("flops") is not None else None
    return fig


def to_target(records: Records, target: float | None) -> dict[str, float | None]:
    """Training seconds, FLOPs and samples at which validation loss first reaches ``target``
    (linear interpolation between evaluations; ``None`` where never reached).

    >>> recs = [{"wall": 0, "flops": 0, "samples": 0, "val_loss": 8.0},
    ...         {"wall": 10, "flops": 4e12, "samples": 320, "val_loss": 6.0}]
    >>> to_target(recs, 7.0)
    {'time_s': 5.0, 'flops': 2000000000000.0, 'samples': 160.0}
    >>> to_target(recs, 5.0)
    {'time_s': None, 'flops': None, 'samples': None}
    """
    if target is None:
        return {"time_s": None, "flops": None, "samples": None}
    return {"time_s": time_to_loss(records, target, "wall"), "flops": time_to_loss(records, target, "flops"),
            "samples": time_to_loss(records, target, "samples")}


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or ``None`` if either is missing or ``b`` is not positive.

    >>> ratio(6.0, 2.0), ratio(None, 2.0), ratio(1.0, 0.0)
    (3.0, None, None)
    """
    if a is None or b is None or b <= 0:
        return None
    return a / b


def saving(new: float | None, old: float | None) -> float | None:
    """Fraction of ``old`` saved by ``new``: ``1 - new / old``.

    >>> round(saving(0.76, 1.0), 2)
    0.24
    """
    r = ratio(new, old)
    return None if r is None else 1.0 - r


def by_seed(fn, *maps: Mapping[str, Any]) -> dict[str, Any]:
    """``{seed: fn(m1[seed], m2[seed], ...)}`` over the seeds every map has (paired by seed).

    >>> by_seed(ratio, {"0": 4.0, "1": 9.0}, {"0": 2.0, "1": 3.0, "2": 1.0})
    {'0': 2.0, '1': 3.0}
    """
    seeds = [s for s in maps[0] if all(s in m for m in maps[1:])]
    return {s: fn(*(m[s] for m in maps)) for s in seeds}


def target_figures(runs: Mapping[str, Mapping[str, Records]], target_arm: str) -> dict[str, Any]:
    """Time, FLOPs and samples of every arm to ``target_arm``'s final validation loss, per seed.

    The target of seed ``s`` is the final validation loss of ``target_arm``'s seed-``s`` run; an
    arm's seed-``s`` run is measured against it, and its speed-up is ``target_arm``'s own time
    (FLOPs, samples) to that loss over the arm's, paired by seed.

    Args:
        runs: ``{arm: {seed: records}}`` (seeds as strings, as in JSON); diverged runs left out.
        target_arm: the arm whose final losses are the targets.

    Returns:
        ``{"target_arm", "per_seed": {seed: loss}, "target": mean_std of the losses,
        "arms": {arm: {"to_target": {seed: {...}},
        "speedup_time": {seed: x}, "speedup_flops": ..., "speedup_samples": ..., "reached": k,
        "seeds": n, "time_s": mean_std, "flops": mean_std, "samples": mean_std,
        "speedup_time_agg": mean_std, ...}}}``.
    """
    targets = {}
    for seed, recs in runs.get(target_arm, {}).items():
        evals = eval_points(recs)
        if evals:
            targets[seed] = evals[-1]["val_loss"]
    ref = {seed: to_target(runs[target_arm][seed], t) for seed, t in targets.items()}
    arms: dict[str, Any] = {}
    for arm, per_seed in runs.items():
        reached = {seed: to_target(recs, targets.get(seed)) for seed, recs in per_seed.items() if seed in targets}
        fig: dict[str, Any] = {"to_target": reached, "seeds": len(reached),
                               "reached": sum(r["time_s"] is not None for r in reached.values())}
        for key, name in (("time_s", "time"), ("flops", "flops"), ("samples", "samples")):
            fig[key] = mean_std(r[key] for r in reached.values())
            sp = {seed: ratio(ref[seed][key], r[key]) for seed, r in reached.items()}
            fig[f"speedup_{name}"] = sp
            fig[f"speedup_{name}_agg"] = mean_std(sp.values())
        arms[arm] = fig
    return {"target_arm": target_arm, "per_seed": targets, "target": mean_std(targets.values()), "arms": arms}


def arm_aggregate(figs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Mean ± std over seeds of each run figure (``{seed: run_figures(...)}`` in)."""
    keys = ("final_val_loss", "final_val_accuracy", "best_val_loss", "time_per_sample_s", "steady_time_per_sample_s",
            "mean_blocks_run", "steady_blocks_run", "train_time_s", "samples", "steps", "flops", "flops_per_sample")
    return {k: mean_std(f.get(k) for f in figs.values()) for k in keys}


def savings(figs: Mapping[str, Mapping[str, Mapping[str, Any]]], arm: str, against: str,
            key: str = "time_per_sample_s") -> dict[str, Any]:
    """Per-seed saving of ``arm`` over ``against`` in ``key`` (paired by seed), and mean ± std."""
    per = by_seed(lambda a, b: saving(a.get(key), b.get(key)), figs.get(arm, {}), figs.get(against, {}))
    return {"arm": arm, "against": against, "key": key, "per_seed": per, **mean_std(per.values())}

