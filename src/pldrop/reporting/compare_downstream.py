"""The ``downstream`` block of a comparison's ``results.json`` and its report section (pure functions).

`pldrop compare --downstream TASK ...` fine-tunes every run's final model on each task with
`pldrop evaluate`'s default protocol (:mod:`pldrop.train.downstream`) and keeps each run's dev
score (``score`` of its fine-tuning folder's ``results.json``). The block is::

    {task: {"metric": str, "runs": {run: score}, "arms": {arm: {"mean", "ci95": [lo, hi], "n"}},
            "diffs": {arm: {"reference", "mean", "ci95", "n"}}}}

``arms`` is each arm's mean over its seeds with a Student-t 95 % interval
(:func:`pldrop.train.analysis.interval`); ``diffs`` is each dropping arm minus the Pre-LN arm
(its ``full_depth``), paired by seed.
"""

from __future__ import annotations

from typing import Any

from ..train.analysis import interval
from .fmt import num, table


def _agg(values: list[float | None]) -> dict[str, Any]:
    """Mean, 95 % interval and count over seeds.

    >>> _agg([0.5, 0.7])["n"], _agg([0.5])["ci95"], _agg([None])["mean"]
    (2, [0.5, 0.5], None)
    """
    r = interval(values)
    return {"mean": r["mean"], "ci95": None if r["lo"] is None else [r["lo"], r["hi"]], "n": r["n"]}


def downstream_block(scores: dict[str, dict[str, Any]], arms: list[str], seeds: list[int]) -> dict[str, Any]:
    """The block from each task's ``{"metric", "runs": {run: score}}``, run names as
    :func:`pldrop.train.compare.run_name` gives them.

    >>> b = downstream_block({"t": {"metric": "accuracy", "runs": {"preln": 0.5, "pld": 0.75}}}, ["preln", "pld"], [0])
    >>> b["t"]["arms"]["pld"], b["t"]["diffs"]["pld"]["mean"]
    ({'mean': 0.75, 'ci95': [0.75, 0.75], 'n': 1}, 0.25)
    """
    from ..arms import arm_of
    from ..train.compare import run_name

    def names(arm):
        return [run_name(arm, s, len(seeds)) for s in seeds]

    block = {}
    for task, sc in scores.items():
        runs = sc["runs"]
        per_arm = {arm: [runs.get(n) for n in names(arm)] for arm in arms}
        diffs = {}
        for arm in arms:
            ref = arm_of(arm).full_depth if arm_of(arm).drops else None
            if ref in arms:
                d = [None if a is None or b is None else a - b for a, b in zip(per_arm[arm], per_arm[ref])]
                diffs[arm] = {"reference": ref, **_agg(d)}
        block[task] = {"metric": sc["metric"], "runs": dict(runs),
                       "arms": {arm: _agg(v) for arm, v in per_arm.items()}, "diffs": diffs}
    return block


def rescore(block: dict[str, Any], arms: list[str], seeds: list[int]) -> dict[str, Any]:
    """The block recomputed from its runs' scores (``--report-only``: the figures of this version)."""
    return downstream_block({t: {"metric": b["metric"], "runs": b["runs"]} for t, b in block.items()}, arms, seeds)


def check_downstream(block: Any) -> None:
    """Raise ValueError naming the first part of a ``downstream`` block the report cannot use.

    >>> check_downstream({"t": {"metric": "accuracy", "runs": {"pld": 0.5}}})
    >>> check_downstream({"t": {"metric": "accuracy", "runs": {"pld": "high"}}})
    Traceback (most recent call last):
    ValueError: downstream.t.runs.pld is 'high', not a score
    """
    import math

    if not isinstance(block, dict):
        raise ValueError("downstream is not a mapping of tasks")
    for task, b in block.items():
        if not (isinstance(b, dict) and isinstance(b.get("metric"), str) and isinstance(b.get("runs"), dict)):
            raise ValueError(f"downstream.{task} is not a task's scores")
        for run, s in b["runs"].items():
            if s is not None and not (isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s)):
                raise ValueError(f"downstream.{task}.runs.{run} is {s!r}, not a score")


def _pct(agg: dict[str, Any] | None, signed: bool = False) -> str:
    """A score as a percentage with its interval: ``81.2 [79.0, 83.4]``.

    >>> _pct({"mean": 0.8, "ci95": [0.75, 0.85], "n": 2}), _pct({"mean": 0.8, "ci95": [0.8, 0.8], "n": 1})
    ('80.0 [75.0, 85.0]', '80.0')
    >>> _pct({"mean": -0.01, "ci95": [-0.02, 0.0], "n": 3}, signed=True)
    '-1.0 [-2.0, +0.0]'
    """
    if not agg or agg.get("mean") is None:
        return "–"
    f = (lambda x: f"{100 * x:+.1f}") if signed else (lambda x: num(100 * x, 1))
    if agg.get("n", 1) < 2 or not agg.get("ci95"):
        return f(agg["mean"])
    lo, hi = agg["ci95"]
    return f"{f(agg['mean'])} [{f(lo)}, {f(hi)}]"


def summary_line(task: str, b: dict[str, Any], arms: list[str], labels: dict[str, str]) -> str:
    """What `pldrop compare` prints per task.

    >>> summary_line("trec6", {"metric": "accuracy", "arms": {"pld": {"mean": 0.5, "ci95": [0.5, 0.5], "n": 1}}},
    ...              ["pld"], {"pld": "PLD"})
    'downstream trec6 (accuracy, dev x100): PLD 50.0'
    """
    return (f"downstream {task} ({b['metric']}, dev x100): "
            + ", ".join(f"{labels.get(a, a)} {_pct(b['arms'].get(a))}" for a in arms))


def render_downstream(block: dict[str, Any], arms: list[str], labels: dict[str, str]) -> list[str]:
    """report.md's "Downstream" section: task x arm, mean [95 % interval] x100 and seeds; a sentence
    per dropping arm: its score minus Pre-LN's."""
    lines = ["## Downstream", "",
             "Each run's final model fine-tuned with `pldrop evaluate`'s default protocol (the learning-rate grid of "
             "the model's width, the best dev score kept; folders in `downstream/<run>/<task>/`). Dev scores x100, "
             "mean over pretraining seeds [95 % t-interval], n seeds.", ""]
    rows = []
    for task, b in block.items():
        rows.append([f"{task} ({b['metric']})"] + [f"{_pct(b['arms'].get(a))} (n={(b['arms'].get(a) or {}).get('n', 0)})"
                                                   for a in arms])
    lines += table(["task"] + [labels.get(a, a) for a in arms], rows) + [""]
    for arm in arms:
        parts = [f"{task} {_pct(b['diffs'][arm], signed=True)}" for task, b in block.items() if arm in b.get("diffs", {})]
        if parts:
            ref = next(b["diffs"][arm]["reference"] for b in block.values() if arm in b.get("diffs", {}))
            lines.append(f"{labels.get(arm, arm)} minus {labels.get(ref, ref)} (points, paired by seed): "
                         + ", ".join(parts) + ".")
    return lines + [""]
