"""What a fine-tuning run leaves in its output folder, and how it is read back.

::

    OUT/
      results.json                      see below
      predictions_<split>.tsv           one seed: index, label, prediction per example
      predictions_<split>_seed<S>.tsv   several seeds: one file per seed
      model/, model_seed<S>/            the best checkpoint (``--save-model``)

``results.json`` holds ``metrics`` (dev metric name -> value, the mean over seeds), ``std``
(sample standard deviation over seeds, ``null`` for one seed), ``score`` (the task score,
:func:`pldrop.tasks.task_score`), ``test_metrics`` / ``test_std`` for tasks with a labelled
test split (the offline recipes), ``per_seed`` (each seed's metrics, best step, steps, time and
dev history), ``predictions`` (the files, by seed and split) and the ``settings`` it ran with.
Labels and predictions in the TSVs are label names for classification and floats for
regression; ``index`` is the example's row in its source (:class:`pldrop.tasks.Example`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from pldrop.errors import UserError

RESULTS = "results.json"
_OURS = ("results.json", "predictions_*.tsv", "model", "model_seed*")


def _ours(out: Path) -> list[Path]:
    return sorted({p for pattern in _OURS for p in out.glob(pattern)})


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an output folder that holds results unless ``overwrite``; then clear our files.

    Only what a run writes (``results.json``, ``predictions_*.tsv``, ``model*/``) is removed;
    anything else in the folder is left alone.
    """
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, not a folder")
    if not out.exists():
        return
    ours = _ours(out)
    if not ours:
        return
    if not overwrite:
        raise UserError(f"--out {out}: already holds results ({ours[0].name}); pass --overwrite to replace them "
                        f"or choose another folder")
    for p in ours:
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (``None`` for a single value).

    >>> mean_std([0.8, 0.9, 1.0])
    (0.9, 0.1)
    >>> mean_std([0.5])
    (0.5, None)
    """
    mean = round(float(np.mean(values)), 12)
    return mean, (round(float(np.std(values, ddof=1)), 12) if len(values) > 1 else None)


def _aggregate(per_seed: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, float | None]]:
    means, stds = {}, {}
    for key in per_seed[0] if per_seed else []:
        means[key], stds[key] = mean_std([m[key] for m in per_seed])
    return means, stds


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_predictions(path: Path, indices: list[int], gold: list, predictions: np.ndarray,
                      labels: list[str] | None) -> None:
    """One TSV row per example: ``index``, ``label``, ``prediction`` (names, or floats)."""
    def show(v) -> str:
        return labels[int(v)] if labels is not None else repr(float(v))

    rows = ["index\tlabel\tprediction"]
    rows += [f"{i}\t{show(g)}\t{show(p)}" for i, g, p in zip(indices, gold, predictions)]
    _atomic_write(path, "\n".join(rows) + "\n")


def write_results(out: Path, data, src, settings: dict[str, Any], runs: list) -> dict[str, Any]:
    """Write ``results.json`` and the prediction files of ``runs`` (one ``SeedRun`` per seed).

    Called after every seed, so an interrupted multi-seed run keeps the seeds it finished.
    """
    from pldrop.tasks.classifier import classifier_class

    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, str]] = {}
    several = len(settings["seeds"]) > 1
    splits = {**data.dev, **data.test}
    for run in runs:
        files[str(run.seed)] = {}
        for split, examples in splits.items():
            name = f"predictions_{split}_seed{run.seed}.tsv" if several else f"predictions_{split}.tsv"
            write_predictions(out / name, [e.index for e in examples], [e.label for e in examples],
                              run.predictions[split], data.labels)
            files[str(run.seed)][split] = name
    metrics, std = _aggregate([r.metrics for r in runs])
    test_metrics, test_std = _aggregate([r.test_metrics for r in runs])
    score, score_std = mean_std([r.score for r in runs])
    results = {
        "task": data.name,
        "display": data.spec.display,
        "model": settings["model"],
        "architecture": classifier_class(src.config).__name__,
        "pretrain": src.pretrain,
        "labels": data.labels,
        "primary": list(data.spec.primary),
        "seeds": [r.seed for r in runs],
        "metrics": metrics,
        "std": std,
        "score": score,
        "score_std": score_std,
        "test_metrics": test_metrics,
        "test_std": test_std,
        "examples": {"train": len(data.train), **{s: len(e) for s, e in splits.items()}},
        "per_seed": {str(r.seed): {"metrics": r.metrics, "score": r.score, "test_metrics": r.test_metrics,
                                   "best_step": r.best_step, "steps": r.steps, "train_time_s": round(r.train_time_s, 3),
                                   "history": r.history} for r in runs},
        "predictions": files,
        "settings": settings,
        "complete": len(runs) == len(settings["seeds"]),
    }
    _atomic_write(out / RESULTS, json.dumps(results, indent=1) + "\n")
    return results


def read_results(folder: str | Path) -> dict[str, Any]:
    """The ``results.json`` of a fine-tuning output folder."""
    path = Path(folder) / RESULTS
    if not path.is_file():
        raise UserError(f"{path}: not found (not a finished pldrop finetune folder)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None


def _fmt(values: dict[str, float], std: dict[str, float | None]) -> str:
    parts = []
    for key, mean in values.items():
        s = std.get(key)
        parts.append(f"{key} {100 * mean:.1f}" + (f" ± {100 * s:.1f}" if s is not None else ""))
    return ", ".join(parts)


def summary_lines(results: dict[str, Any], out: str | Path) -> list[str]:
    """A short human summary: dev (and test) metrics ×100, mean ± std over seeds.

    >>> r = {"task": "sst2", "seeds": [1, 2], "metrics": {"accuracy": 0.9}, "std": {"accuracy": 0.01},
    ...      "test_metrics": {}, "test_std": {}, "per_seed": {"1": {"best_step": 10}, "2": {"best_step": 20}}}
    >>> print("\\n".join(summary_lines(r, "out")))
    sst2 dev: accuracy 90.0 ± 1.0 (2 seeds: 1 2; best steps 10 20)
    results in out/results.json
    """
    n = len(results["seeds"])
    seeds = " ".join(str(s) for s in results["seeds"])
    steps = " ".join(str(v["best_step"]) for v in results["per_seed"].values())
    which = f"{n} seeds: {seeds}; best steps {steps}" if n > 1 else f"seed {seeds}; best step {steps}"
    lines = [f"{results['task']} dev: {_fmt(results['metrics'], results['std'])} ({which})"]
    if results.get("test_metrics"):
        lines.append(f"{results['task']} test: {_fmt(results['test_metrics'], results['test_std'])} "
                     f"(best dev checkpoint)")
    lines.append(f"results in {Path(out) / RESULTS}")
    return lines
