"""Figures of runs, recomputed from their ``metrics.jsonl`` alone (pure functions).

One run: :func:`summarize`, :func:`time_to_loss`. Several arms trained side by side (``pldrop
compare``, ``pldrop bench converge``): :func:`speedup_curve` -- the speed-up of an arm over the
baseline at every target loss along the baseline's validation curve, in training time, counted
FLOPs and samples -- :func:`curve_over_seeds` (mean and t-interval) and :func:`compare_arms`,
which adds the architecture-vs-dropping decomposition and the verdict on the paper's 2.5x
(Zhang & He 2020, https://arxiv.org/abs/2010.13369) drawn from the curve.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

Records = list[dict[str, Any]]

KEYS = ("wall", "flops", "samples")  # what "time to a loss" is counted in
TARGET_STEP = 0.1  # target losses every 0.1 nat along the baseline's curve
PLATEAU_ACCURACY = 0.15  # a baseline has left the unigram plateau at >= this masked-token accuracy ...
PLATEAU_MARGIN = 0.7  # ... and a validation loss >= this far below the unigram loss (issue 12)
ORDER_GAP = 0.02  # a model reads word order if shuffling its validation text costs >= this much accuracy
ACCURACY_TARGETS = (0.15, 0.2, 0.25, 0.3)  # masked-token accuracies whose time-to is reported
EVIDENCE_ACCURACY = 0.25  # an evidence run is long enough once every arm reaches this accuracy (issue 12)
PAPER_SPEEDUP = 2.5  # the paper's claim: 2.5x faster than Post-LN BERT to the same accuracy
REL_TOL = 0.2  # a measured speed-up agrees with the paper's within ±20 % (as pldrop.reporting.claims)


def read_metrics(path: str | Path) -> Records:
    """The records of a ``metrics.jsonl`` file, in order."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(ln) for ln in f if ln.strip()]


def eval_points(records: Records) -> Records:
    """The records that carry a (finite) validation result."""
    return [r for r in records if r.get("val_loss") is not None]


def time_to_loss(records: Records, target: float, key: str = "wall") -> float | None:
    """First ``key`` (training seconds by default) at which validation loss reaches ``target``.

    Linear interpolation between the two evaluations around the crossing; ``None`` if never
    (or if the records do not carry ``key``).

    >>> recs = [{"wall": 0, "val_loss": 8.0}, {"wall": 10, "val_loss": 6.0}, {"wall": 20, "val_loss": 5.0}]
    >>> time_to_loss(recs, 7.0), time_to_loss(recs, 5.0), time_to_loss(recs, 4.0)
    (5.0, 20.0, None)
    """
    prev = None
    for r in eval_points(records):
        if r["val_loss"] <= target:
            if r.get(key) is None:
                return None
            if prev is None or prev["val_loss"] == r["val_loss"]:
                return float(r[key])
            frac = (prev["val_loss"] - target) / (prev["val_loss"] - r["val_loss"])
            return float(prev[key] + frac * (r[key] - prev[key]))
        prev = r
    return None


def summarize(records: Records, num_layers: int) -> dict[str, Any]:
    """Per-run figures: time per sample, blocks run, final validation loss.

    ``time_per_sample_s`` is training time / samples over the whole run;
    ``steady_time_per_sample_s`` is the median over the second half of the steps (θ near θ̄).
    """
    last = records[-1]
    half = records[len(records) // 2:]
    evals = eval_points(records)
    probe = next((r for r in reversed(records) if r.get("val_accuracy_shuffled") is not None), {})
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
        # the word-order probe on the final model (evaluation.shuffle_order); None in older runs
        "final_val_accuracy_shuffled": probe.get("val_accuracy_shuffled"),
        "final_val_loss_shuffled": probe.get("val_loss_shuffled"),
    }


# --- small numeric helpers ------------------------------------------------------------------

def _ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``; ``None`` if either is missing or ``b`` is not positive."""
    return None if a is None or b is None or b <= 0 else a / b


def interval(values: Sequence[float | None], confidence: float = 0.95) -> dict[str, Any]:
    """Mean and a Student-t confidence interval over the values that are not ``None``.

    With one value the interval is that value's (``lo = hi = mean``, ``std`` None): no spread is
    measured. ``half = t_{(1+c)/2, n-1} · s / √n``.

    >>> r = interval([1.0, 2.0, 3.0])
    >>> r["mean"], r["std"], r["n"], round(r["lo"], 4), round(r["hi"], 4)
    (2.0, 1.0, 3, -0.4841, 4.4841)
    >>> interval([2.5, None])["lo"], interval([None])["mean"]
    (2.5, None)
    """
    vals = [float(v) for v in values if v is not None]
    n = len(vals)
    if n == 0:
        return {"mean": None, "std": None, "n": 0, "lo": None, "hi": None, "confidence": confidence}
    mean = statistics.fmean(vals)
    if n == 1:
        return {"mean": mean, "std": None, "n": 1, "lo": mean, "hi": mean, "confidence": confidence}
    from scipy.stats import t

    std = statistics.stdev(vals)
    half = float(t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "n": n, "lo": mean - half, "hi": mean + half, "confidence": confidence}


def ratio_interval(values: Sequence[float | None], confidence: float = 0.95) -> dict[str, Any]:
    """:func:`interval` of ratios (speed-ups), taken on their logarithms: ``mean`` is the geometric
    mean and ``[lo, hi]`` = exp(mean log ± t · s_log / √n), so the interval stays positive, is
    symmetric in the ratio's direction (a ``2x`` and its ``0.5x`` mirror), and the means keep products
    (architecture × dropping = total). ``std`` is the standard deviation of the logs.

    >>> r = ratio_interval([1.0, 4.0, 16.0])
    >>> r["mean"], r["n"], round(r["lo"], 3), round(r["hi"], 3)
    (4.0, 3, 0.128, 125.216)
    """
    vals = [float(v) for v in values if v is not None and v > 0]
    r = interval([math.log(v) for v in vals], confidence)
    if r["n"] == 0:
        return r
    return {**r, "mean": math.exp(r["mean"]), "lo": math.exp(r["lo"]), "hi": math.exp(r["hi"]), "log": True}


def geomean(values: Sequence[float | None]) -> float | None:
    """Geometric mean of the positive values (``None`` if there are none); the mean that keeps
    products of ratios products: ``geomean(a·b) = geomean(a)·geomean(b)`` over paired values.

    >>> geomean([1.0, 4.0]), geomean([None])
    (2.0, None)
    """
    vals = [v for v in values if v is not None and v > 0]
    return math.prod(vals) ** (1 / len(vals)) if vals else None


# --- the speed-up curve ---------------------------------------------------------------------

def default_targets(baseline: Records, step: float = TARGET_STEP, top: float | None = None) -> list[float]:
    """Target losses along the baseline's validation curve, highest first: every ``step`` (as
    multiples of it) from the first level clearly -- at least ``step / 10`` -- below the first
    validation loss (or below ``top``, e.g. the unigram loss, when that is lower) down to the
    baseline's best validation loss. (Below the first evaluation, so the baseline's time to
    every target is interpolated, never just its first evaluation's.)

    >>> recs = [{"val_loss": 7.46}, {"val_loss": 7.01}, {"val_loss": 6.72}]
    >>> default_targets(recs)
    [7.4, 7.3, 7.2, 7.1, 7.0, 6.9, 6.8]
    >>> default_targets(recs, top=7.05)
    [7.0, 6.9, 6.8]
    """
    evals = eval_points(baseline)
    if not evals:
        return []
    start = evals[0]["val_loss"] if top is None else min(evals[0]["val_loss"], top)
    best = min(r["val_loss"] for r in evals)
    hi = math.floor((start - step / 10) / step + 1e-9)
    lo = math.ceil(best / step - 1e-9)
    return [round(k * step, 10) for k in range(hi, lo - 1, -1)]


def speedup_curve(baseline_records: Records, arm_records: Records, targets: Sequence[float] | None = None,
                  keys: Sequence[str] = KEYS) -> list[dict[str, Any]]:
    """The speed-up of an arm over the baseline at each target loss.

    For each target, the training time (``wall``), counted FLOPs and samples at which each run's
    validation loss first reaches it (:func:`time_to_loss`: linear between evaluations), and the
    speed-up ``baseline / arm`` per key -- ``None`` where either never reached the target.

    Args:
        baseline_records, arm_records: ``metrics.jsonl`` records of the two runs.
        targets: target validation losses (default: :func:`default_targets` of the baseline).
        keys: what time is counted in (record keys).

    Returns:
        ``[{"target", "baseline": {key: x}, "arm": {key: x}, "speedup": {key: ratio}, "lower_bound",
        "upper_bound"}, ...]``, highest target (earliest in training) first. ``lower_bound``: the
        arm was at or below the target at its first evaluation, so it got there earlier than that
        evaluation and the speed-up is at least the one given (``upper_bound``: the same for the
        baseline; never with the default targets).

    >>> base = [{"wall": 0, "samples": 0, "val_loss": 8.0}, {"wall": 10, "samples": 100, "val_loss": 6.0}]
    >>> arm = [{"wall": 0, "samples": 0, "val_loss": 8.0}, {"wall": 5, "samples": 100, "val_loss": 6.0}]
    >>> [(r["target"], r["speedup"]["wall"], r["speedup"]["samples"]) for r in speedup_curve(base, arm, [7.0, 5.5])]
    [(7.0, 2.0, 1.0), (5.5, None, None)]
    """
    targets = default_targets(baseline_records) if targets is None else list(targets)
    first_b, first_a = (eval_points(r)[0]["val_loss"] if eval_points(r) else None
                        for r in (baseline_records, arm_records))
    rows = []
    for t in targets:
        b = {k: time_to_loss(baseline_records, t, k) for k in keys}
        a = {k: time_to_loss(arm_records, t, k) for k in keys}
        rows.append({"target": t, "baseline": b, "arm": a, "speedup": {k: _ratio(b[k], a[k]) for k in keys},
                     # a run already at the target at its first evaluation got there earlier than it says
                     "lower_bound": first_a is not None and first_a <= t,
                     "upper_bound": first_b is not None and first_b <= t})
    return rows


def curve_over_seeds(per_seed_curves: Sequence[Sequence[dict[str, Any]]], confidence: float = 0.95
                     ) -> list[dict[str, Any]]:
    """Speed-up curves of several seeds (each paired with its own baseline run) in one.

    Rows are matched by target; per key: the geometric mean speed-up over the seeds that reached
    the target with its Student-t interval on the logarithms where ≥ 2 did
    (:func:`ratio_interval`), and how many reached it; the times themselves get plain
    :func:`interval` s.

    Returns:
        ``[{"target", "seeds", "reached": {key: k}, "speedup": {key: interval}, "arm": {key:
        interval of the arm's time (FLOPs, samples) to the target}}, ...]``, highest target first.

    >>> c = lambda x: [{"target": 7.0, "baseline": {"wall": x}, "arm": {"wall": 1.0}, "speedup": {"wall": x}}]
    >>> r = curve_over_seeds([c(1.0), c(4.0), c(16.0)])[0]
    >>> r["speedup"]["wall"]["mean"], r["reached"]["wall"], round(r["speedup"]["wall"]["hi"], 3)
    (4.0, 3, 125.216)
    """
    by_target: dict[float, list[dict[str, Any]]] = {}
    for curve in per_seed_curves:
        for row in curve:
            by_target.setdefault(round(row["target"], 10), []).append(row)
    out = []
    for t in sorted(by_target, reverse=True):
        rows = by_target[t]
        keys = list(rows[0]["speedup"])
        out.append({
            "target": t, "seeds": len(rows),
            "reached": {k: sum(r["speedup"][k] is not None for r in rows) for k in keys},
            "speedup": {k: ratio_interval([r["speedup"][k] for r in rows], confidence) for k in keys},
            "arm": {k: interval([r["arm"][k] for r in rows], confidence) for k in keys},
            "baseline": {k: interval([r["baseline"][k] for r in rows], confidence) for k in keys},
            "lower_bound": any(r.get("lower_bound") for r in rows),
            "upper_bound": any(r.get("upper_bound") for r in rows),
        })
    return out


def trend(curve: Sequence[dict[str, Any]], key: str = "wall") -> dict[str, Any]:
    """How the mean speed-up moves as training goes on (lower targets come later): least-squares
    slope of speed-up against target loss, given per 0.1 nat of further training
    (``per_0.1 = -0.1 · slope``: positive means the speed-up grows), with its standard error.

    ``direction`` is ``grows`` / ``shrinks`` when the change is more than twice its standard
    error and moves the speed-up by ≥ 2 % of its mean over the targets' range, else ``no clear
    trend`` (with fewer than 3 reached targets: ``too few points``). Speed-ups that are only
    bounds (a run already past the target at its first evaluation) are left out: they would make
    an early speed-up look smaller than it is.

    ``extremes``: the highest and the lowest speed-up where they lie strictly between the ends and
    differ from both by ≥ 0.05 (a dip or a peak the ends and the slope hide).

    >>> rows = [{"target": t, "speedup": {"wall": {"mean": s}}} for t, s in [(7.0, 1.0), (6.9, 1.2), (6.8, 1.4)]]
    >>> r = trend(rows)
    >>> round(r["per_0.1"], 6), r["direction"], r["first"], r["last"], r["extremes"]
    (0.2, 'grows', 1.0, 1.4, [])
    >>> dip = [{"target": t, "speedup": {"wall": {"mean": s}}} for t, s in [(6.0, 1.6), (5.7, 0.56), (3.5, 1.06)]]
    >>> trend(dip)["extremes"]
    [{'kind': 'lowest', 'target': 5.7, 'speedup': 0.56}]
    """
    pts = [(r["target"], r["speedup"][key]["mean"]) for r in curve if r["speedup"][key]["mean"] is not None
           and not r.get("lower_bound") and not r.get("upper_bound")]  # bounds would fake a trend
    res: dict[str, Any] = {"key": key, "points": len(pts), "first": pts[0][1] if pts else None,
                           "last": pts[-1][1] if pts else None,
                           "first_target": pts[0][0] if pts else None, "last_target": pts[-1][0] if pts else None,
                           "slope": None, "per_0.1": None, "stderr_per_0.1": None, "extremes": []}
    # the highest and lowest speed-up where they lie between the first and the last target: a curve
    # that dips and recovers (or peaks) is not described by its ends or by a straight line
    for kind, pick in (("highest", max), ("lowest", min)):
        i = pick(range(len(pts)), key=lambda j: pts[j][1]) if pts else 0
        if 0 < i < len(pts) - 1 and abs(pts[i][1] - pts[0][1]) >= 0.05 and abs(pts[i][1] - pts[-1][1]) >= 0.05:
            res["extremes"].append({"kind": kind, "target": pts[i][0], "speedup": pts[i][1]})
    if len(pts) < 3:
        res["direction"] = "too few points"
        return res
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    if max(xs) == min(xs) or max(ys) == min(ys):
        res.update(slope=0.0, **{"per_0.1": 0.0, "stderr_per_0.1": 0.0}, direction="no clear trend")
        return res
    from scipy.stats import linregress

    fit = linregress(xs, ys)
    per, se = -0.1 * float(fit.slope), 0.1 * float(fit.stderr)
    res.update(slope=float(fit.slope), **{"per_0.1": per, "stderr_per_0.1": se})
    # a trend must stand out of the fit's noise (2 standard errors) and change the speed-up visibly
    # (by 2 % of its mean over the range of targets), not by rounding error
    visible = abs(per) * (max(xs) - min(xs)) / 0.1 >= 0.02 * abs(statistics.fmean(ys))
    res["direction"] = ("no clear trend" if not visible else "grows" if per > 2 * se
                        else "shrinks" if per < -2 * se else "no clear trend")
    return res


# --- several arms ---------------------------------------------------------------------------

def _per_seed(runs: Any) -> list[Records]:
    """An arm's runs as a list over seeds: accepts one run's records, a list of runs, or ``{seed: records}``."""
    if isinstance(runs, Mapping):
        return [list(r) for r in runs.values()]
    runs = list(runs)
    if runs and isinstance(runs[0], Mapping):
        return [runs]
    return [list(r) for r in runs]


def not_learned(plateau_: Mapping[str, Any]) -> str:
    """Why no claim is made when the baseline has not learned enough (:func:`plateau`'s ``left`` is False).

    >>> not_learned({"objective": "causal-lm", "min_accuracy": 0.15})
    "the baseline's next-token accuracy stayed below 0.15"
    """
    if plateau_.get("objective") == "causal-lm":
        return f"the baseline's next-token accuracy stayed below {plateau_['min_accuracy']:g}"
    return "the baseline did not leave the unigram plateau"


def plateau(final_loss: float | None, final_accuracy: float | None, unigram: Mapping[str, float] | None
            ) -> dict[str, Any]:
    """Has a model left the unigram plateau? Masked-token accuracy ≥ 0.15 and validation loss at
    least 0.7 below the unigram loss of the same tokenizer (the loss check is skipped, and said
    to be, when the unigram loss is unknown).

    >>> plateau(6.2, 0.18, {"loss": 7.0, "accuracy": 0.06})["left"], plateau(6.9, 0.06, {"loss": 7.0})["left"]
    (True, False)
    """
    u_loss = (unigram or {}).get("loss")
    acc_ok = final_accuracy is not None and final_accuracy >= PLATEAU_ACCURACY
    loss_ok = None if u_loss is None or final_loss is None else final_loss <= u_loss - PLATEAU_MARGIN
    return {"unigram_loss": u_loss, "unigram_accuracy": (unigram or {}).get("accuracy"),
            "final_loss": final_loss, "final_accuracy": final_accuracy,
            "below_unigram": None if loss_ok is None else u_loss - final_loss,
            "accuracy_ok": acc_ok, "loss_ok": loss_ok, "left": bool(acc_ok and loss_ok is not False),
            "min_accuracy": PLATEAU_ACCURACY, "margin": PLATEAU_MARGIN}


def _common_targets(baselines: list[Records], top: float | None) -> list[float]:
    """The default targets every seed's baseline reaches (so every target's mean is over all seeds)."""
    sets = [default_targets(b, top=top) for b in baselines]
    common = set(sets[0]).intersection(*sets[1:]) if sets else set()
    return sorted(common, reverse=True)


def _mean_summary(figs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("steps", "samples", "train_time_s", "flops", "time_per_sample_s", "steady_time_per_sample_s",
            "mean_blocks_run", "steady_blocks_run", "final_val_loss", "final_val_accuracy", "best_val_loss",
            "final_val_accuracy_shuffled", "final_val_loss_shuffled")
    return {k: interval([f.get(k) for f in figs])["mean"] for k in keys}


def _headline(curve: list[dict[str, Any]], key: str = "wall") -> dict[str, Any] | None:
    """The lowest target that every seed of the arm reached (latest in training), or None."""
    full = [r for r in curve if r["reached"][key] == r["seeds"] and r["seeds"] > 0]
    return full[-1] if full else None


def decompose(baseline: list[Records], preln: list[Records], pld: list[Records], targets: Sequence[float],
              keys: Sequence[str] = KEYS) -> list[dict[str, Any]]:
    """Speed-up of Pre-LN + PLD over the baseline split into two factors that multiply:
    ``architecture`` (Pre-LN and its learning rate vs the baseline) and ``dropping`` (Pre-LN + PLD
    vs Pre-LN): ``total = architecture · dropping`` per seed; over seeds, geometric means
    (which keep the product) of the seeds where all three reached the target.

    >>> run = lambda w: [{"wall": 0, "val_loss": 8.0}, {"wall": w, "val_loss": 6.0}]
    >>> d = decompose([run(12.0)], [run(4.0)], [run(3.0)], [7.0], keys=("wall",))[0]
    >>> d["architecture"]["wall"], d["dropping"]["wall"], d["total"]["wall"]
    (3.0, 1.3333333333333333, 4.0)
    """
    rows = []
    firsts = [eval_points(r)[0]["val_loss"] for runs in (baseline, preln, pld) for r in runs if eval_points(r)]
    for t in targets:
        row: dict[str, Any] = {"target": t, "architecture": {}, "dropping": {}, "total": {}, "seeds": {},
                               # some run was past the target at its first evaluation: its factors are bounds
                               "bound": any(f <= t for f in firsts)}
        for k in keys:
            per = []
            for b, p, d in zip(baseline, preln, pld):
                tb, tp, td = (time_to_loss(x, t, k) for x in (b, p, d))
                if None not in (tb, tp, td) and min(tb, tp, td) > 0:
                    per.append((tb / tp, tp / td, tb / td))
            row["seeds"][k] = len(per)
            for i, name in enumerate(("architecture", "dropping", "total")):
                row[name][k] = geomean([x[i] for x in per])
        rows.append(row)
    return rows


def time_to_accuracy(records: Records, target: float, key: str = "wall") -> float | None:
    """First ``key`` at which validation masked-token accuracy reaches ``target`` (at or above it);
    linear between the two evaluations around the crossing, as :func:`time_to_loss`.

    >>> recs = [{"wall": 0, "val_loss": 8.0, "val_accuracy": 0.0}, {"wall": 10, "val_loss": 6.0, "val_accuracy": 0.25}]
    >>> time_to_accuracy(recs, 0.125), time_to_accuracy(recs, 0.3)
    (5.0, None)
    """
    return time_to_loss(_accuracy_as_loss(records), -target, key)


def _accuracy_as_loss(records: Records) -> Records:
    """The evaluations with ``-val_accuracy`` as their ``val_loss``: lower is better, as for a loss."""
    return [{**r, "val_loss": -r["val_accuracy"]} for r in eval_points(records) if r.get("val_accuracy") is not None]


def accuracy_curve(baseline_records: Records, arm_records: Records,
                   targets: Sequence[float] = ACCURACY_TARGETS, keys: Sequence[str] = KEYS) -> list[dict[str, Any]]:
    """:func:`speedup_curve` at masked-token accuracy targets (lowest first, reached at or above):
    the quality the paper's 2.5x is about is a score, not a loss.

    >>> base = [{"wall": 0, "val_loss": 8.0, "val_accuracy": 0.05}, {"wall": 10, "val_loss": 6.0, "val_accuracy": 0.25}]
    >>> arm = [{"wall": 0, "val_loss": 8.0, "val_accuracy": 0.05}, {"wall": 4, "val_loss": 6.0, "val_accuracy": 0.25}]
    >>> [(r["target"], r["speedup"]["wall"]) for r in accuracy_curve(base, arm, [0.15, 0.3], keys=("wall",))]
    [(0.15, 2.5), (0.3, None)]
    """
    rows = speedup_curve(_accuracy_as_loss(baseline_records), _accuracy_as_loss(arm_records),
                         [-t for t in sorted(targets)], keys)
    return [{**r, "target": -r["target"]} for r in rows]


def compare_arms(records_by_arm: Mapping[str, Any], num_layers: int, baseline: str = "baseline",
                 unigram: Mapping[str, float] | None = None, preln: str = "preln", pld: str = "pld",
                 keys: Sequence[str] = KEYS, variants: bool = False,
                 train_seqs: Mapping[str, Sequence[int | None]] | None = None) -> dict[str, Any]:
    """Everything ``pldrop compare`` and the converge part of ``pldrop report`` say about a group of arms.

    Args:
        records_by_arm: ``{arm: records}`` for one seed, or ``{arm: [records per seed]}`` /
            ``{arm: {seed: records}}``; seeds are paired by position (every arm has the same seeds).
        num_layers: blocks per model (the bound on what skipping blocks can save).
        baseline: the reference arm (Post-LN BERT).
        unigram: ``{"loss", "accuracy"}`` of the tokenizer's unigram guesser, or None.
        preln, pld: the arms of the decomposition (Pre-LN without and with PLD).
        variants: every arm of the table (:mod:`pldrop.arms`) that drops blocks gets the PLD arm's
            verdict and decomposition: ``pld`` (or, without it, the first such arm) in ``verdict`` and
            ``decomposition``, the others in ``variants: {arm: {"verdict", "decomposition"}}`` (only
            present when there are others).
        train_seqs: ``{arm: [packed training rows of each seed's data]}`` (the run's ``pldrop.json``):
            each arm's ``epochs`` (mean over seeds, None where a seed's count is unknown) and ``train_seqs``.

    Returns:
        ``{"baseline", "arms": {arm: {"seeds", "summary" (means over seeds), "per_seed",
        "time_per_sample_ratio", "flops_per_sample_ratio", "saving_per_sample", "blocks_bound",
        ...}}, "targets", "curves": {arm: [curve_over_seeds rows]}, "headline": {arm: row},
        "plateau", "decomposition" (or None), "verdict", "accuracy": {"curves": {arm: time to each of
        ACCURACY_TARGETS, curve_over_seeds rows, lowest first}, "evidence_target", "evidence_reached": {arm:
        seeds that reached it}}}``.
    """
    runs = {arm: _per_seed(r) for arm, r in records_by_arm.items()}
    runs = {arm: [r for r in rs if r] for arm, rs in runs.items()}
    runs = {arm: rs for arm, rs in runs.items() if rs}  # an arm with no records (diverged at once) is left out
    if baseline not in runs:
        raise ValueError(f"baseline arm {baseline!r} is not among {list(runs)}")
    base = runs[baseline]
    seeds = min(len(v) for v in runs.values())
    figs = {arm: [summarize(r, num_layers) for r in rs] for arm, rs in runs.items()}
    arms: dict[str, Any] = {}
    for arm, fs in figs.items():
        paired = list(zip(fs, figs[baseline]))
        tps = [_ratio(f["time_per_sample_s"], b["time_per_sample_s"]) for f, b in paired]
        fps = [_ratio(_ratio(f["flops"], f["samples"]), _ratio(b["flops"], b["samples"])) for f, b in paired]
        s = _mean_summary(fs)
        arms[arm] = {
            "seeds": len(fs), "summary": s, "per_seed": fs,
            "time_per_sample_ratio": interval(tps)["mean"],
            "flops_per_sample_ratio": interval(fps)["mean"],
            "saving_per_sample": None if interval(tps)["mean"] is None else 1 - interval(tps)["mean"],
            "blocks_bound": 1 - s["mean_blocks_run"] / num_layers,
            "steady_blocks_bound": 1 - s["steady_blocks_run"] / num_layers,
        }
        if train_seqs is not None:
            n = list(train_seqs.get(arm) or [])[:len(fs)]
            per = [epochs(f["samples"], k) for f, k in zip(fs, n)] if len(n) == len(fs) else [None]
            arms[arm].update(train_seqs=n, epochs=None if None in per else statistics.fmean(per))
    for arm in runs:  # an arm that drops blocks against the arm with the same blocks that does not
        ref = same_blocks(arm, preln, pld)
        if ref is None and arm.startswith("postln"):
            ref = baseline  # Post-LN + PLD against Post-LN BERT
        if ref in runs and ref != arm and arms[arm]["blocks_bound"] > 1e-9:
            r = [_ratio(f["time_per_sample_s"], p["time_per_sample_s"]) for f, p in zip(figs[arm], figs[ref])]
            arms[arm].update(same_blocks_as=ref, saving_vs_same_blocks=1 - interval(r)["mean"])

    base_final = arms[baseline]["summary"]
    pl = plateau(base_final["final_val_loss"], base_final["final_val_accuracy"], unigram)
    from ..arms import BY_NAME

    if any(BY_NAME[a].causal for a in runs if a in BY_NAME):  # next-token accuracy; no unigram reference
        pl["objective"] = "causal-lm"
    targets = _common_targets(base, (unigram or {}).get("loss"))
    curves = {arm: curve_over_seeds([speedup_curve(b, a, targets, keys) for b, a in zip(base, rs)])
              for arm, rs in runs.items() if arm != baseline}
    headline = {arm: _headline(c) for arm, c in curves.items()}
    # time to each accuracy, lowest (earliest) first; the baseline against itself: its own times, speed-up 1
    acc = {arm: curve_over_seeds([accuracy_curve(b, a) for b, a in zip(base, rs)])[::-1] for arm, rs in runs.items()}
    def decomposition(arm: str) -> dict[str, Any] | None:
        if not (preln in runs and arm in runs and baseline not in (preln, arm)
                and (arm == pld or same_blocks(arm, preln, pld) == preln)):
            return None
        rows = decompose(base[:seeds], runs[preln][:seeds], runs[arm][:seeds], targets, keys)
        full = [r for r in rows if r["seeds"]["wall"] == seeds]
        return {"rows": rows, "headline": full[-1] if full else None, "seeds": seeds}

    others = dropping_arms(runs, baseline) if variants else []
    primary = pld if pld in runs or not others else others[0]
    res = {"baseline": baseline, "num_layers": num_layers, "seeds": seeds, "keys": list(keys), "arms": arms,
           "target_step": TARGET_STEP, "targets": targets, "curves": curves, "headline": headline, "plateau": pl,
           "unigram": unigram, "word_order": {arm: word_order(a["summary"]) for arm, a in arms.items()},
           "decomposition": decomposition(primary), "verdict": verdict(curves, pl, primary, base_final, baseline),
           "accuracy": {"curves": acc, "evidence_target": EVIDENCE_ACCURACY,
                        "evidence_reached": {arm: reached_accuracy(rs, EVIDENCE_ACCURACY) for arm, rs in runs.items()}}}
    if [a for a in others if a != primary]:
        res["variants"] = {a: {"verdict": verdict(curves, pl, a, base_final, baseline), "decomposition": decomposition(a)}
                           for a in others if a != primary}
    return res


def epochs(samples: float | None, train_seqs: int | None) -> float | None:
    """How many times a run saw its training data: samples seen × seq_len / training tokens, where
    the training tokens are the packed rows × seq_len -- so samples / rows. None if either is unknown.

    >>> epochs(2500, 1000), epochs(2500, None), epochs(None, 10)
    (2.5, None, None)
    """
    if samples is None or not train_seqs:
        return None
    return samples / train_seqs


def dropping_arms(arms, baseline: str) -> list[str]:
    """The arms of the table (:mod:`pldrop.arms`) that drop blocks, in order, the reference left out.

    >>> dropping_arms(["baseline", "preln", "pld", "pld-cooldown", "pld-uniform"], "baseline")
    ['pld', 'pld-cooldown']
    """
    from ..arms import BY_NAME

    return [a for a in arms if a != baseline and a in BY_NAME and BY_NAME[a].drops]


def reached_accuracy(runs: Sequence[Records], target: float = EVIDENCE_ACCURACY) -> int:
    """How many of an arm's runs (seeds) reached validation accuracy ``target`` at some evaluation.

    >>> reached_accuracy([[{"val_loss": 5.0, "val_accuracy": 0.26}], [{"val_loss": 5.5, "val_accuracy": 0.2}]])
    1
    """
    return sum(any(r.get("val_accuracy") is not None and r["val_accuracy"] >= target for r in eval_points(x))
               for x in runs)


def word_order(summary: Mapping[str, Any], min_gap: float = ORDER_GAP) -> dict[str, Any] | None:
    """What the word-order probe says of a run (or of seeds' means): its final masked-token accuracy
    in order and with each validation sequence shuffled, and whether the gap shows it reads word
    order (``uses_order``) or predicts from the bag of tokens alone. None without a probe.

    >>> word_order({"final_val_accuracy": 0.136, "final_val_accuracy_shuffled": 0.135})["uses_order"]
    False
    >>> round(word_order({"final_val_accuracy": 0.31, "final_val_accuracy_shuffled": 0.12})["gap"], 2)
    0.19
    """
    acc, shuf = summary.get("final_val_accuracy"), summary.get("final_val_accuracy_shuffled")
    if acc is None or shuf is None:
        return None
    return {"accuracy": acc, "shuffled": shuf, "gap": acc - shuf, "uses_order": acc - shuf >= min_gap,
            "min_gap": min_gap}


def same_blocks(arm: str, preln: str = "preln", pld: str = "pld") -> str | None:
    """The arm without PLD built from the same blocks as ``arm`` (Pre-LN for the Pre-LN arms that drop
    blocks, :mod:`pldrop.arms`, and for names ``pld-…`` outside the table), or None.

    >>> same_blocks("pld"), same_blocks("pld-uniform"), same_blocks("postln-tuned")
    ('preln', 'preln', None)
    """
    from ..arms import full_depth_of

    ref = full_depth_of(arm, preln, pld)
    return ref if ref == preln else None


def verdict(curves: Mapping[str, list[dict[str, Any]]], plateau_: dict[str, Any], pld: str = "pld",
            base_final: Mapping[str, Any] | None = None, reference: str | None = None) -> dict[str, Any]:
    """The paper's 2.5x against the PLD arm's speed-up curve.

    ``claim`` is ``no claim`` when the baseline never left the unigram plateau (a speed-up there
    says nothing about PLD) or there is no PLD arm; ``not reached`` when PLD reached none of the
    targets; else ``agrees`` / ``smaller`` / ``larger`` for the speed-up at the lowest target every
    seed reached (its interval and ±20 % of 2.5 overlap, or not); ``reference``: the arm the others are
    measured against (when it is the PLD arm, ``why`` says so). ``trend`` says whether the
    speed-up grows or shrinks as training goes on; ``helps``: whether PLD is faster at all (True:
    the interval is above 1x; False: the mean is not; None: the interval straddles 1x).
    """
    out: dict[str, Any] = {"paper": PAPER_SPEEDUP, "rel_tol": REL_TOL, "arm": pld}
    curve = curves.get(pld)
    if curve is None:
        why = "no PLD arm" if pld != reference else (f"the PLD arm is the reference the others are measured against "
                                                     f"(the first of --arms), so its speed-up is not measured; "
                                                     f"list it after another arm")
        return {**out, "claim": "no claim", "why": why, "trend": None, "helps": None, "at": None}
    out["trend"] = trend(curve)
    head = _headline(curve)
    reached_any = [r for r in curve if r["reached"]["wall"]]
    out["at"] = head
    out["lowest_reached"] = reached_any[-1]["target"] if reached_any else None
    out["lowest_target"] = curve[-1]["target"] if curve else None
    if not plateau_["left"]:
        out.update(claim="no claim", helps=None, why=not_learned(plateau_))
    elif not curve:
        out.update(claim="no claim", why="the baseline's validation loss never fell clearly below where it started",
                   helps=None)
    elif head is None:
        out.update(claim="not reached", why="PLD did not reach any target in every seed", helps=False)
    else:
        sp = head["speedup"]["wall"]
        lo, hi = PAPER_SPEEDUP * (1 - REL_TOL), PAPER_SPEEDUP * (1 + REL_TOL)
        out["claim"] = ("agrees" if sp["hi"] >= lo and sp["lo"] <= hi else "smaller" if sp["mean"] < lo else "larger")
        out["why"] = None
        # faster (the whole interval above 1x), not faster (mean at or below 1x), or not clear (None)
        out["helps"] = True if sp["lo"] > 1 else False if sp["mean"] <= 1 else None
    return out
