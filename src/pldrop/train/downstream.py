"""`pldrop compare --downstream`: every run's final model fine-tuned on tasks, through `pldrop evaluate`.

The fine-tuning is `pldrop evaluate`'s (its default protocol: :mod:`pldrop.tasks.cli_evaluate`),
run into ``<comparison>/downstream/<run>/<task>/`` and recorded in the comparison's manifest, so
``--overwrite`` may replace it; ``--resume`` passes ``--resume`` on, keeping the (run, task) pairs
that finished. The scores are read back from those folders' ``results.json``
(:mod:`pldrop.reporting.compare_downstream` makes the block and the section).

``--downstream-depths 1 0.75 0.5`` also fine-tunes each run's final model cut to a fraction of its
L blocks (strategy ``top``: :mod:`pldrop.prune`): the cut model is written to
``downstream/<run>/depth-<K>/model/`` (K blocks kept) and fine-tuned by the same `pldrop evaluate`
protocol into ``downstream/<run>/depth-<K>/tuned/model/<task>/``; all of it recorded in the manifest.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from ..errors import UserError

DOWNSTREAM = "downstream"


def parse_depths(values: list[str] | None) -> list[float]:
    """``--downstream-depths``: fractions of the model's L blocks, each in (0, 1]; the full depth
    (1) always comes first, each fraction once, then from deepest to shallowest.

    >>> parse_depths(None), parse_depths(["0.5", "1", "0.75", "0.5"]), parse_depths(["0.5"])
    ([1.0], [1.0, 0.75, 0.5], [1.0, 0.5])
    >>> parse_depths(["1.5"])
    Traceback (most recent call last):
    ...
    pldrop.errors.UserError: --downstream-depths 1.5: give fractions of the model's blocks in (0, 1], e.g. 1 0.75 0.5
    """
    import math

    depths = []
    for v in values or []:
        try:
            d = float(v)
        except (TypeError, ValueError):
            d = math.nan
        if not (math.isfinite(d) and 0 < d <= 1):
            raise UserError(f"--downstream-depths {v}: give fractions of the model's blocks in (0, 1], "
                            "e.g. 1 0.75 0.5")
        depths.append(d)
    return sorted({1.0, *depths}, reverse=True)


def depth_key(depth: float) -> str:
    """The key of a depth in results.json's ``by_depth``.

    >>> depth_key(0.75), depth_key(0.5), depth_key(1 / 3)
    ('0.75', '0.5', '0.333333')
    """
    return f"{depth:g}"


def shrunk_models(work: Path, names: list[str], depths: list[float], log=print) -> dict[str, dict[str, Path]]:
    """Each run's final model cut to each depth < 1 (strategy ``top``), written once to
    ``downstream/<run>/depth-<K>/model/`` (a folder whose ``shrink.json`` is there is kept: a resumed
    comparison). Returns ``{depth key: {run: model folder}}``. Call it inside a :func:`recording`
    of the downstream folder, so what it writes is pldrop's."""
    import json
    import shutil

    from ..prune import block_list, check_keep, kept_top, shrink_model
    from ..tasks.classifier import _quiet_transformers
    from .checkpoint import atomic_write_text
    from .trained import TOKENIZER_FILES, load_trained

    out: dict[str, dict[str, Path]] = {depth_key(d): {} for d in depths if d < 1}
    for n in names:
        tm = None
        for d in depths:
            if d >= 1:
                continue
            if tm is None:
                tm = load_trained(Path(work) / n, "--out")
            L = len(block_list(tm.model)[1])
            k = check_keep(d, L)
            folder = Path(work) / DOWNSTREAM / n / f"depth-{k}" / "model"
            out[depth_key(d)][n] = folder
            if (folder / "shrink.json").is_file():
                continue
            kept = kept_top(L, k)
            small = shrink_model(tm.model, kept)  # a copy; the loaded model is untouched
            folder.mkdir(parents=True, exist_ok=True)
            with _quiet_transformers():
                small.save_pretrained(str(folder))
            for name in TOKENIZER_FILES:
                if (tm.path / name).is_file():
                    shutil.copy2(tm.path / name, folder / name)
            info = {"source": str((Path(work) / n).resolve()), "strategy": "top", "num_layers": L, "keep": k,
                    "depth": d, "kept": kept, "dropped": list(range(k, L))}
            atomic_write_text(folder / "shrink.json", json.dumps(info, indent=1) + "\n")  # last: the folder is whole
            log(f"downstream: {n} cut to {k} of {L} blocks (top) in {folder}", flush=True)
    return out


def check_tasks(tasks: list[str], data: str | None, cache_dir: str | None) -> None:
    """Each task loads before any training: a name that is no task is one line, and the offline
    recipes' data is fetched into the cache now, so a network failure does not waste a training run."""
    from ..tasks.cli_evaluate import task_data_arg
    from ..tasks.registry import load_task

    for task in dict.fromkeys(tasks):
        try:
            load_task(task, task_data_arg(task, data), cache_dir=cache_dir)
        except UserError as e:
            raise UserError(f"--downstream {task}: {e}") from None


def evaluate_argv(work: Path, names: list[str], tasks: list[str], data: str | None = None,
                  max_steps: int | None = None, device: str | None = None, cache_dir: str | None = None) -> list[str]:
    """The `pldrop evaluate` command line that fine-tunes the runs ``names`` of the comparison in ``work``
    (model names are the run folders' names, so each lands in ``downstream/<run>/<task>/``)."""
    out = Path(work) / DOWNSTREAM
    argv = ["evaluate", "--models", *[str(Path(work) / n) for n in names], "--tasks", *tasks, "--out", str(out),
            "--no-progress"]
    argv += ["--data", data] if data else []
    argv += ["--max-steps", str(max_steps)] if max_steps is not None else []
    argv += ["--device", device] if device else []
    argv += ["--cache-dir", cache_dir] if cache_dir else []
    if out.is_dir() and any(out.iterdir()):
        argv.append("--resume")  # a comparison resumed during its fine-tuning: finished (run, task) pairs are kept
    return argv


def depth_argv(model: Path, tasks: list[str], data: str | None = None, max_steps: int | None = None,
               device: str | None = None, cache_dir: str | None = None) -> list[str]:
    """The `pldrop evaluate` command line that fine-tunes one cut model ``downstream/<run>/depth-<K>/model``
    into ``downstream/<run>/depth-<K>/tuned/model/<task>/`` (the same protocol as the full models)."""
    out = Path(model).parent / "tuned"
    argv = ["evaluate", "--models", str(model), "--tasks", *tasks, "--out", str(out), "--no-progress"]
    argv += ["--data", data] if data else []
    argv += ["--max-steps", str(max_steps)] if max_steps is not None else []
    argv += ["--device", device] if device else []
    argv += ["--cache-dir", cache_dir] if cache_dir else []
    if out.is_dir() and any(out.iterdir()):
        argv.append("--resume")
    return argv


def _evaluate(work: Path, argv: list[str], log) -> None:
    from ..cli import main
    from .loop import Interrupted

    log(f"downstream: pldrop {' '.join(argv)}", flush=True)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        rc = main(argv)
    finally:
        for s, h in handlers.items():  # evaluate sets its own
            signal.signal(s, h)
    if rc == 130:
        raise Interrupted("SIGINT", "interrupted while fine-tuning; continue with pldrop compare --resume --out "
                                    f"{work} (finished (run, task) pairs are kept)")
    if rc != 0:
        raise UserError(f"downstream: `pldrop evaluate` ended with exit code {rc}; see its message above")


def fine_tune(work: Path, names: list[str], tasks: list[str], data: str | None = None, max_steps: int | None = None,
              device: str | None = None, cache_dir: str | None = None, log=print,
              depths: list[float] | None = None) -> dict[str, dict[str, Any]]:
    """Run `pldrop evaluate` on the comparison's runs (and, for each of ``depths`` below 1, on their
    cut models); return each task's ``{"metric", "runs": {run: dev score}}``, with ``"by_depth":
    {depth key: {"blocks": K, "runs": {run: score}}}`` when there are depths below 1. Raises
    :class:`~pldrop.train.loop.Interrupted` on a signal (exit 130 of evaluate)."""
    from .rundir import recording

    with recording(Path(work) / DOWNSTREAM, recursive=True):  # what evaluate and the cuts write is pldrop's
        _evaluate(work, evaluate_argv(work, names, tasks, data, max_steps, device, cache_dir), log)
        cut = shrunk_models(work, names, depths or [1.0], log)
        for models in cut.values():
            for model in models.values():
                _evaluate(work, depth_argv(model, tasks, data, max_steps, device, cache_dir), log)
    scores = read_scores(work, names, tasks)
    for key, models in cut.items():
        for task in scores:
            depth_scores = read_scores(work, names, [task], {n: m.parent / "tuned" / "model" for n, m in models.items()})
            blocks = {int(m.parent.name.split("-", 1)[1]) for m in models.values()}
            scores[task].setdefault("by_depth", {})[key] = {"blocks": min(blocks), "runs": depth_scores[task]["runs"]}
    return scores


def read_scores(work: Path, names: list[str], tasks: list[str],
                folders: dict[str, Path] | None = None) -> dict[str, dict[str, Any]]:
    """Each task's metric name and each run's dev score from ``downstream/<run>/<task>/results.json``
    (``folders``: run -> the folder holding its task folders, in place of ``downstream/<run>``)."""
    from ..tasks.results import read_results

    scores: dict[str, dict[str, Any]] = {}
    for task in dict.fromkeys(tasks):
        runs, metric = {}, None
        for n in names:
            res = read_results(((folders or {}).get(n) or Path(work) / DOWNSTREAM / n) / task)
            runs[n] = res.get("score")
            metric = metric or " & ".join(res.get("primary") or []) or "score"
        scores[task] = {"metric": metric, "runs": runs}
    return scores
