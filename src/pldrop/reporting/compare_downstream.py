"""The ``downstream`` block of a comparison's ``results.json`` and its report section (pure functions).

`pldrop compare --downstream TASK ...` fine-tunes every run's final model on each task with
`pldrop evaluate`'s default protocol (:mod:`pldrop.train.downstream`) and keeps each run's dev
score (``score`` of its fine-tuning folder's ``results.json``). The block is::

    {task: {"metric": str, "runs": {run: score}, "arms": {arm: {"mean", "ci95": [lo, hi], "n"}},
            "diffs": {arm: {"reference", "mean", "ci95", "n"}}}}

``arms`` is each arm's mean over its seeds with a Student-t 95 % interval
(:func:`pldrop.train.analysis.interval`); ``diffs`` is each dropping arm minus the Pre-LN arm
(its ``full_depth``), paired by seed.

With `--downstream-depths` a task's block also holds ``"by_depth": {"0.75": {"blocks": K, "runs",
"arms", "diffs"}}``: the same figures for the models cut to that fraction of their blocks (K kept,
strategy ``top``); the full depth stays where it was, so blocks without ``by_depth`` read as before.
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

    def figures(runs):
        per_arm = {arm: [runs.get(n) for n in names(arm)] for arm in arms}
        diffs = {}
        for arm in arms:
            ref = arm_of(arm).full_depth if arm_of(arm).drops else None
            if ref in arms:
                d = [None if a is None or b is None else a - b for a, b in zip(per_arm[arm], per_arm[ref])]
                diffs[arm] = {"reference": ref, **_agg(d)}
        return {"runs": dict(runs), "arms": {arm: _agg(v) for arm, v in per_arm.items()}, "diffs": diffs}

    block = {}
    for task, sc in scores.items():
        block[task] = {"metric": sc["metric"], **figures(sc["runs"])}
        if sc.get("by_depth"):
            block[task]["by_depth"] = {key: {"blocks": d["blocks"], **figures(d["runs"])}
                                       for key, d in sc["by_depth"].items()}
    return block


def rescore(block: dict[str, Any], arms: list[str], seeds: list[int]) -> dict[str, Any]:
    """The block recomputed from its runs' scores (``--report-only``: the figures of this version)."""
    def scores(b):
        by_depth = {k: {"blocks": d["blocks"], "runs": d["runs"]} for k, d in (b.get("by_depth") or {}).items()}
        return {"metric": b["metric"], "runs": b["runs"], **({"by_depth": by_depth} if by_depth else {})}

    return downstream_block({t: scores(b) for t, b in block.items()}, arms, seeds)


def check_downstream(block: Any) -> None:
    """Raise ValueError naming the first part of a ``downstream`` block the report cannot use.

    >>> check_downstream({"t": {"metric": "accuracy", "runs": {"pld": 0.5}}})
    >>> check_downstream({"t": {"metric": "accuracy", "runs": {"pld": "high"}}})
    Traceback (most recent call last):
    ValueError: downstream.t.runs.pld is 'high', not a score
    >>> check_downstream({"t": {"metric": "accuracy", "runs": {}, "by_depth": {"0.5": {"blocks": 0, "runs": {}}}}})
    Traceback (most recent call last):
    ValueError: downstream.t.by_depth.0.5.blocks is 0, not a number of blocks
    """
    import math

    def check_runs(runs, where):
        for run, s in runs.items():
            if s is not None and not (isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s)):
                raise ValueError(f"{where}.runs.{run} is {s!r}, not a score")

    if not isinstance(block, dict):
        raise ValueError("downstream is not a mapping of tasks")
    for task, b in block.items():
        if not (isinstance(b, dict) and isinstance(b.get("metric"), str) and isinstance(b.get("runs"), dict)):
            raise ValueError(f"downstream.{task} is not a task's scores")
        check_runs(b["runs"], f"downstream.{task}")
        by_depth = b.get("by_depth")
        if by_depth is None:
            continue
        if not isinstance(by_depth, dict):
            raise ValueError(f"downstream.{task}.by_depth is not a mapping of depths")
        for key, d in by_depth.items():
            where = f"downstream.{task}.by_depth.{key}"
            try:
                ok = 0 < float(key) < 1
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"{where} is not a depth in (0, 1)")
            if not (isinstance(d, dict) and isinstance(d.get("runs"), dict)):
                raise ValueError(f"{where} is not a depth's scores")
            k = d.get("blocks")
            if not (isinstance(k, int) and not isinstance(k, bool) and k >= 1):
                raise ValueError(f"{where}.blocks is {k!r}, not a number of blocks")
            check_runs(d["runs"], where)


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


def time_ratio(depth: dict[str, Any] | None, arm: str, blocks: int) -> float | None:
    """The time per sequence of ``arm`` at ``blocks`` blocks over its full-depth time, from results.json's
    ``depth`` block (None where it has none).

    >>> d = {"models": {"pld": {"points": [{"keep": 2, "time_ratio": 1.0}, {"keep": 1, "time_ratio": 0.55}]}}}
    >>> time_ratio(d, "pld", 1), time_ratio(d, "preln", 1), time_ratio(None, "pld", 1)
    (0.55, None, None)
    """
    curve = ((depth or {}).get("models") or {}).get(arm) or {}
    for p in curve.get("points") or []:
        if isinstance(p, dict) and p.get("keep") == blocks:
            r = p.get("time_ratio")
            return r if isinstance(r, (int, float)) and not isinstance(r, bool) else None
    return None


def kept_share(full: dict[str, Any] | None, cut: dict[str, Any] | None) -> float | None:
    """The share of the full-depth mean score a cut model keeps (ratio of the means over seeds).

    >>> kept_share({"mean": 0.5}, {"mean": 0.25}), kept_share({"mean": 0.0}, {"mean": 0.6}), kept_share(None, {})
    (0.5, None, None)
    """
    a, b = (full or {}).get("mean"), (cut or {}).get("mean")
    return None if a is None or b is None or a <= 0 else b / a


def render_depths(task: str, b: dict[str, Any], arms: list[str], labels: dict[str, str],
                  depth: dict[str, Any] | None = None) -> list[str]:
    """A task's "at reduced depth" table (arm x depth: dev score x100 [95 % interval], and the time per
    sequence relative to full depth where the depth curves measured it) and a sentence per arm: the
    share of its full-depth score kept at each depth."""
    keys = sorted(b["by_depth"], key=float, reverse=True)
    head = ["arm", "full"] + [f"{k} ({_blocks(b['by_depth'][k]['blocks'])})" for k in keys]

    def cell(agg, ratio):
        return _pct(agg) + (f" · {ratio:.2f}× time" if ratio is not None else "")

    rows, sentences = [], []
    for arm in arms:
        full = b["arms"].get(arm)
        row = [labels.get(arm, arm), cell(full, time_ratio(depth, arm, _full_blocks(depth, arm)))]
        parts = []
        for k in keys:
            d = b["by_depth"][k]
            cut = d["arms"].get(arm)
            row.append(cell(cut, time_ratio(depth, arm, d["blocks"])))
            share = kept_share(full, cut)
            parts.append(f"{'–' if share is None else num(100 * share, 1)} % at {k} ({_blocks(d['blocks'])})")
        rows.append(row)
        sentences.append(f"{labels.get(arm, arm)} keeps of its full-depth {task} score: " + ", ".join(parts) + ".")
    return [f"### {task} ({b['metric']}) at reduced depth", ""] + table(head, rows) + [""] + sentences + [""]


def _blocks(n: int) -> str:
    """A number of blocks in words.

    >>> _blocks(1), _blocks(6)
    ('1 block', '6 blocks')
    """
    return f"{n} block" + ("" if n == 1 else "s")


def _full_blocks(depth: dict[str, Any] | None, arm: str) -> int | None:
    return (((depth or {}).get("models") or {}).get(arm) or {}).get("num_layers")


def render_downstream(block: dict[str, Any], arms: list[str], labels: dict[str, str],
                      depth: dict[str, Any] | None = None) -> list[str]:
    """report.md's "Downstream" section: task x arm, mean [95 % interval] x100 and seeds; a sentence
    per dropping arm: its score minus Pre-LN's; with ``by_depth``, a table per task of each arm's score
    at each depth (:func:`render_depths`, times from ``depth``, results.json's depth curves)."""
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
    lines.append("")
    if any(b.get("by_depth") for b in block.values()):
        lines += ["Each run's final model also cut to a fraction of its blocks (the top blocks removed, "
                  "`pldrop shrink`'s `top` strategy; folders in `downstream/<run>/depth-<K>/`) and fine-tuned with the "
                  "same protocol. Dev scores x100, mean over seeds [95 % t-interval]; the time per sequence at "
                  "that depth over the full model's, from the depth curves above, where they were measured.", ""]
        for task, b in block.items():
            if b.get("by_depth"):
                lines += render_depths(task, b, arms, labels, depth)
    return lines
