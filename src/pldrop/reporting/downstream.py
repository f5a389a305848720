"""Downstream at equal samples and at equal wall-clock, through `pldrop evaluate`.

Three pretrained checkpoints, all seed 0 on the shared corpus:

- the Post-LN baseline at the tuned rate, from the convergence runs;
- Pre-LN + PLD trained for the baseline's samples (*equal samples*);
- Pre-LN + PLD trained for the baseline's minutes (*equal wall-clock*).

With a minutes budget the converge PLD run is the equal wall-clock one and an extra run with
``max_samples`` = the baseline's samples gives equal samples; with a steps budget it is the
other way round (an extra run with ``max_minutes`` = the baseline's training time). Each
checkpoint is fine-tuned on every task by `pldrop evaluate`; scores are read back from the
fine-tuning folders' ``results.json`` (the test split where every task has one, else dev).

Unless a learning rate is given, every (checkpoint, task) is fine-tuned at each rate of the
grid for the model's width (:mod:`pldrop.tasks.lr`) and the best dev run kept: the protocol of
the paper (and BERT) behind its GLUE-parity claim. The kept rates are in the section's ``lr``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import stats
from .protocol import PRELN_LR
from .runs import RunSpec, Runner, spec_from_dict

ROLES = {"baseline": "Post-LN @ tuned lr", "equal-samples": "PLD, equal samples", "equal-time": "PLD, equal wall-clock"}


@dataclass
class DownstreamSettings:
    """Fine-tuning knobs (see ``pldrop finetune --help``).

    Args:
        tasks: task names: offline recipes (``trec6``, ``sms-spam``, ``movie-polarity``,
            ``bbc-topic``), GLUE tasks, or your own with ``data``.
        data: ``--data`` of `pldrop evaluate` for your own tasks.
        seeds, epochs, batch_size, max_length: fine-tuning settings.
        max_steps: optimizer steps per fine-tuning run; overrides ``epochs`` (``None``: epochs).
        lr: one fixed learning rate; ``None`` (default) = the grid of the model's width, the
            best dev run kept (``pldrop finetune``'s default).
    """

    tasks: list[str] = field(default_factory=lambda: ["trec6", "sms-spam"])
    data: str | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    epochs: int = 2
    lr: float | None = None
    batch_size: int = 32
    max_length: int = 64
    max_steps: int | None = None


def task_scores(results: dict[str, Any], split: str) -> dict[str, float | None]:
    """Per fine-tuning seed, the task's score on ``split`` (``dev``: the best-checkpoint score;
    ``test``: the mean of the primary metrics on the test split).

    >>> r = {"primary": ["f1"], "per_seed": {"0": {"score": 0.9, "test_metrics": {"f1": 0.8}}}}
    >>> task_scores(r, "dev"), task_scores(r, "test")
    ({'0': 0.9}, {'0': 0.8})
    """
    out: dict[str, float | None] = {}
    for seed, run in results["per_seed"].items():
        if split == "dev":
            out[seed] = run["score"]
        else:
            tm = run.get("test_metrics") or {}
            vals = [tm.get(k) for k in results["primary"]]
            out[seed] = sum(vals) / len(vals) if vals and None not in vals else None
    return out


def figures(root: Path, models: dict[str, Any], tasks: list[str]) -> dict[str, Any]:
    """Scores per model (role), task and fine-tuning seed, the average over tasks, and the
    PLD-minus-baseline differences (paired by fine-tuning seed), from the results.json files."""
    from ..tasks.results import read_results

    results = {role: {t: read_results(root / m["eval_path"] / t) for t in tasks} for role, m in models.items()}
    split = "test" if all(r[t].get("test_metrics") for r in results.values() for t in tasks) else "dev"
    scores: dict[str, Any] = {}
    for role, per_task in results.items():
        per = {t: task_scores(per_task[t], split) for t in tasks}
        seeds = sorted(set.intersection(*(set(v) for v in per.values())))
        avg = {s: (sum(per[t][s] for t in tasks) / len(tasks)
                   if all(per[t][s] is not None for t in tasks) else None) for s in seeds}
        scores[role] = {"tasks": {t: {"per_seed": per[t], **stats.mean_std(per[t].values())} for t in tasks},
                        "average": {"per_seed": avg, **stats.mean_std(avg.values())}}
    diffs = {}
    for role in ("equal-samples", "equal-time"):
        if role not in scores:
            continue
        d = {"average": stats.by_seed(_diff, scores[role]["average"]["per_seed"],
                                      scores["baseline"]["average"]["per_seed"])}
        d.update({t: stats.by_seed(_diff, scores[role]["tasks"][t]["per_seed"],
                                   scores["baseline"]["tasks"][t]["per_seed"]) for t in tasks})
        diffs[role] = {k: {"per_seed": v, **stats.mean_std(v.values())} for k, v in d.items()}
    return {"split": split, "scores": scores, "diffs": diffs, "lr": learning_rates(results)}


def learning_rates(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The rates each (role, task) was fine-tuned at: the grid searched (``None`` for a fixed
    rate) and the rate kept.

    >>> r = {"baseline": {"trec6": {"lr": 5e-4, "lr_grid": {"rates": [1e-4, 5e-4, 2e-3]}}}}
    >>> learning_rates(r)
    {'grid': [0.0001, 0.0005, 0.002], 'kept': {'baseline': {'trec6': 0.0005}}}
    """
    grids = {tuple((r.get("lr_grid") or {}).get("rates") or ()) for per_task in results.values()
             for r in per_task.values()}
    grid = list(next(iter(grids))) if len(grids) == 1 and () not in grids else None
    kept = {role: {t: r.get("lr", r.get("settings", {}).get("lr")) for t, r in per_task.items()}
            for role, per_task in results.items()}
    return {"grid": grid, "kept": kept}


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def run_downstream(runner: Runner, converge: dict[str, Any], settings: DownstreamSettings, out: Path,
                   resume: bool = False, threads: int | None = None, progress: bool = False,
                   log=print) -> dict[str, Any]:
    """Pretrain what is missing, fine-tune the three checkpoints, return the downstream section."""
    from ..cli import main
    from ..errors import UserError
    from ..tasks.cli_evaluate import model_names

    base_run = converge["arms"]["postln-tuned"]["runs"]["0"]
    if base_run["status"] != "done":
        raise UserError("downstream: the Post-LN seed-0 run diverged; nothing to compare against")
    base_spec = spec_from_dict(base_run["spec"])
    pld_spec = spec_from_dict(converge["arms"]["pld"]["runs"]["0"]["spec"])
    f = base_run["figures"]
    if base_spec.max_minutes is not None:  # converge at equal minutes: add equal samples
        specs = {"baseline": base_spec, "equal-time": pld_spec,
                 "equal-samples": RunSpec("pld", PRELN_LR, 0, max_samples=int(f["samples"]))}
    else:  # converge at equal steps (= equal samples): add equal wall-clock
        specs = {"baseline": base_spec, "equal-samples": pld_spec,
                 "equal-time": RunSpec("pld", PRELN_LR, 0, max_minutes=round(f["train_time_s"] / 60, 6))}
    models: dict[str, Any] = {}
    for role in ("baseline", "equal-samples", "equal-time"):
        spec = specs[role]
        res = runner.run(spec, need_weights=True)
        if res["status"] != "done":
            raise UserError(f"downstream: {spec.describe()} diverged; nothing to fine-tune")
        res["path"] = f"{runner.root.name}/{spec.key}"
        models[role] = res
    from ..train.analysis import read_metrics

    root = out.parent
    folders = [str(root / models[r]["path"]) for r in models]
    for role, name in zip(models, model_names(folders)):
        m = models[role]
        m["label"] = ROLES[role]
        m["eval_path"] = f"{out.name}/{name}"
        m["figures"] = stats.run_figures(read_metrics(root / m["path"] / "metrics.jsonl"), converge["num_layers"])
    s = settings
    argv = ["evaluate", "--models", *folders, "--tasks", *s.tasks, "--out", str(out), "--seeds", *map(str, s.seeds),
            "--epochs", str(s.epochs), "--batch-size", str(s.batch_size), "--max-length", str(s.max_length)]
    argv += ["--lr", f"{s.lr:g}"] if s.lr is not None else []
    argv += ["--max-steps", str(s.max_steps)] if s.max_steps is not None else []
    argv += ["--data", s.data] if s.data else []
    argv += ["--cache-dir", runner.base["data"]["cache_dir"]] if runner.base["data"]["cache_dir"] else []
    argv += ["--threads", str(threads)] if threads else []
    argv += [] if progress else ["--no-progress"]
    if resume and out.is_dir() and any(out.iterdir()):
        argv.append("--resume")
    log(f"downstream: pldrop {' '.join(argv)}")
    from ..train.rundir import recording

    with recording(out, recursive=True):  # what `pldrop evaluate` writes is pldrop's, in the report's manifest
        rc = main(argv)
    if rc != 0:
        raise UserError(f"downstream: `pldrop evaluate` ended with exit code {rc}; see its message above")
    section = {"settings": asdict(s), "command": "pldrop " + " ".join(argv), "models": models}
    section.update(figures(root, models, s.tasks))
    return section
