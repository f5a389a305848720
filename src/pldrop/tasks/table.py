"""A GLUE-style results table: one row per model, one column per task metric, and an Average.

Input: ``{model: {task: {metric: [value per seed]}}}`` with values as fractions and metric keys as
:func:`pldrop.tasks.evaluate_splits` returns them. Output: ``table.md`` (scores ×100 as GLUE
prints them, ``mean ± std`` over seeds when there are several) and ``table.json`` (the raw
fractions, means, sample standard deviations and task scores).

The Average column follows GLUE: each task's score is the mean of its primary metrics (MRPC and
QQP: F1 and accuracy; STS-B: Pearson and Spearman; MNLI: matched and mismatched accuracy),
and the average is the mean of the task scores.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from pldrop.tasks.base import TaskSpec

Results = Mapping[str, Mapping[str, Mapping[str, Sequence[float] | float]]]

_SHORT = {"accuracy": "acc", "f1": "F1", "f1_macro": "macro-F1", "mcc": "MCC", "pearson": "Pearson",
          "spearman": "Spearman"}


def _known(specs: Mapping[str, TaskSpec] | None) -> dict[str, TaskSpec]:
    from pldrop.tasks.registry import TASKS

    return {**TASKS, **(specs or {})}


def _values(v: Sequence[float] | float) -> list[float]:
    return [float(x) for x in v] if isinstance(v, (list, tuple, np.ndarray)) else [float(v)]


def _label(spec: TaskSpec | None, task: str, key: str) -> str:
    if spec is None:
        return f"{task} {key}"
    for split, suffix in spec.dev_splits:
        for metric in spec.metrics:
            if spec.metric_key(split, metric) == key:
                name = f"{spec.display}-{suffix}" if suffix else spec.display
                return f"{name} {_SHORT.get(metric, metric)}"
    return f"{spec.display} {key}"


def summarize(results: Results, specs: Mapping[str, TaskSpec] | None = None) -> dict:
    """The table as data: columns, and per model each cell's mean/std/n, task scores, Average.

    Args:
        results: ``{model: {task: {metric: [values over seeds]}}}`` (fractions).
        specs: specs of tasks that are not built in (your own files); a task without a spec
            shows all its metrics and scores their mean.

    Returns:
        ``{"columns": [{"task", "metric", "label"}], "models": {model: {"cells": {task: {metric:
        {"values", "mean", "std", "n"}}}, "scores": {task: score}, "average": float | None,
        "complete": bool}}}``; ``std`` is the sample standard deviation (``None`` for one seed).
    """
    known = _known(specs)
    tasks = {t for per_model in results.values() for t in per_model}
    order = [t for t in known if t in tasks] + sorted(tasks - known.keys())
    columns = []
    for task in order:
        present = {k for per_model in results.values() for k in per_model.get(task, {})}
        spec = known.get(task)
        keys = [k for k in spec.metric_keys() if k in present] if spec else sorted(present)
        keys += sorted(present - set(keys))
        columns += [{"task": task, "metric": k, "label": _label(spec, task, k)} for k in keys]

    models = {}
    for model, per_model in results.items():
        cells: dict[str, dict[str, dict]] = {}
        for task, metrics in per_model.items():
            for key, raw in metrics.items():
                vals = _values(raw)
                if not vals:
                    continue
                std = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
                cells.setdefault(task, {})[key] = {"values": vals, "mean": float(np.mean(vals)), "std": std,
                                                   "n": len(vals)}
        scores = {}
        for task in order:
            got = cells.get(task, {})
            spec = known.get(task)
            primary = spec.primary if spec else sorted(got)
            if primary and all(k in got for k in primary):
                scores[task] = float(np.mean([got[k]["mean"] for k in primary]))
        average = float(np.mean(list(scores.values()))) if scores else None
        models[model] = {"cells": cells, "scores": scores, "average": average, "complete": len(scores) == len(order)}
    return {"columns": columns, "models": models}


def _fmt(mean: float, std: float | None) -> str:
    if math.isnan(mean):
        return "nan"
    return f"{100 * mean:.1f}" if std is None else f"{100 * mean:.1f} ± {100 * std:.1f}"


def format_table(results: Results, specs: Mapping[str, TaskSpec] | None = None) -> str:
    """The markdown table (see the module docstring), ending with a line explaining it.

    >>> print(format_table({"base": {"rte": {"accuracy": [0.6, 0.7]}, "cola": {"mcc": [0.5]}}}))
    | Model | CoLA MCC | RTE acc | Average |
    |:--|--:|--:|--:|
    | base | 50.0 | 65.0 ± 7.1 | 57.5 |
    <BLANKLINE>
    Scores ×100; mean ± sample std over seeds where there are several. Average: mean over tasks of each task's primary metric(s), averaged within the task (GLUE's rule).
    """
    table = summarize(results, specs)
    cols = table["columns"]
    lines = ["| " + " | ".join(["Model", *(c["label"] for c in cols), "Average"]) + " |",
             "|:--|" + "--:|" * (len(cols) + 1)]
    partial = False
    for model, row in table["models"].items():
        cells = []
        for c in cols:
            cell = row["cells"].get(c["task"], {}).get(c["metric"])
            cells.append("–" if cell is None else _fmt(cell["mean"], cell["std"]))
        avg = "–" if row["average"] is None else _fmt(row["average"], None)
        if row["average"] is not None and not row["complete"]:
            avg, partial = avg + "†", True
        lines.append("| " + " | ".join([model, *cells, avg]) + " |")
    lines += ["", "Scores ×100; mean ± sample std over seeds where there are several. Average: mean over tasks "
                  "of each task's primary metric(s), averaged within the task (GLUE's rule)."]
    if partial:
        lines.append("† over the tasks this model has results for only.")
    return "\n".join(lines)


def write_table(results: Results, out_dir: str | Path, specs: Mapping[str, TaskSpec] | None = None) -> tuple[Path, Path]:
    """Write ``table.md`` and ``table.json`` into ``out_dir`` (created); return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "table.md", out / "table.json"
    md.write_text(format_table(results, specs) + "\n", encoding="utf-8")
    js.write_text(json.dumps(summarize(results, specs), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return md, js
