"""What a fine-tuning run leaves in its output folder, and how it is read back.

::

    OUT/
      results.json                      see below
      predictions_<split>.tsv           one seed: index, label, prediction per example
      predictions_<split>_seed<S>.tsv   several seeds: one file per seed
      predictions_<split>_lr<LR>[_seed<S>].tsv   no --lr: one file per rate of the grid (and seed)
      model/, model_seed<S>/            the best checkpoint (``--save-model``; of the chosen rate)

``results.json`` holds ``metrics`` (dev metric name -> value, the mean over seeds), ``std``
(sample standard deviation over seeds, ``null`` for one seed), ``score`` (the task score,
:func:`pldrop.tasks.task_score`), ``test_metrics`` / ``test_std`` for tasks with a labelled
test split (the offline recipes), ``per_seed`` (each seed's metrics, best step, steps, time and
dev history), ``predictions`` (the files, by seed and split), ``files`` (every entry of the
folder the run wrote: the only ones ``--overwrite`` deletes) and the ``settings`` it ran with.

Without ``--lr`` the top-level figures are those of the chosen rate (``lr``), and ``lr_grid``
holds every rate's: ``{"rule", "rates", "chosen", "diverged", "by_rate": {"<lr>": {"score",
"score_std", "metrics", "test_metrics", "per_seed": {seed: {"score", "metrics", "test_metrics",
"best_step"}}, "predictions": {seed: {split: file}}}}}``; each rate's scores can be recomputed
from its prediction files.
Labels and predictions in the TSVs are label names for classification and floats for
regression; ``index`` is the example's row in its source (:class:`pldrop.tasks.Example`).
"""

from __future__ import annotations

import json
import os
import shutil
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import numpy as np

from pldrop.errors import UserError

RESULTS = "results.json"
_OURS = ("results.json", "predictions_*.tsv", "model", "model_seed*", "model_lr*")
"""Names of what a run writes into its folder (``model*_lr*``: a grid's checkpoints until it ends)."""


def _ours(out: Path) -> list[Path]:
    return sorted({p for pattern in _OURS for p in out.glob(pattern)})


def _listed(out: Path) -> list[str]:
    """What the ``results.json`` in ``out`` says the run wrote (older files: its predictions and
    model folders), plus ``results.json`` itself."""
    names = {RESULTS}
    try:
        prev = json.loads((out / RESULTS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return sorted(names)
    if not isinstance(prev, dict):
        return sorted(names)
    if isinstance(prev.get("files"), list):
        names.update(str(f) for f in prev["files"])
    else:
        for by_split in (prev.get("predictions") or {}).values():
            names.update(str(f) for f in (by_split or {}).values())
        settings = prev.get("settings") or {}
        if settings.get("save_model"):
            seeds = settings.get("seeds") or []
            names.update(["model"] if len(seeds) == 1 else [f"model_seed{s}" for s in seeds])
    # one entry of the folder named as pldrop names its output: never a path out of it, never
    # another file a damaged or edited results.json might list
    return sorted(n for n in names if "/" not in n and "\\" not in n and any(fnmatch(n, p) for p in _OURS))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def plan_out(out: Path, overwrite: bool) -> list[str] | None:
    """Check the output folder; delete nothing (that waits until every input is checked).

    Returns:
        ``None`` when ``out`` holds no results (the run writes into it directly), else the
        names of the entries the old run wrote, which the new run replaces (``overwrite``).

    Raises:
        UserError: ``out`` is a file; it holds results and not ``overwrite``; or it holds an
            entry named like pldrop's output that its ``results.json`` does not list (pldrop
            deletes only what it wrote).
    """
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, not a folder")
    if not out.exists():
        return None
    for stale in out.glob(".finetune-tmp-*"):  # staging folders of killed runs: ours by name
        pid = stale.name.rsplit("-", 1)[-1]
        if not (pid.isdigit() and _alive(int(pid))):
            shutil.rmtree(stale, ignore_errors=True)
    ours = _ours(out)
    if not ours:
        return None
    if not overwrite:
        raise UserError(f"--out {out}: already holds results ({ours[0].name}); pass --overwrite to replace them "
                        f"or choose another folder")
    listed = [n for n in _listed(out) if (out / n).exists() or (out / n).is_symlink()]
    strangers = [p.name for p in ours if p.name not in listed]
    if strangers:
        raise UserError(f"--out {out}: holds {strangers[0]}, which no results.json there lists as written by "
                        f"pldrop, and --overwrite deletes only what pldrop wrote; move it or choose another "
                        f"folder")
    return listed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def swap_in(stage: Path, out: Path, old: list[str]) -> None:
    """Move a finished run from ``stage`` into ``out``, replacing the old run's entries ``old``;
    ``results.json`` moves last, so ``out`` holds a readable run until the end."""
    new = sorted(p.name for p in stage.iterdir())
    for name in new:
        if name == RESULTS:
            continue
        target = out / name
        if target.exists() or target.is_symlink():
            _remove(target)  # one of the old run's (plan_out refused any other)
        os.replace(stage / name, target)
    for name in old:
        if name not in new and name != RESULTS:
            _remove(out / name)
    if (stage / RESULTS).is_file():
        os.replace(stage / RESULTS, out / RESULTS)
    shutil.rmtree(stage, ignore_errors=True)


def check_out(out: Path, overwrite: bool) -> None:
    """:func:`plan_out`, then delete what the old run wrote (for callers that check their
    inputs first)."""
    for name in plan_out(out, overwrite) or []:
        _remove(out / name)


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


def prediction_name(split: str, seed: int, several_seeds: bool, lr: float | None = None) -> str:
    """``predictions_<split>[_lr<LR>][_seed<S>].tsv``.

    >>> prediction_name("dev", 1, False), prediction_name("dev", 1, True, 5e-4)
    ('predictions_dev.tsv', 'predictions_dev_lr0.0005_seed1.tsv')
    """
    from pldrop.tasks.lr import lr_name

    return (f"predictions_{split}" + (f"_lr{lr_name(lr)}" if lr is not None else "")
            + (f"_seed{seed}" if several_seeds else "") + ".tsv")


def _write_runs(out: Path, data, runs: list, several: bool, lr: float | None) -> dict[str, dict[str, str]]:
    files: dict[str, dict[str, str]] = {}
    splits = {**data.dev, **data.test}
    for run in runs:
        files[str(run.seed)] = {}
        for split, examples in splits.items():
            name = prediction_name(split, run.seed, several, lr)
            write_predictions(out / name, [e.index for e in examples], [e.label for e in examples],
                              run.predictions[split], data.labels)
            files[str(run.seed)][split] = name
    return files


def _model_name(seed: int, several: bool, lr: float | None = None) -> str:
    from pldrop.tasks.lr import lr_name

    return ("model" if not several else f"model_seed{seed}") + (f"_lr{lr_name(lr)}" if lr is not None else "")


def _per_seed(runs: list) -> dict[str, Any]:
    return {str(r.seed): {"metrics": r.metrics, "score": r.score, "test_metrics": r.test_metrics,
                          "best_step": r.best_step, "steps": r.steps, "train_time_s": round(r.train_time_s, 3),
                          "history": r.history} for r in runs}


def write_results(out: Path, data, src, settings: dict[str, Any], runs, diverged: dict | None = None,
                  final: bool = False) -> dict[str, Any]:
    """Write ``results.json`` and the prediction files.

    Called after every seed, so an interrupted run keeps the seeds it finished.

    Args:
        runs: one ``SeedRun`` per seed, or ``{lr: [SeedRun, ...]}`` for a learning-rate grid
            (the top-level figures are then those of the chosen rate).
        diverged: ``{lr: message}`` for rates of the grid whose loss became NaN.
        final: the grid is done: the chosen rate's saved checkpoints become ``model*/`` and
            the other rates' are deleted.
    """
    from pldrop.tasks.classifier import classifier_class
    from pldrop.tasks.finetune import choose_lr
    from pldrop.tasks.lr import lr_name

    out.mkdir(parents=True, exist_ok=True)
    seeds = settings["seeds"]
    several = len(seeds) > 1
    save = settings.get("save_model", False)
    grid = runs if isinstance(runs, dict) else None
    written: list[str] = [RESULTS]
    if grid is None:
        chosen, files = settings["lr"], _write_runs(out, data, runs, several, None)
        written += [f for by_split in files.values() for f in by_split.values()]
        written += [_model_name(r.seed, several) for r in runs if save]
        complete = len(runs) == len(seeds)
    else:
        diverged = diverged or {}
        chosen = choose_lr(grid, len(seeds))
        runs = grid[chosen]
        by_rate = {}
        for lr, lr_runs in grid.items():
            lr_files = _write_runs(out, data, lr_runs, several, lr)
            written += [f for by_split in lr_files.values() for f in by_split.values()]
            if lr == chosen:
                files = lr_files
            if not lr_runs:
                by_rate[lr_name(lr)] = {"diverged": diverged.get(lr), "per_seed": {}, "predictions": {}}
                continue
            metrics, std = _aggregate([r.metrics for r in lr_runs])
            test_metrics, test_std = _aggregate([r.test_metrics for r in lr_runs])
            score, score_std = mean_std([r.score for r in lr_runs])
            by_rate[lr_name(lr)] = {
                "score": score, "score_std": score_std, "metrics": metrics, "std": std,
                "test_metrics": test_metrics, "test_std": test_std, "diverged": diverged.get(lr),
                "per_seed": {str(r.seed): {"score": r.score, "metrics": r.metrics, "test_metrics": r.test_metrics,
                                           "best_step": r.best_step} for r in lr_runs},
                "predictions": lr_files,
            }
            if save:
                for r in lr_runs:
                    staged = _model_name(r.seed, several, lr)
                    if final and lr == chosen:
                        os.replace(out / staged, out / _model_name(r.seed, several))
                    elif final:
                        shutil.rmtree(out / staged, ignore_errors=True)
                    else:
                        written.append(staged)
        if save and final:
            written += [_model_name(r.seed, several) for r in runs]
        complete = all(len(v) == len(seeds) or lr in diverged for lr, v in grid.items())
        grid_section = {"rule": settings.get("lr_rule"), "rates": [float(r) for r in grid], "chosen": chosen,
                        "diverged": {lr_name(k): v for k, v in diverged.items()}, "by_rate": by_rate}
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
        "lr": chosen,
        "metrics": metrics,
        "std": std,
        "score": score,
        "score_std": score_std,
        "test_metrics": test_metrics,
        "test_std": test_std,
        "examples": {"train": len(data.train), **{s: len(e) for s, e in {**data.dev, **data.test}.items()}},
        "per_seed": _per_seed(runs),
        "predictions": files,
        "lr_grid": grid_section if grid is not None else None,
        "files": sorted(set(written)),
        "settings": settings,
        "complete": complete,
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
    grid = results.get("lr_grid")
    if grid:
        from pldrop.tasks.lr import lr_name

        scores = [f"{k} {100 * v['score']:.1f}" if "score" in v else f"{k} diverged"
                  for k, v in grid["by_rate"].items()]
        lines.append(f"{results['task']} lr {lr_name(grid['chosen'])} kept; dev score by lr: {', '.join(scores)}")
    if results.get("test_metrics"):
        lines.append(f"{results['task']} test: {_fmt(results['test_metrics'], results['test_std'])} "
                     f"(best dev checkpoint)")
    lines.append(f"results in {Path(out) / RESULTS}")
    return lines
