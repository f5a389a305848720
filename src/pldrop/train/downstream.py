"""`pldrop compare --downstream`: every run's final model fine-tuned on tasks, through `pldrop evaluate`.

The fine-tuning is `pldrop evaluate`'s (its default protocol: :mod:`pldrop.tasks.cli_evaluate`),
run into ``<comparison>/downstream/<run>/<task>/`` and recorded in the comparison's manifest, so
``--overwrite`` may replace it; ``--resume`` passes ``--resume`` on, keeping the (run, task) pairs
that finished. The scores are read back from those folders' ``results.json``
(:mod:`pldrop.reporting.compare_downstream` makes the block and the section).
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from ..errors import UserError

DOWNSTREAM = "downstream"


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


def fine_tune(work: Path, names: list[str], tasks: list[str], data: str | None = None, max_steps: int | None = None,
              device: str | None = None, cache_dir: str | None = None, log=print) -> dict[str, dict[str, Any]]:
    """Run `pldrop evaluate` on the comparison's runs; return each task's ``{"metric", "runs": {run: dev
    score}}``. Raises :class:`~pldrop.train.loop.Interrupted` on a signal (exit 130 of evaluate)."""
    from ..cli import main
    from .loop import Interrupted
    from .rundir import recording

    argv = evaluate_argv(work, names, tasks, data, max_steps, device, cache_dir)
    log(f"downstream: pldrop {' '.join(argv)}", flush=True)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with recording(Path(work) / DOWNSTREAM, recursive=True):  # what evaluate writes is pldrop's
            rc = main(argv)
    finally:
        for s, h in handlers.items():  # evaluate sets its own
            signal.signal(s, h)
    if rc == 130:
        raise Interrupted("SIGINT", "interrupted while fine-tuning; continue with pldrop compare --resume --out "
                                    f"{work} (finished (run, task) pairs are kept)")
    if rc != 0:
        raise UserError(f"downstream: `pldrop evaluate` ended with exit code {rc}; see its message above")
    return read_scores(work, names, tasks)


def read_scores(work: Path, names: list[str], tasks: list[str]) -> dict[str, dict[str, Any]]:
    """Each task's metric name and each run's dev score from ``downstream/<run>/<task>/results.json``."""
    from ..tasks.results import read_results

    scores: dict[str, dict[str, Any]] = {}
    for task in dict.fromkeys(tasks):
        runs, metric = {}, None
        for n in names:
            res = read_results(Path(work) / DOWNSTREAM / n / task)
            runs[n] = res.get("score")
            metric = metric or " & ".join(res.get("primary") or []) or "score"
        scores[task] = {"metric": metric, "runs": runs}
    return scores
