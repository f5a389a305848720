"""`pldrop report`: measure the paper's claims end to end and write report.md from report.json.

Runs, into ``--out``:

1. step timing (`pldrop bench step`): time per sample against θ for two presets;
2. convergence (`pldrop bench converge`): Post-LN at the paper's rate and at the best rate of a
   short sweep, Pre-LN without PLD, Pre-LN + PLD; several seeds; loss against time and FLOPs;
3. ablations on the same protocol: Post-LN + PLD, uniform vs linear rule, fixed vs progressive
   rate, θ̄;
4. downstream (`pldrop evaluate`): PLD against Post-LN at equal samples and at equal wall-clock;

then ``report.json`` (every figure, and the path of every run folder), ``report.md`` (rendered from
report.json alone, with a verdict on each of the paper's claims: 24 % less time per sample at
θ̄ = 0.5, 2.5x faster to the same accuracy, GLUE parity at equal samples) and PNG plots.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .bench_cmd import (
    BenchOut, add_common, add_step_args, add_train_args, base_config, bench_inputs, canonical_command, check_threads,
    execute_converge, interrupted_line, load_now, machine, prepare_inputs, reexec_with_tcmalloc, scale_of,
    setup_threads, step_parts, step_settings, train_parts, write_json, write_text,
)

# lr None: `pldrop evaluate`'s default, the grid of the model's width with the best dev run kept
FT_DEFAULTS = {"tasks": ["trec6", "sms-spam"], "seeds": [0], "epochs": 2, "lr": None, "batch_size": 32, "max_length": 64,
               "max_steps": None}
# --quick: one rate (2e-3, the best measured for the tiny preset: pldrop.tasks.lr) and a step cap, so the 3
# checkpoints x 1 task cost 3 x 30 small steps, not 3 rates x an epoch of trec6 each (minutes)
FT_QUICK = {"tasks": ["trec6"], "seeds": [0], "epochs": 1, "lr": 2e-3, "batch_size": 16, "max_length": 32,
            "max_steps": 30}

EPILOG = """\
default scale (about 9 hours on 2 idle CPU cores; the runs must leave the unigram plateau to say anything):
  step timing   presets small and base, batch 8, seq 128, θ 1.0 0.9 … 0.5, 3 interleaved steps per arm
  convergence   corpus wiki-vital, preset narrow8 (8 blocks x H128), vocab 2000, seq 64, batch 32, no dropout,
                26 minutes of training per run (measured: the Post-LN baseline reaches accuracy 0.15 and
                starts to read word order there; benchmarks/defaults-search.md), 4 arms x 3 seeds in
                lockstep, Post-LN sweep 2e-4 5e-4 1e-3 at a quarter of the budget; validation on 256 sequences every 50 steps
  ablations     7 arms x 1 seed at half the budget (runs equal to converge runs are reused)
  downstream    trec6 and sms-spam (offline recipes), 2 epochs, 1 fine-tuning seed, at each of the 3
                rates for the model's width (narrow: 1e-4 5e-4 2e-3), the best dev run kept
  time ≈ step timing (~4 min) + minutes x (4·seeds + 3·sweep-fraction + 7·ablation-fraction·ablation-seeds
         + 1) x 1.15 (validation) + fine-tuning (~4 min per rate, 3 rates)
--quick: preset tiny, batch 8, 6 steps per pretraining run (4 arms x 2 seeds, a 3-rate sweep and 7 ablation
  arms at 3 steps each; the equal-wall-clock PLD run gets the Post-LN run's seconds instead), step timing of tiny only, trec6 fine-tuned for 30 steps at one rate (2e-3) per
  checkpoint (3 checkpoints): under a minute on 2 CPU cores (measured: 12 s with the corpus and trec6
  cached, the 2 cores shared at load 3.5), plus the download, tokenizer and task preparation the first
  time; it checks the pipeline, not the paper's claims; give --corpus and --tasks/--task-data to stay offline.

output (--out):
  report.md, report.json   the report, and every figure in it
  *.png                    time per sample against θ; validation loss against time and FLOPs
  runs/<run>/              pretraining run folders (metrics.jsonl, config.yaml, summary.json; weights
                           are deleted at the end unless --keep-weights)
  downstream/              `pldrop evaluate` output (tables, each fine-tuning folder's results.json)

exit codes: 0 done, 2 bad input, 130/143 interrupted (--resume reuses every finished run).
"""


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="run every benchmark and write report.md against the paper's claims "
                                      "(defaults: about 9 hours on 2 CPU cores; --quick: under a minute)",
                       description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p)
    add_train_args(p)
    add_step_args(p, prefix="step-")
    g = p.add_argument_group("downstream (--ft-*: fine-tuning)")
    g.add_argument("--tasks", nargs="+", metavar="NAME",
                   help="tasks for `pldrop evaluate` (default: trec6 sms-spam; --quick: trec6)")
    g.add_argument("--task-data", metavar="DIR", help="--data of `pldrop evaluate`, for your own tasks")
    g.add_argument("--ft-seeds", type=int, nargs="+", metavar="S", help="fine-tuning seeds (default: 0)")
    g.add_argument("--ft-epochs", type=int, metavar="N", help="fine-tuning epochs (default: 2; --quick: 1)")
    g.add_argument("--ft-lr", type=float, metavar="LR",
                   help="one fine-tuning learning rate (default: the 3 rates for the model's width, best dev kept; "
                        "--quick: 2e-3; see `pldrop finetune --help`)")
    g.add_argument("--ft-max-steps", type=int, metavar="N",
                   help="fine-tuning steps per run, overrides --ft-epochs (default: none; --quick: 30)")
    g.add_argument("--ft-batch-size", type=int, metavar="N", help="fine-tuning batch (default: 32; --quick: 16)")
    g.add_argument("--ft-max-length", type=int, metavar="N", help="fine-tuning max tokens (default: 64; --quick: 32)")
    s = p.add_argument_group("parts")
    s.add_argument("--no-step", action="store_true", help="skip the step timing")
    s.add_argument("--no-ablations", action="store_true", help="skip the ablations")
    s.add_argument("--no-downstream", action="store_true", help="skip fine-tuning")
    s.add_argument("--keep-weights", action="store_true", help="keep the pretrained models' weights in runs/")
    s.add_argument("--rerender", action="store_true",
                   help="rebuild the verdicts and report.md from --out/report.json (no training)")
    p.set_defaults(run=run)


def downstream_settings(args):
    from .downstream import DownstreamSettings

    src = FT_QUICK if args.quick else FT_DEFAULTS
    given = {"tasks": args.tasks, "seeds": args.ft_seeds, "epochs": args.ft_epochs, "lr": args.ft_lr,
             "batch_size": args.ft_batch_size, "max_length": args.ft_max_length, "max_steps": args.ft_max_steps}
    ds = DownstreamSettings(**{k: v if v is not None else src[k] for k, v in given.items()}, data=args.task_data)
    check_finetune_settings(ds)
    return ds


def check_finetune_settings(ds) -> None:
    """Bad fine-tuning values (--ft-epochs 0, --ft-max-steps 0, ...) refused now, not after the pretraining."""
    from ..errors import UserError
    from ..tasks.finetune import FinetuneConfig

    try:
        FinetuneConfig(lr=ds.lr, batch_size=ds.batch_size, epochs=ds.epochs, max_steps=ds.max_steps,
                       max_length=ds.max_length)
    except UserError as e:
        raise UserError(str(e).replace("--", "--ft-", 1)) from None


def check_tasks(ds, cache_dir: str | None) -> None:
    """Load every downstream task once now, so a bad name or path fails before any pretraining."""
    from ..tasks.cli_evaluate import task_data_arg
    from ..tasks.registry import load_task

    for task in ds.tasks:
        load_task(task, task_data_arg(task, ds.data), cache_dir=cache_dir)


def _step_section(args, work: Path, settings, progress: bool):
    """The step timing, or the one already in --out when resuming with the same settings."""
    from dataclasses import asdict

    from .step import run_step_bench

    saved = work / "bench_step.json"
    if args.resume and saved.is_file():
        sec = json.loads(saved.read_text())
        if sec.get("settings") == json.loads(json.dumps(asdict(settings))):
            print("step timing: finished earlier, reused")
            return sec
    sec = run_step_bench(settings, progress=progress)
    write_json(saved, sec)
    return sec


def run(args) -> int:
    from ..train.loop import Interrupted as _Interrupted

    if args.rerender:
        return rerender(args.out)
    reexec_with_tcmalloc(args)
    check_threads(args)
    cfg, train = base_config(args)
    scale = scale_of(args)
    step = None if args.no_step else step_settings(args, None)
    ds = None if args.no_downstream else downstream_settings(args)
    if ds is not None:
        check_tasks(ds, cfg.data.cache_dir)
    progress = False if args.no_progress else None
    data = prepare_inputs(cfg, progress)
    inputs = bench_inputs(args, cfg) + ([Path(ds.data)] if ds is not None and ds.data and not ds.data.startswith("hf:") else [])
    dest = BenchOut(args.out, "report", args.resume, args.overwrite, inputs=inputs, keep_interrupted=True)
    setup_threads(args)
    try:
        with dest as work:
            report = _measure(args, work, cfg, train, scale, step, ds, data, progress)
    except _Interrupted as e:
        print(interrupted_line("report", e, dest))
        return e.exit_code
    print_claims(report["claims"])
    print(f"report: {args.out / 'report.md'}")
    return 0


def _measure(args, work: Path, cfg, train: dict, scale, step, ds, data, progress) -> dict:
    """Every part of the report, measured into ``work``; returns report.json's content."""
    from .claims import build_claims
    from .downstream import run_downstream
    from .plots import plot_step
    from .render import render_report

    load0 = load_now()
    report: dict = {"settings": {**train, "quick": args.quick}, "resumed": bool(args.resume)}
    plots: dict = {}
    elapsed: dict = {}
    t0 = time.monotonic()
    if step is not None:
        report["bench_step"] = _step_section(args, work, step, progress=not args.no_progress and sys.stderr.isatty())
        plots["step"] = plot_step(report["bench_step"], work / "step.png")
    elapsed["step_min"], t0 = (time.monotonic() - t0) / 60, time.monotonic()
    runner, conv, abl, p = execute_converge(work, cfg, scale, not args.no_ablations, progress, data=data)
    plots.update(p)
    report.update(converge=conv, ablations=abl)
    elapsed["pretraining_min"], t0 = (time.monotonic() - t0) / 60, time.monotonic()
    if ds is not None:
        report["downstream"] = run_downstream(runner, conv, ds, work / "downstream", resume=args.resume,
                                              threads=args.threads, progress=not args.no_progress)
    elapsed["downstream_min"] = (time.monotonic() - t0) / 60
    if not args.keep_weights:
        runner.prune_weights()
    parts = train_parts(args, train, scale)
    parts += step_parts(step, "step-") if step else [("--no-step", True)]
    if ds:
        parts += [("--tasks", ds.tasks), ("--task-data", ds.data), ("--ft-seeds", ds.seeds), ("--ft-epochs", ds.epochs),
                  ("--ft-lr", ds.lr), ("--ft-max-steps", ds.max_steps), ("--ft-batch-size", ds.batch_size), ("--ft-max-length", ds.max_length)]
    parts += [("--no-ablations", args.no_ablations), ("--no-downstream", args.no_downstream),
              ("--keep-weights", args.keep_weights), ("--quick", args.quick)]
    report["command"] = canonical_command("report", args.out, parts, train["overrides"])
    report["machine"] = machine(load0)
    report["plots"] = plots
    report["elapsed"] = {**elapsed, "total_min": sum(elapsed.values())}
    report["claims"] = build_claims(report)
    write_json(work / "report.json", report)
    write_text(work / "report.md", render_report(report))
    return report


def rerender(out: Path) -> int:
    """Rebuild the claims section and report.md from ``out/report.json`` (same measurements)."""
    from ..errors import UserError
    from .claims import build_claims
    from .render import render_report

    path = out / "report.json"
    if not path.is_file():
        raise UserError(f"--rerender: {path} not found (run `pldrop report --out {out}` first)")
    report = json.loads(path.read_text(encoding="utf-8"))
    report["claims"] = build_claims(report)
    write_json(path, report)
    write_text(out / "report.md", render_report(report))
    print_claims(report["claims"])
    print(f"report: {out / 'report.md'}")
    return 0


def print_claims(c: dict) -> None:
    from .fmt import less_or_more

    for r in c["time_per_sample"]:
        where = f"bench step {r['preset']}" if r["kind"] == "bench" else "training runs"
        print(f"time per sample ({where}): {less_or_more(r['measured'])} vs the paper's 24 % less -> {r['verdict']}"
              if r["measured"] is not None else f"time per sample ({where}): not measured")
    for r in c.get("speedup", []):
        m = f"{r['measured']:.2f}x" if r["measured"] is not None else "not reached"
        print(f"speed-up to {r['target']}'s final loss: {m} vs paper 2.5x -> {r['verdict']}")
    for r in c.get("downstream", []):
        m = f"{100 * r['measured']:+.1f} points" if r["measured"] is not None else "not measured"
        print(f"downstream {r['comparison']}: PLD - Post-LN {m} -> {r['verdict']}")
