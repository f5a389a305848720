"""`pldrop evaluate`: fine-tune several models on several tasks and tabulate them, GLUE style.

Runs `pldrop finetune` for every (model, task, seed) into ``OUT/<model-name>/<task>/``, then
writes ``OUT/table.md`` and ``OUT/table.json`` (:func:`pldrop.tasks.write_table`): one row per
model, one column per task metric, an Average column, mean ± std over seeds. Tasks with a
labelled test split (the offline recipes) also get ``OUT/test/table.md`` and ``table.json``.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from pldrop.tasks.cli import TASKS_HELP, add_training_args

EVALUATE_EPILOG = TASKS_HELP + """
--data with several tasks: a GLUE folder serves every GLUE task; for your own tasks, DIR/<task>/
is used when it exists, else DIR itself. Offline recipes ignore --data.

output (--out):
  table.md, table.json     dev scores, one row per model (scores x100, mean ± std over seeds)
  test/table.*             test scores of the tasks that have a test split (recipes)
  <model>/<task>/          each `pldrop finetune` folder (results.json, predictions_*.tsv)
Model names are the folders' basenames, made unique with their parent folders when needed.

learning rate: without --lr every (model, task) is fine-tuned at the 3 rates of the model's
width and the best mean dev score is kept (see `pldrop finetune --help`): 3 x seeds runs per
(model, task). The table shows the kept rate's scores.

example:
  pldrop evaluate --models runs/cmp/baseline runs/cmp/pld --tasks trec6 sms-spam \\
      --out eval/ --seeds 1 2 3

exit codes: 0 done, 2 bad input, 130 interrupted (finished (model, task) pairs are reused with
--resume).
"""


def model_names(models: list[str]) -> list[str]:
    """Short unique names for model folders: the basename, with parent folders when they clash.

    >>> model_names(["runs/a/final", "runs/b/final", "runs/pld", "hf:org/bert-tiny"])
    ['a-final', 'b-final', 'pld', 'bert-tiny']
    >>> model_names(["x/m", "x/m/"])
    ['m', 'm-2']
    """
    def parts(m: str) -> tuple[str, ...]:
        if m.startswith("hf:"):
            return tuple(p for p in m[3:].split("/") if p) or ("model",)
        return Path(m).resolve().parts[1:] or ("model",)

    paths = [parts(m) for m in models]
    depth = [1] * len(models)
    while True:
        names = ["-".join(p[-d:]) for p, d in zip(paths, depth)]
        groups: dict[str, set] = {}
        for n, p in zip(names, paths):
            groups.setdefault(n, set()).add(p)
        # a clash between different folders: show one more parent folder of each
        grow = [i for i, n in enumerate(names) if len(groups[n]) > 1 and depth[i] < len(paths[i])]
        if not grow:
            break
        for i in grow:
            depth[i] += 1
    seen: Counter = Counter()
    unique = []
    for n in names:  # the same folder given twice
        seen[n] += 1
        unique.append(n if seen[n] == 1 else f"{n}-{seen[n]}")
    return unique


def add_parser(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="fine-tune models on tasks and write a GLUE-style table",
        description="Fine-tune every model on every task (one run per seed) and write a results table:\n"
                    "one row per model, one column per task metric, and the GLUE Average.",
        epilog=EVALUATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--models", required=True, nargs="+", metavar="DIR",
                   help="model folders (or hf:NAME), each at most once (a folder listed twice is refused)")
    p.add_argument("--tasks", required=True, nargs="+", metavar="NAME", help="task names (see below)")
    p.add_argument("--data", metavar="DIR", help="GLUE folder or hf:REPO, or a folder of your own tasks")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--resume", action="store_true",
                   help="keep the finished (model, task) runs already in --out and run the rest")
    add_training_args(p)
    p.set_defaults(run=run)


def task_data_arg(task: str, data: str | None) -> str | None:
    """What ``--data`` means for one task (see the epilog)."""
    from pldrop.tasks.glue import GLUE_TASKS
    from pldrop.tasks.recipes import RECIPES

    if data is None or task in RECIPES:
        return None
    if task in GLUE_TASKS or data.startswith("hf:"):
        return data
    own = Path(data) / task
    return str(own) if own.is_dir() else data


def _check_same_settings(folder: Path, saved: dict, cfg) -> None:
    """A kept run must have been trained with the hyperparameters asked for now."""
    from dataclasses import asdict

    from pldrop.errors import UserError

    for key, value in asdict(cfg).items():
        value = list(value) if isinstance(value, tuple) else value  # as JSON holds it
        if key not in ("max_length", "device", "save_model") and saved.get(key) != value:
            raise UserError(f"--resume: {folder} was fine-tuned with {key}={saved.get(key)!r}, not {value!r}; "
                            f"pass the same settings, or --overwrite to redo every run")


def check_models(models: list[str], out: Path) -> None:
    """Each model once (the same folder under two spellings too), and ``--out`` not inside one."""
    from pldrop.errors import UserError
    from pldrop.tasks.finetune import check_out_not_model

    seen: dict[str, str] = {}
    for m in models:
        key = m if m.startswith("hf:") else str(Path(m).expanduser().resolve())
        if key in seen:
            same = "" if seen[key] == m else f" (as {seen[key]})"
            raise UserError(f"--models: {m} is listed twice{same}; give each model once")
        seen[key] = m
        check_out_not_model(out, m)


def run(args) -> int:
    from pldrop.errors import UserError
    from pldrop.tasks.cli import finetune_config, setup, stop_on_signals, text_columns
    from pldrop.tasks.finetune import finetune
    from pldrop.tasks.registry import TASKS, load_task
    from pldrop.tasks.results import RESULTS, read_results
    from pldrop.tasks.table import format_table, write_table

    cfg = finetune_config(args)
    setup(args)
    stop_on_signals()
    cols = text_columns(args)
    tasks = list(dict.fromkeys(args.tasks))
    seeds = list(dict.fromkeys(args.seeds))
    out: Path = args.out
    if args.resume and args.overwrite:
        raise UserError("--resume and --overwrite exclude each other")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, not a folder")
    if out.exists() and any(out.iterdir()) and not (args.resume or args.overwrite):
        raise UserError(f"--out {out}: already exists; pass --resume to keep its finished runs, --overwrite to "
                        f"redo them, or choose another folder")
    for m in args.models:  # fail before hours of fine-tuning, not in the middle
        if not m.startswith("hf:") and not Path(m).is_dir():
            raise UserError(f"--models {m}: no such folder (expected a pldrop pretrain run folder or a Hugging "
                            f"Face model folder)")
    check_models(args.models, out)
    names = model_names(args.models)

    loaded = {}
    for task in tasks:  # each task is read (and checked) once, before any training
        loaded[task] = load_task(task, task_data_arg(task, args.data), text_columns=cols,
                                 label_column=args.label_column, regression=args.regression,
                                 cache_dir=args.cache_dir)
        for line in loaded[task].notes:
            print(line)
    specs = {t: d.spec for t, d in loaded.items() if t not in TASKS}

    dev: dict[str, dict[str, dict[str, list[float]]]] = {}
    test: dict[str, dict[str, dict[str, list[float]]]] = {}
    progress = False if args.no_progress else None
    for model, name in zip(args.models, names):
        for task in tasks:
            folder = out / name / task
            results = None
            if args.resume and (folder / RESULTS).is_file():
                prev = read_results(folder)
                _check_same_settings(folder, prev.get("settings", {}), cfg)
                if prev.get("complete") and prev.get("seeds") == seeds:
                    results = prev
                    print(f"{name} / {task}: kept the finished run in {folder}")
            if results is None:
                print(f"{name} / {task}: fine-tuning {model} (seeds {' '.join(map(str, seeds))})")
                results = finetune(model, task, folder, task_data_arg(task, args.data), seeds, cfg,
                                   overwrite=args.overwrite or args.resume, progress=progress,
                                   task_data=loaded[task], log=lambda line, n=name: print(f"{n}: {line}"))
            per_seed = results["per_seed"].values()
            dev.setdefault(name, {})[task] = {k: [s["metrics"][k] for s in per_seed] for k in results["metrics"]}
            if results.get("test_metrics"):
                test.setdefault(name, {})[task] = {k: [s["test_metrics"][k] for s in per_seed]
                                                   for k in results["test_metrics"]}

    md, js = write_table(dev, out, specs)
    print()
    print(format_table(dev, specs))
    for stale in (out / "test" / "table.md", out / "test" / "table.json"):  # from an earlier run
        stale.unlink(missing_ok=True)
    if test:
        write_table(test, out / "test", specs)
        print("\nTest splits (best dev checkpoint):")
        print(format_table(test, specs).split("\n\n")[0])
    print(f"\ntables in {md} and {js}")
    return 0
