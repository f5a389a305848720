"""`pldrop compare`: a Post-LN BERT baseline, Pre-LN and Pre-LN + PLD trained side by side, in lockstep.

All arms train in one process, one optimizer step at a time, always the arm that has used the least
training time so far: with a time budget every arm gets the same training time (PLD, with cheaper
steps, takes more of them), and load on the machine hits every arm alike. The arms share the
tokenizer, data order, masks and validation set (validated at the same sample counts) and nothing
else: each has its own model, optimizer, RNG stream and PLD gates. The report splits the speed-up
into what the architecture and its learning rate give (Pre-LN vs Post-LN) and what dropping adds
(Pre-LN + PLD vs Pre-LN), and prints the unigram loss of the tokenizer, the plateau a model must
leave before any speed-up means something. Writes ``report.md``, ``results.json`` and PNG plots in
``--out``; each arm's run folder is ``--out/<arm>``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from ..arms import ARMS, DEFAULT_COMPARE, arm_of, mixed_objectives, unknown_message
from .command_line import command_line

DEFAULT_ARMS = DEFAULT_COMPARE  # the arms table (pldrop.arms) declares every arm, its label and default rate
# The default recipe (benchmarks/defaults-search.md): 8 blocks x H128, a 2,000-token vocabulary, 64-token
# sequences, batch 32, no dropout, 6 % warm-up, about 10 validations per arm; Post-LN at its tuned 1e-3
# (2e-3 stalls on the plateau), Pre-LN arms at a Cramming-style 2e-3 (pldrop.arms: Arm.lr). Every arm gets DEFAULT_MINUTES of
# training: 15 minutes in all for the three arms.
DEFAULT_MINUTES = 5.0
DEFAULTS: dict[str, Any] = {
    "budget": {"max_minutes": DEFAULT_MINUTES},
    "model": {"preset": "narrow8", "dropout": 0.0},
    "data": {"vocab_size": 2000, "seq_len": 64, "val_max_seqs": 256},
    "optim": {"batch_size": 32, "warmup_ratio": 0.06},
}  # eval_every unset: about 10 validations per arm whatever the budget (pldrop.train.run.EVAL_POINTS)
COMPARE_FILE = "compare.json"
DEPTH_ROUNDS = 5  # timing rounds of the depth curves (a few seconds at the default recipe), as evaluate-depth


def add_parser(sub) -> None:
    from .cli import EPILOG, add_common

    p = sub.add_parser(
        "compare",
        help="train the Post-LN baseline, Pre-LN and Pre-LN + PLD side by side and report the speed-up "
             f"({len(DEFAULT_ARMS)} arms x {DEFAULT_MINUTES:g} minutes of training by default)",
        description=__doc__ + f"\nDefault budget: {DEFAULT_MINUTES:g} minutes of training per arm: enough to show "
                                      "time per sample and the speed-up curve, not for the models to learn word order "
                                      "(measured on 2 CPU cores: --max-minutes 26 took the baseline to accuracy 0.15, "
                                      "PLD to 0.27; --max-minutes 45 took both to 0.34, reading word order; the "
                                      "report's word-order and time-to-accuracy sections say where a run stands). "
                                      "Minutes buy steps at the machine's speed: a machine twice as fast trains "
                                      "twice as far in the same budget.\n\nSeeds: --seeds N trains them all in one "
                                      "lockstep process; where that is longer than the machine stays up, run one "
                                      "seed per comparison (--seed K) and join them with --merge.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(p)
    p.add_argument("--arms", nargs="+", metavar="ARM",
                   help=f"arms to train, the first is the reference (default: {' '.join(DEFAULT_ARMS)}; "
                        f"choices: {', '.join(ARMS)}; the table of arms is pldrop.arms)")
    p.add_argument("--lr", action="append", metavar="ARM=RATE",
                   help="peak learning rate of one arm, e.g. --lr pld=3e-3 (repeat for several arms; default: each "
                        "arm's rate in pldrop.arms)")
    p.add_argument("--paper-lrs", action="store_true",
                   help="the paper's learning rates: 1e-4 for Post-LN, 1e-3 for Pre-LN (+ PLD)")
    p.add_argument("--baseline-lr", type=float, help="peak learning rate of the Post-LN arms (--lr baseline=RATE "
                                                    "--lr postln-pld=RATE)")
    p.add_argument("--preln-lr", type=float, help="peak learning rate of the Pre-LN arm (--lr preln=RATE)")
    p.add_argument("--pld-lr", type=float, help="peak learning rate of the Pre-LN + PLD arm (--lr pld=RATE)")
    p.add_argument("--theta-bar", type=float, help="θ̄ of the PLD arms (default: 0.5)")
    p.add_argument("--seeds", type=int, metavar="N",
                   help="train every arm with N seeds (--seed, --seed+1, ...), all in one lockstep; the report gives "
                        "means and t-intervals over seeds (default: 1)")
    p.add_argument("--resume", action="store_true", help="continue the comparison in --out from its checkpoints")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: rewrite report.md, results.json and the plots of the finished comparison in "
                        "--out with this version of pldrop, from what its runs hold (each run's config.yaml, "
                        "summary.json and metrics.jsonl, checked to have reached its budget; the command, machine "
                        "and load recorded when it ran are kept); takes no other option but --no-progress")
    p.add_argument("--merge", nargs="+", type=Path, metavar="DIR",
                   help="train nothing: join finished comparisons of the same recipe with different seeds (each "
                        "its own lockstep run, e.g. one per day) into one multi-seed comparison in --out, as "
                        "--seeds would have written it; copies metrics and configs, not checkpoints; each group "
                        "must have finished, be held by no other process and be trained on the same corpus")
    p.add_argument("--depth-curve", action=argparse.BooleanOptionalAction, default=None,
                   help="after training, each arm's validation loss and accuracy with its top blocks removed, from L "
                        "down to L/2 blocks, and the time per sequence at each depth: report.md's 'Depth on demand', "
                        "results.json's depth, depth.png (default: on; a few validation passes per arm)")
    p.add_argument("--depth-rounds", type=int, metavar="N",
                   help=f"interleaved timing rounds of the depth curves (default {DEPTH_ROUNDS}; 0: no timing)")
    p.add_argument("--downstream", nargs="+", metavar="TASK",
                   help="after training, fine-tune every run's final model on these tasks with pldrop evaluate's "
                        "default protocol (e.g. movie-polarity trec6) into --out/downstream/<run>/<task>/; report.md's "
                        "'Downstream' and results.json's downstream give each arm's dev score with a 95 %% interval "
                        "over seeds (default: none; the tasks are loaded, and offline recipes fetched, before training)")
    p.add_argument("--downstream-data", metavar="DIR",
                   help="the data of the --downstream tasks that are not offline recipes, as pldrop evaluate takes it "
                        "(a GLUE folder or a folder of your own tasks)")
    p.add_argument("--downstream-max-steps", type=int, metavar="N",
                   help="optimizer steps of each fine-tuning run (pldrop evaluate --max-steps; default: its epochs)")
    p.add_argument("--downstream-depths", nargs="+", metavar="F",
                   help="also fine-tune each run's final model cut to these fractions of its blocks (top blocks "
                        "removed: pldrop shrink's top strategy) into --out/downstream/<run>/depth-<K>/; "
                        "report.md gives each arm's score at each depth beside the time per sequence there "
                        "(default: 1, the full model only; e.g. 1 0.75 0.5)")
    p.set_defaults(run=run)


def run_name(arm: str, seed: int, n_seeds: int) -> str:
    """The run folder of an arm and seed: ``pld`` with one seed, ``pld-s1`` with several.

    >>> run_name("pld", 0, 1), run_name("pld", 1, 3)
    ('pld', 'pld-s1')
    """
    return arm if n_seeds == 1 else f"{arm}-s{seed}"


def given_lrs(args, arms: list[str]) -> dict[str, float]:
    """The learning rates given per arm: ``--lr ARM=RATE`` (repeatable) and its older aliases
    ``--baseline-lr`` (the Post-LN arms), ``--preln-lr``, ``--pld-lr``; one line for an unknown arm, a
    rate that is not a number > 0, two rates for one arm, or an arm that is not compared."""
    import math

    from ..errors import UserError

    given: dict[str, tuple[str, float]] = {}
    for flag, value, names in (("--baseline-lr", args.baseline_lr, ("baseline", "postln-pld")),
                               ("--preln-lr", args.preln_lr, ("preln",)), ("--pld-lr", args.pld_lr, ("pld",))):
        if value is not None:
            given.update({n: (f"{flag} {value:g}", value) for n in names})
    for item in getattr(args, "lr", None) or []:
        name, eq, text = item.partition("=")
        if not eq:
            raise UserError(f"--lr {item}: give ARM=RATE, e.g. --lr pld=3e-3")
        bad = unknown_message([name], f"--lr {item}")
        if bad:
            raise UserError(bad)
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise UserError(f"--lr {item}: the rate must be a number > 0, e.g. --lr {name}=3e-3")
        if name in given and given[name][1] != value:
            raise UserError(f"{given[name][0]} and --lr {item} disagree: give one")
        if name not in arms:
            raise UserError(f"--lr {item}: {name} is not one of the arms compared ({' '.join(arms)})")
        given[name] = (f"--lr {item}", value)
    return {n: v for n, (_, v) in given.items()}


def run_configs(args, arms: list[str], seeds: list[int], base: dict[str, dict] | None = None) -> dict[str, Any]:
    """One resolved config per run (arm x seed): the command's defaults, then (on resume) the run's
    saved config, the file, the flags and overrides, then the arm, its learning rate and the seed."""
    from .cli import arm_settings, flat_flags
    from .config import load_config

    flat = flat_flags(args)
    flat["pld.theta_bar"] = args.theta_bar
    flat["optim.paper_lrs"] = True if args.paper_lrs else None
    flat.pop("seed", None)
    given = given_lrs(args, arms)
    cfgs = {}
    for seed in seeds:
        for arm in arms:
            name = run_name(arm, seed, len(seeds))
            lr = given.get(arm, None if args.paper_lrs else arm_of(arm).lr)
            saved = (base or {}).get(name)
            if saved is not None and arm not in given:
                lr = None  # the saved config's rate
            cfgs[name] = load_config(args.config, args.overrides, defaults=DEFAULTS, base=saved,
                                     **flat, **{**arm_settings(arm, args.overrides, "--arms"), "optim.lr": lr,
                                                "seed": seed})
    return cfgs


def run(args) -> int:

    from ..errors import UserError
    from .lockstep import train_lockstep
    from .loop import Interrupted, StopSignal, input_paths, report_interrupt, staged_interrupt_message
    from .rundir import RunLock, check_out, resume_folder, resume_staged, staged, staging_target
    from .run import PretrainRun

    if args.resume:
        args.out = staging_target(args.out)  # the hidden staging folder of an interrupted --overwrite: its run
    out: Path = args.out
    refuse_torchrun()
    bad = unknown_message(args.arms or [])
    if bad:  # --arms takes every word after it: an override there reads as an arm
        hint = "; give key=value overrides before --arms" if any("=" in a for a in args.arms) else ""
        raise UserError(bad + hint)
    mixed = mixed_objectives(args.arms or [])
    if mixed:
        raise UserError(mixed)
    if args.merge:
        from .merge import merge

        return merge(args)
    if args.report_only:
        return rerender(args)
    if args.arms and len(set(args.arms)) != len(args.arms):
        raise UserError(f"--arms {' '.join(args.arms)}: each arm at most once")
    base = None
    if args.seeds is not None and args.seeds < 1:
        raise UserError(f"--seeds {args.seeds}: give at least 1")
    if args.depth_rounds is not None and args.depth_rounds < 0:
        raise UserError(f"--depth-rounds {args.depth_rounds}: give 0 (no timing) or more")
    if args.depth_rounds is not None and args.depth_curve is False:
        raise UserError("--depth-rounds times the depth curves, which --no-depth-curve turns off: give one")
    ds_flags = [("--downstream-data", args.downstream_data), ("--downstream-max-steps", args.downstream_max_steps),
                ("--downstream-depths", args.downstream_depths)]
    if any(v is not None for _, v in ds_flags) and not args.downstream:
        flag = next(f for f, v in ds_flags if v is not None)
        raise UserError(f"{flag} sets the fine-tuning of --downstream TASK ...: give the tasks too")
    if args.downstream_max_steps is not None and args.downstream_max_steps < 1:
        raise UserError(f"--downstream-max-steps {args.downstream_max_steps}: give at least 1")
    downstream = _downstream_settings(args)
    _refuse_conflicts(args)
    arms = args.arms or DEFAULT_ARMS
    seeds = list(range(args.seed or 0, (args.seed or 0) + (args.seeds or 1)))
    if args.resume:
        if args.overwrite:  # before reading anything in --out
            raise UserError("--resume and --overwrite exclude each other")
        src = resume_folder(out)  # out, or its interrupted replacement (an --overwrite stopped mid-way)
        saved = _read_compare_file(src)
        if saved.get("merged_from") is not None:
            raise UserError(f"--resume: {str(out)!r} was joined by --merge from finished comparisons and has nothing "
                            "to train; continue the groups it came from with --resume and merge them again")
        _refuse_runs_without_config(src, saved["arms"], saved["seeds"])
        if args.arms and args.arms != saved["arms"]:
            raise UserError(f"--resume: {str(out)!r} compares {' '.join(saved['arms'])}, not {' '.join(args.arms)}")
        if (args.seeds is not None or args.seed is not None) and seeds != saved["seeds"]:
            raise UserError(f"--resume: {str(out)!r} was run with seeds {saved['seeds']}, not {seeds}")
        arms, seeds = saved["arms"], saved["seeds"]
        base = _saved_configs(src, arms, seeds)
        if downstream is None and isinstance(saved.get("downstream"), dict):  # the tasks it was started with
            downstream = saved["downstream"]
    cfgs = run_configs(args, arms, seeds, base)
    for key in ("deepspeed", "fsdp"):  # from a --config file (overrides were refused above)
        if any(getattr(c, key) for c in cfgs.values()):
            raise UserError(f"{key} in the config: {FIXED_KEYS[key]}")
    if len({c.optim.batch_size * c.optim.grad_accum for c in cfgs.values()}) > 1:
        raise UserError("the arms must share one batch size, so they are validated at the same sample counts")
    inputs = [p for c in cfgs.values() for p in input_paths(c)] + ([args.config] if args.config else [])
    check_out(out, resume=args.resume, overwrite=args.overwrite, inputs=inputs)
    if downstream is not None:  # before training: an unknown task, a recipe that cannot be fetched
        from .downstream import check_tasks

        check_tasks(downstream["tasks"], downstream.get("data"), next(iter(cfgs.values())).data.cache_dir)

    stop = StopSignal(immediate=True)
    runs: dict[str, PretrainRun] = {}
    stage = None
    progress = False if args.no_progress else None
    load_start = _loadavg()
    try:
        with contextlib.ExitStack() as locks:
            if (args.resume or args.overwrite) and out.is_dir():  # one process per folder
                locks.enter_context(RunLock(out))
            if args.resume:  # an interrupted --overwrite of out continues, and replaces out at the end
                stage = resume_staged(out)
            if args.overwrite and out.exists():
                stage = staged(out)
            work = stage.path if stage is not None else out
            data = None  # prepared once, by the first arm, and shared
            for name, cfg in cfgs.items():
                runs[name] = r = PretrainRun(cfg, work / name, progress=progress, command=command_line(),
                                             resume=args.resume and (work / name / "config.yaml").is_file())
                r.data_change_flag = False  # compare has no --allow-data-change
                r.prepare_data(data)
                data, r.show_progress = r.data, False
                r.build_model()
                r.build_optimizer()
            if args.resume and stage is None and _nothing_to_do(work, runs):  # (a staged run goes on to its swap)
                return 0
            if not args.resume:  # a new folder is created under its lock right before its first file
                locks.enter_context(RunLock(work, create=True))
            stop.immediate = False
            _write_compare_file(work, arms, seeds, args.resume,
                                **({"downstream": downstream} if downstream is not None else {}))
            for arm, r in runs.items():
                r.start_or_resume()
                print(f"== {arm}: {describe(r.cfg, r.bf16)}" + (f", {r.step_count} steps done" if r.step_count else ""),
                      flush=True)
            # the unigram plateau is a masked-LM reference (masked positions, special tokens left out)
            unigram = None if any(r.cfg.model.causal for r in runs.values()) else _unigram(data)
            if unigram:
                print(f"unigram plateau of this tokenizer: validation loss {unigram['loss']:.3f}, "
                      f"masked-token accuracy {unigram['accuracy']:.3f}", flush=True)
            bar = _bar(runs, progress)
            try:
                train_lockstep(runs, should_stop=lambda: stop.signal is not None,
                               on_turn=lambda name, rec: bar(name, rec))
            finally:
                bar(None, None)
            if stop.signal is not None and not all(r.done for r in runs.values()):
                for r in runs.values():
                    r.save()
                raise Interrupted(stop.name, f"every arm saved a checkpoint; continue with "
                                             f"pldrop compare --resume --out {out}")
            # training is over: a first signal from here on lets the models be saved and the report
            # written (seconds) and is reported after; a second stops at once (see _Finishing)
            late = _Finishing(stop, out)
            with late:
                summaries = {arm: r.finish() for arm, r in runs.items()}
                late.step("report")
                load_end = _loadavg()  # before the depth curves: the load of training
                depth = None
                if args.depth_curve is not False:
                    depth = depth_curves(runs, summaries, arms, seeds,
                                         DEPTH_ROUNDS if args.depth_rounds is None else args.depth_rounds)
                    if depth is not None and depth.get("seconds") is not None:
                        print(f"depth curves: {depth['seconds']:.1f} s", flush=True)
                tuned = None
                if downstream is not None:
                    tuned = _fine_tune(work, runs, arms, seeds, downstream)
                meta = {"command": command_line(), "machine": _machine(), "load_start": load_start,
                        "load_end": load_end, "summaries": summaries,
                        "protocol": "lockstep: all arms in one process, one optimizer step at a time, the arm with "
                                    "the least training time first; validation at the same sample counts"}
                results = write_report(work, cfgs, arms, seeds, unigram, meta, depth=depth, downstream=tuned)
                late.step("swap")
                if stage is not None:
                    stage.commit()
                    stage = None
    except Interrupted as e:
        if stage is not None:
            steps = ", ".join(f"{name} step {r.step_count}" for name, r in runs.items())
            e.args = (staged_interrupt_message(e, stage, out, steps, "comparison"),)
            stage.abort()  # keeps a staged comparison with checkpoints: --resume --out out continues it
            stage = None
        return report_interrupt("compare", e)
    finally:
        stop.restore()
        for r in runs.values():
            r.close()
        if stage is not None:  # a failure (bad data, divergence of every arm...): the old folder stays
            stage.abort()
    print_summary(results)
    print(f"report: {out / 'report.md'}")
    if late.signal is not None:
        print(f"pldrop compare: {late.name} arrived after training had finished; the models were saved and the "
              "report written before stopping, so the comparison is complete", file=sys.stderr)
    return 0


def _downstream_settings(args) -> dict[str, Any] | None:
    """``--downstream`` and its settings as compare.json keeps them (None: no fine-tuning)."""
    from ..errors import UserError

    if not args.downstream:
        return None
    from .downstream import parse_depths

    odd = [t for t in args.downstream if "=" in t]
    if odd:  # --downstream takes every word after it: an override there reads as a task
        raise UserError(f"--downstream {odd[0]}: not a task; give key=value overrides before --downstream")
    depths = parse_depths(args.downstream_depths)
    return {"tasks": list(dict.fromkeys(args.downstream)), "data": args.downstream_data,
            "max_steps": args.downstream_max_steps, **({"depths": depths} if depths != [1.0] else {})}


def _fine_tune(work: Path, runs: dict, arms: list[str], seeds: list[int], settings: dict[str, Any]) -> dict[str, Any]:
    """Every run's final model fine-tuned on the tasks (:mod:`pldrop.train.downstream`): the downstream block."""
    from ..reporting.compare_downstream import downstream_block
    from .downstream import fine_tune

    names = [run_name(a, s, len(seeds)) for s in seeds for a in arms]
    first = runs[names[0]]
    scores = fine_tune(work, names, settings["tasks"], settings.get("data"), settings.get("max_steps"),
                       device=str(first.device), cache_dir=first.cfg.data.cache_dir, depths=settings.get("depths"))
    return downstream_block(scores, arms, seeds)


def refuse_torchrun() -> None:
    """compare runs every arm in one process: under torchrun (WORLD_SIZE > 1) each rank would train
    and write the same folder. Refused on every rank before anything is read or written."""
    from ..errors import UserError

    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        world = 1
    if world > 1:
        raise UserError(f"compare trains its arms in lockstep in one process and does not run under torchrun "
                        f"(WORLD_SIZE={world}); run it as plain pldrop compare, or train each arm with "
                        "torchrun ... -m pldrop pretrain --arm ARM")


FIXED_KEYS = {  # overrides compare sets per run itself: refused, with the flag to use instead
    "model.arm": "compare trains the arms of --arms (one run each); give --arms instead",
    "seed": "compare names each run by its seed; give --seed {value} instead",
    "deepspeed": "compare trains its arms in one process, without DeepSpeed; train one arm with pldrop pretrain "
                 "--deepspeed",
    "fsdp": "compare trains its arms in one process, without FSDP; train one arm with torchrun ... -m pldrop "
            "pretrain --fsdp",
}


def _refuse_conflicts(args) -> None:
    """Settings that disagree on the command line (see :func:`pldrop.train.cli.refuse_conflicts`),
    and a ``optim.lr`` override next to a per-arm learning-rate flag."""
    from ..errors import UserError
    from .cli import flat_flags, refuse_conflicts
    from .config import parse_override

    flat = flat_flags(args)
    flat["pld.theta_bar"] = args.theta_bar
    flat["optim.paper_lrs"] = True if args.paper_lrs else None
    refuse_conflicts(args, flat, FIXED_KEYS)
    lr_flags = [f for f, v in (("--baseline-lr", args.baseline_lr), ("--preln-lr", args.preln_lr),
                               ("--pld-lr", args.pld_lr)) if v is not None] + [f"--lr {x}" for x in args.lr or []]
    for item in args.overrides or []:
        if parse_override(item)[0] == ["optim", "lr"] and lr_flags:
            raise UserError(f"{item} (every arm) and {' '.join(lr_flags)} disagree: give one")


def _refuse_runs_without_config(out: Path, arms: list[str], seeds: list[int]) -> None:
    """--resume: a run folder that holds files but no config.yaml cannot be continued (one line)."""
    from ..errors import UserError
    from .rundir import LOCK

    for name in (run_name(a, s, len(seeds)) for s in seeds for a in arms):
        run = out / name
        if run.is_dir() and not (run / "config.yaml").is_file() and any(p.name != LOCK for p in run.iterdir()):
            raise UserError(f"--resume: {str(run)!r} holds files but no config.yaml, so it cannot be continued "
                            "(it was damaged or edited); move that folder aside to train its arm again from step 0")


class _Finishing:
    """Signals after training finished (the models being saved, the report written).

    The first SIGTERM / SIGINT is noted and the work finished (seconds; the caller says so on
    stderr after); a second stops at once with exit 143 / 130 and says how to get what is missing.
    An exception a signal raises where Python cannot pass it on (a ``__del__``, a callback) is
    caught by an unraisable hook and re-raised at the next :meth:`step`, so it is never printed as
    "Exception ignored" and never lost.
    """

    def __init__(self, stop, work: Path):
        import signal

        self.signal = stop.signal  # a signal during the last step
        self.work, self.phase, self.pending = work, "models", None
        stop.restore()
        self._old = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # pragma: no cover - not the main thread
                pass

    @property
    def name(self) -> str:
        import signal

        return "SIGINT" if self.signal == signal.SIGINT else "SIGTERM"

    def _message(self) -> str:
        what = {"models": "while the models were saved", "report": "while the report was written"}[self.phase]
        return (f"stopped at once (second signal) {what}; training had finished: pldrop compare --resume --out "
                f"{self.work} trains nothing more, saves the models and writes the report")

    def _handle(self, signum, frame):
        from .loop import Interrupted

        if self.signal is None or self.phase == "swap":  # the swap is two renames: never cut in two
            self.signal = self.signal or signum
            return
        self.signal = signum
        raise Interrupted(self.name, self._message())

    def _unraisable(self, info) -> None:
        from .loop import Interrupted

        if isinstance(info.exc_value, Interrupted):
            self.pending = info.exc_value
        else:
            self._old_hook(info)

    def step(self, phase: str) -> None:
        """The next phase begins (``report``, ``swap``); a swallowed second signal stops here."""
        if self.pending is not None:
            raise self.pending
        self.phase = phase

    def __enter__(self) -> "_Finishing":
        self._old_hook = sys.unraisablehook
        sys.unraisablehook = self._unraisable
        return self

    def __exit__(self, exc_type, *exc) -> bool:
        import signal

        sys.unraisablehook = self._old_hook
        for sig, old in self._old.items():
            signal.signal(sig, old)
        if exc_type is None and self.pending is not None:
            raise self.pending
        return False


def _nothing_to_do(out: Path, runs: dict) -> bool:
    """Every run already spent its budget and the report is written: say so, change nothing (after
    the checks a resume makes: same model, data and corpus)."""
    done = [r.spent_before() for r in runs.values()]
    if not (out / "report.md").is_file() or not all(done):
        return False
    for r in runs.values():
        r.check_resumable()
    steps = ", ".join(f"{name} {d['steps']}" for name, d in zip(runs, done))
    print(f"pldrop compare: {str(out)!r} is already at step {steps}, at or past the budget; nothing to do "
          f"(the comparison is unchanged: {out / 'report.md'})", file=sys.stderr)
    return True


def _saved_configs(out: Path, arms: list[str], seeds: list[int]) -> dict[str, dict | None]:
    """Each run's saved ``config.yaml`` (None for a run that never started)."""
    import yaml

    base: dict[str, dict | None] = {}
    for name in (run_name(a, s, len(seeds)) for s in seeds for a in arms):
        try:
            base[name] = yaml.safe_load((out / name / "config.yaml").read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            base[name] = None
    return base


# what --report-only and --merge take besides the folders: rendering options, nothing that trains
RENDER_OPTIONS = ("out", "report_only", "no_progress", "command", "run")


def given_options(args, allowed=RENDER_OPTIONS) -> list[str]:
    """The options given on the command line that are not in ``allowed``, as the user typed them
    (``--max-steps``, ``key=value overrides``)."""
    given = []
    for dest, value in vars(args).items():
        if dest in allowed or value is None or value is False or value == []:
            continue
        given.append("key=value overrides" if dest == "overrides" else "--" + dest.replace("_", "-"))
    return sorted(given, key=lambda g: g == "key=value overrides")  # the flags first, as typed


def rerender(args) -> int:
    """``--report-only``: the report of a finished comparison, recomputed from what its runs hold
    (each run's config, summary and metrics, checked to have reached its budget), under its lock."""
    from ..errors import UserError
    from .finished import finished_runs, hold

    out: Path = args.out
    clash = given_options(args)
    if clash:
        raise UserError(f"--report-only trains nothing and renders what ran in {str(out)!r} with the settings it "
                        f"ran with: leave out {' '.join(clash)}")
    _read_compare_file(out, "--report-only")  # one line if it is not a comparison, before locking it
    with hold(out, "--report-only"):  # not while a process trains or writes in it
        saved = _read_compare_file(out, "--report-only")
        arms, seeds = saved["arms"], saved["seeds"]
        old = read_results(out, "--report-only", saved)
        names = [run_name(a, s, len(seeds)) for s in seeds for a in arms]
        runs = finished_runs(out, names, "--report-only", saved)
        cfgs = {name: cfg for name, (cfg, _, _) in runs.items()}
        meta = {**old["meta"], "summaries": {name: summary for name, (_, summary, _) in runs.items()}}
        if meta.get("baseline") is not None and meta["baseline"] not in arms:
            raise UserError(f"--report-only: {str(out / 'results.json')!r} is damaged (meta.baseline "
                            f"{meta['baseline']!r} is not one of the arms {' '.join(arms)})")
        tuned = None
        if old.get("downstream") is not None:  # the scores kept; the figures of this version
            from ..reporting.compare_downstream import rescore

            tuned = rescore(old["downstream"], arms, seeds)
        try:
            results = write_report(out, cfgs, arms, seeds, old["analysis"].get("unigram"), meta,
                                   old["analysis"]["num_layers"], depth=old.get("depth"), downstream=tuned)
        except OSError as e:  # a read-only folder, a full disk
            raise UserError(f"--report-only: cannot write the report in {str(out)!r} ({e.strerror or e})") from None
        except ValueError as e:  # pragma: no cover - the runs' files were checked above
            raise UserError(f"--report-only: a run's files in {str(out)!r} are damaged ({e})") from None
    print_summary(results)
    print(f"report: {out / 'report.md'}")
    return 0


def read_results(out: Path, flag: str, saved: dict | None = None) -> dict:
    """A finished comparison's ``results.json``, checked, or one line (:func:`pldrop.train.finished.read_results`)."""
    from .finished import read_results as read

    return read(out, flag, saved)


def _unigram(data) -> dict | None:
    try:
        from ..data.unigram import unigram_for_data
    except ImportError:  # pragma: no cover
        return None
    return unigram_for_data(data)


def _read_compare_file(out: Path, flag: str = "--resume") -> dict:
    from .finished import read_compare_file

    return read_compare_file(out, flag)


def _write_compare_file(work: Path, arms: list[str], seeds: list[int], resumed: bool, **extra) -> None:
    from .checkpoint import atomic_write_text
    from .run import _mark

    work.mkdir(parents=True, exist_ok=True)
    if not (work / COMPARE_FILE).is_file():
        _mark(work, command_line())
    atomic_write_text(work / COMPARE_FILE, json.dumps({"arms": arms, "seeds": seeds, "command": command_line(),
                                                           "resumed": resumed, **extra}, indent=1))


def _bar(runs, progress):
    """One progress bar over all arms: training minutes (or steps, or samples) of every arm together, and
    each arm's latest validation loss."""
    from .run import progress_bar

    first = next(iter(runs.values()))
    total, unit = first._bar_total()
    bar = progress_bar(total * len(runs), unit, "compare", progress)
    done = {arm: min(total, r._bar_value(unit)) for arm, r in runs.items()}
    bar.update(sum(done.values()))

    def update(name, rec):
        if name is None:
            bar.close()
            return
        r = runs[name]
        v = min(total, r._bar_value(unit))  # a budget's last step overshoots it; the bar stops at its total
        bar.update(v - done[name])
        done[name] = v
        bar.set_postfix_str("val loss " + " ".join(f"{a} {x.last_eval['val_loss']:.3f}" if x.last_eval else f"{a} –"
                                                   for a, x in runs.items()), refresh=False)

    return update


def describe(cfg, bf16: bool | None = None) -> str:
    from .config import default_lr

    lr = cfg.optim.lr if cfg.optim.lr is not None else default_lr(cfg.model.arm, cfg.optim.paper_lrs)
    b = cfg.budget
    budget = (f"{b.max_steps} steps" if b.max_steps else f"{b.max_samples} samples" if b.max_samples
              else f"{b.max_minutes:g} min")
    pld = f", θ̄={cfg.pld.theta_bar}" if cfg.model.uses_pld else ""
    if cfg.model.uses_pld and cfg.pld.schedule != "pld":  # the default pld schedule goes unsaid, as before
        pld += f", schedule {cfg.pld.schedule}" + (f" {cfg.pld.cooldown:g}" if cfg.pld.schedule == "cooldown" else "")
    precision = cfg.optim.precision if bf16 is None else f"{'bf16' if bf16 else 'fp32'} ({cfg.optim.precision})"
    return (f"preset {cfg.model.preset}, lr {lr:g}, batch {cfg.optim.batch_size}, seq {cfg.data.seq_len}, "
            f"dropout {cfg.model.dropout:g}, precision {precision}, budget {budget}{pld}")


def write_report(out: Path, cfgs: dict, arms: list[str], seeds: list[int], unigram: dict | None,
                 meta: dict, num_layers: int | None = None, depth: dict | None = None,
                 downstream: dict | None = None) -> dict[str, Any]:
    """The comparison from the runs' metrics.jsonl: results.json, plots and report.md (one renderer,
    shared with `pldrop report`). With several seeds each arm maps to its list of runs. ``num_layers``
    defaults to the last arm's saved model config; ``depth``: :func:`depth_curves`' block (or the one
    a finished comparison holds), None for none; ``downstream``: the fine-tuning block
    (:func:`pldrop.reporting.compare_downstream.downstream_block`), None for none."""
    from ..reporting.compare_report import write_compare_report
    from .analysis import read_metrics

    def recs(arm):
        per_seed = [read_metrics(out / run_name(arm, s, len(seeds)) / "metrics.jsonl") for s in seeds]
        return per_seed[0] if len(seeds) == 1 else per_seed

    records = {arm: recs(arm) for arm in arms}
    first = run_name(arms[-1], seeds[0], len(seeds))
    if num_layers is None:
        num_layers = json.loads((out / first / "config.json").read_text())["num_hidden_layers"]
    def setting(arm):
        name = run_name(arm, seeds[0], len(seeds))
        used = (meta.get("summaries") or {}).get(name, {}).get("precision")
        return describe(cfgs[name], None if used is None else used == "bf16")

    settings = {arm: setting(arm) for arm in arms}
    ran = [cfgs[run_name(arms[0], s, len(seeds))].seed for s in seeds]  # the seeds the runs trained with
    meta = {**meta, "seeds": ran, "configs": {name: c.to_dict() for name, c in cfgs.items()}}
    sizes = {arm: [_train_seqs(out / run_name(arm, s, len(seeds))) for s in seeds] for arm in arms}
    return write_compare_report(out, records, settings, num_layers, unigram, meta, train_seqs=sizes, depth=depth,
                                downstream=downstream)


def _train_seqs(run: Path) -> int | None:
    """The packed training sequences a run's data held (its ``pldrop.json``; None for runs made
    before pldrop recorded it, or a damaged file)."""
    try:
        n = json.loads((run / "pldrop.json").read_text(encoding="utf-8")).get("train_seqs")
    except (OSError, ValueError, AttributeError):
        return None
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


def depth_curves(runs: dict, summaries: dict, arms: list[str], seeds: list[int], rounds: int) -> dict[str, Any] | None:
    """Each finished run's depth curve (:func:`pldrop.train.depth.depth_section`, strategy ``top``,
    L down to L/2, ``rounds`` interleaved timing rounds) and each arm's mean over seeds.

    The models are the final ones each run saved (plain HF models: no PLD gates, no compiled
    blocks -- what ``pldrop shrink`` cuts), on the run's device, validated on the batches its
    training validated on, in the precision it validated in, so the full-depth point is the run's
    final ``val_loss``. ``keep-prob`` is not run: for PLD's linear and uniform rules it
    keeps the same blocks as ``top``. A diverged run has no curve, nor does its arm.

    Returns:
        ``{"strategy", "min_keep", "timing", "seeds", "seconds", "runs": {run: curve}, "models":
        {arm: mean curve}, "skipped": {arm: why}}``, or None without validation sequences.
    """
    import torch
    from torch.utils.data import Subset

    from ..data.batches import eval_batches
    from .depth import depth_section, mean_curve
    from .trained import load_trained

    t0 = time.perf_counter()
    skipped, models, batches = {}, {}, {}
    for arm in arms:
        names = [run_name(arm, s, len(seeds)) for s in seeds]
        bad = [n for n in names if (summaries.get(n) or {}).get("diverged")]
        if bad:
            skipped[arm] = f"no depth curve: {', '.join(bad)} diverged"
            continue
        for n in names:
            r = runs[n]
            valid, cap = r.data.valid, r.cfg.data.val_max_seqs
            count = len(valid) if not cap else min(cap, len(valid))  # as PretrainRun.evaluate
            if count == 0:
                return None
            batches[n] = list(eval_batches(Subset(valid, range(count)), r.cfg.optim.batch_size))
            models[n] = load_trained(r.out, "--out").model.to(r.device)
    if not models:
        return {"strategy": "top", "min_keep": None, "timing": None, "seeds": len(seeds), "runs": {}, "models": {},
                "skipped": skipped}
    device = next(iter(runs.values())).device
    bf16 = any(runs[n].bf16 for n in models)  # the arms share it (it follows the model width and the device)
    with torch.autocast(device.type, torch.bfloat16, enabled=bf16):  # as the runs' own validation
        section = depth_section(models, batches, strategy="top", rounds=rounds, device=device,
                                causal={n: runs[n].cfg.model.causal for n in models})
    del models
    by_arm = {arm: mean_curve([section["models"][run_name(arm, s, len(seeds))] for s in seeds])
              for arm in arms if arm not in skipped}
    return {"strategy": "top", "min_keep": None, "timing": section["timing"], "precision": "bf16" if bf16 else "fp32",
            "seeds": len(seeds), "seconds": time.perf_counter() - t0, "runs": section["models"], "models": by_arm,
            "skipped": skipped}


def print_summary(res: dict[str, Any]) -> None:
    for line in res.get("summary_lines", []):
        print(line)


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


def _machine() -> dict[str, Any]:
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or _cpu_model(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "time": time.strftime("%Y-%m-%d %H:%M")}


def _cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ('' where there is none): machines of one platform differ."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        return ""
