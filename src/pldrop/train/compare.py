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
import time
from pathlib import Path
from typing import Any

from .command_line import command_line

DEFAULT_ARMS = ["baseline", "preln", "pld"]
# The default recipe (benchmarks/defaults-search.md): 8 blocks x H128, a 2,000-token vocabulary, 64-token
# sequences, batch 32, no dropout, 6 % warm-up, validation every 50 steps; Post-LN at its tuned 1e-3
# (2e-3 stalls on the plateau), Pre-LN arms at a Cramming-style 2e-3. Every arm gets DEFAULT_MINUTES of
# training: 15 minutes in all for the three arms.
DEFAULT_MINUTES = 5.0
DEFAULTS: dict[str, Any] = {
    "budget": {"max_minutes": DEFAULT_MINUTES},
    "model": {"preset": "narrow8", "dropout": 0.0},
    "data": {"vocab_size": 2000, "seq_len": 64, "val_max_seqs": 256},
    "optim": {"batch_size": 32, "warmup_ratio": 0.06},
    "eval_every": 50,
}
DEFAULT_LRS = {"baseline": 1e-3, "postln-pld": 1e-3, "preln": 2e-3, "pld": 2e-3}
COMPARE_FILE = "compare.json"


def add_parser(sub) -> None:
    from ..models import ARMS
    from .cli import EPILOG, add_common

    p = sub.add_parser(
        "compare",
        help="train the Post-LN baseline, Pre-LN and Pre-LN + PLD side by side and report the speed-up",
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
    p.add_argument("--arms", nargs="+", choices=list(ARMS), metavar="ARM",
                   help=f"arms to train, the first is the reference (default: {' '.join(DEFAULT_ARMS)}; "
                        f"choices: {', '.join(ARMS)})")
    p.add_argument("--paper-lrs", action="store_true",
                   help="the paper's learning rates: 1e-4 for Post-LN, 1e-3 for Pre-LN (+ PLD)")
    p.add_argument("--baseline-lr", type=float, help="peak learning rate of the Post-LN arms")
    p.add_argument("--preln-lr", type=float, help="peak learning rate of the Pre-LN arm")
    p.add_argument("--pld-lr", type=float, help="peak learning rate of the Pre-LN + PLD arm")
    p.add_argument("--theta-bar", type=float, help="θ̄ of the PLD arms (default: 0.5)")
    p.add_argument("--seeds", type=int, metavar="N",
                   help="train every arm with N seeds (--seed, --seed+1, ...), all in one lockstep; the report gives "
                        "means and t-intervals over seeds (default: 1)")
    p.add_argument("--resume", action="store_true", help="continue the comparison in --out from its checkpoints")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: rewrite report.md, results.json and the plots of the finished comparison in "
                        "--out from its runs' metrics.jsonl with this version of pldrop (the command, machine and "
                        "load recorded when it ran are kept)")
    p.add_argument("--merge", nargs="+", type=Path, metavar="DIR",
                   help="train nothing: join finished comparisons of the same recipe with different seeds (each "
                        "its own lockstep run, e.g. one per day) into one multi-seed comparison in --out, as "
                        "--seeds would have written it; copies metrics and configs, not checkpoints")
    p.set_defaults(run=run)


def run_name(arm: str, seed: int, n_seeds: int) -> str:
    """The run folder of an arm and seed: ``pld`` with one seed, ``pld-s1`` with several.

    >>> run_name("pld", 0, 1), run_name("pld", 1, 3)
    ('pld', 'pld-s1')
    """
    return arm if n_seeds == 1 else f"{arm}-s{seed}"


def run_configs(args, arms: list[str], seeds: list[int], base: dict[str, dict] | None = None) -> dict[str, Any]:
    """One resolved config per run (arm x seed): the command's defaults, then (on resume) the run's
    saved config, the file, the flags and overrides, then the arm, its learning rate and the seed."""
    from .cli import flat_flags
    from .config import load_config

    flat = flat_flags(args)
    flat["pld.theta_bar"] = args.theta_bar
    flat["optim.paper_lrs"] = True if args.paper_lrs else None
    flat.pop("seed", None)
    given = {"baseline": args.baseline_lr, "postln-pld": args.baseline_lr, "preln": args.preln_lr, "pld": args.pld_lr}
    cfgs = {}
    for seed in seeds:
        for arm in arms:
            name = run_name(arm, seed, len(seeds))
            lr = given[arm] if given[arm] is not None else (None if args.paper_lrs else DEFAULT_LRS[arm])
            saved = (base or {}).get(name)
            if saved is not None and given[arm] is None:
                lr = None  # the saved config's rate
            cfgs[name] = load_config(args.config, args.overrides, defaults=DEFAULTS, base=saved,
                                     **flat, **{"model.arm": arm, "optim.lr": lr, "seed": seed})
    return cfgs


def run(args) -> int:

    from ..errors import UserError
    from .lockstep import train_lockstep
    from .loop import Interrupted, StopSignal, input_paths, report_interrupt
    from .rundir import RunLock, check_out, staged
    from .run import PretrainRun

    out: Path = args.out
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
    arms = args.arms or DEFAULT_ARMS
    seeds = list(range(args.seed or 0, (args.seed or 0) + (args.seeds or 1)))
    if args.resume:
        saved = _read_compare_file(out)
        if args.arms and args.arms != saved["arms"]:
            raise UserError(f"--resume: {str(out)!r} compares {' '.join(saved['arms'])}, not {' '.join(args.arms)}")
        if (args.seeds is not None or args.seed is not None) and seeds != saved["seeds"]:
            raise UserError(f"--resume: {str(out)!r} was run with seeds {saved['seeds']}, not {seeds}")
        arms, seeds = saved["arms"], saved["seeds"]
        base = _saved_configs(out, arms, seeds)
    cfgs = run_configs(args, arms, seeds, base)
    if len({c.optim.batch_size * c.optim.grad_accum for c in cfgs.values()}) > 1:
        raise UserError("the arms must share one batch size, so they are validated at the same sample counts")
    inputs = [p for c in cfgs.values() for p in input_paths(c)] + ([args.config] if args.config else [])
    check_out(out, resume=args.resume, overwrite=args.overwrite, inputs=inputs)

    stop = StopSignal(immediate=True)
    runs: dict[str, PretrainRun] = {}
    stage = None
    progress = False if args.no_progress else None
    load_start = _loadavg()
    try:
        with contextlib.ExitStack() as locks:
            if (args.resume or args.overwrite) and out.is_dir():  # one process per folder
                locks.enter_context(RunLock(out))
            if args.overwrite and out.exists():
                stage = staged(out)
            work = stage.path if stage is not None else out
            data = None  # prepared once, by the first arm, and shared
            for name, cfg in cfgs.items():
                runs[name] = r = PretrainRun(cfg, work / name, progress=progress, command=command_line(),
                                             resume=args.resume and (work / name / "config.yaml").is_file())
                r.prepare_data(data)
                data, r.show_progress = r.data, False
                r.build_model()
                r.build_optimizer()
            if not args.resume:  # a new folder is created under its lock right before its first file
                locks.enter_context(RunLock(work, create=True))
            stop.immediate = False
            _write_compare_file(work, arms, seeds, args.resume)
            for arm, r in runs.items():
                r.start_or_resume()
                print(f"== {arm}: {describe(r.cfg, r.bf16)}" + (f", {r.step_count} steps done" if r.step_count else ""),
                      flush=True)
            unigram = _unigram(data)
            if unigram:
                print(f"unigram plateau of this tokenizer: validation loss {unigram['loss']:.3f}, "
                      f"masked-token accuracy {unigram['accuracy']:.3f}", flush=True)
            bar = _bar(runs, progress)
            try:
                train_lockstep(runs, should_stop=lambda: stop.signal is not None,
                               on_turn=lambda name, rec: bar(name, rec))
            finally:
                bar(None, None)
            if stop.signal is not None:
                for r in runs.values():
                    r.save()
                raise Interrupted(stop.name, f"every arm saved a checkpoint; continue with "
                                             f"pldrop compare --resume --out {work}")
            summaries = {arm: r.finish() for arm, r in runs.items()}
            meta = {"command": command_line(), "machine": _machine(), "load_start": load_start, "load_end": _loadavg(),
                    "protocol": "lockstep: all arms in one process, one optimizer step at a time, the arm with the "
                                "least training time first; validation at the same sample counts",
                    "summaries": summaries}
            results = write_report(work, cfgs, arms, seeds, unigram, meta)
            if stage is not None:
                stage.commit()
                stage = None
    except Interrupted as e:
        if stage is not None:
            if stop.immediate:  # nothing trained yet: the staging folder goes
                stage.abort()
            else:
                e.args = (f"{e.args[0]}; the old comparison in {str(out)!r} is untouched",)
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
    return 0


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


def rerender(args) -> int:
    """``--report-only``: the report of a finished comparison, recomputed from its runs' metrics."""
    from ..errors import UserError
    from .rundir import RunLock

    out: Path = args.out
    clash = [f for f, on in (("--resume", args.resume), ("--overwrite", args.overwrite), ("--arms", args.arms),
                             ("--seeds", args.seeds is not None), ("--seed", args.seed is not None),
                             ("--config", args.config), ("key=value overrides", args.overrides)) if on]
    if clash:
        raise UserError(f"--report-only trains nothing and takes the arms and seeds from {str(out)!r}: "
                        f"leave out {' '.join(clash)}")
    saved = _read_compare_file(out, "--report-only")
    arms, seeds = saved["arms"], saved["seeds"]
    old = read_results(out, "--report-only")
    meta, unigram, layers = dict(old["meta"]), old["analysis"].get("unigram"), old["analysis"]["num_layers"]
    base = _saved_configs(out, arms, seeds)
    missing = [n for n, c in base.items() if c is None or not (out / n / "metrics.jsonl").is_file()]
    if missing:
        raise UserError(f"--report-only: {str(out / missing[0])!r} has no config.yaml or metrics.jsonl")
    cfgs = run_configs(args, arms, seeds, base)
    with RunLock(out):  # not while a process trains in it
        try:
            results = write_report(out, cfgs, arms, seeds, unigram, meta, layers)
        except ValueError as e:  # a metrics.jsonl line that is not JSON
            raise UserError(f"--report-only: a run's metrics.jsonl in {str(out)!r} is damaged ({e})") from None
    print_summary(results)
    print(f"report: {out / 'report.md'}")
    return 0


def read_results(out: Path, flag: str) -> dict:
    """A finished comparison's ``results.json`` (with ``meta`` and ``analysis.num_layers``), or one line."""
    from ..errors import UserError

    try:
        res = json.loads((out / "results.json").read_text(encoding="utf-8"))
        res["meta"], res["analysis"]["num_layers"]  # noqa: B018 -- what every reader needs
    except FileNotFoundError:
        raise UserError(f"{flag}: {str(out)!r} has no results.json: the comparison has not finished "
                        f"(continue it with pldrop compare --resume --out {out})") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{flag}: {str(out / 'results.json')!r} is damaged ({e})") from None
    return res


def _unigram(data) -> dict | None:
    try:
        from ..data.unigram import unigram_for_data
    except ImportError:  # pragma: no cover
        return None
    return unigram_for_data(data)


def _read_compare_file(out: Path, flag: str = "--resume") -> dict:
    from ..errors import UserError

    path = out / COMPARE_FILE
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if not (isinstance(saved, dict) and isinstance(saved.get("arms"), list) and saved["arms"]):
            raise ValueError("no arms")
        saved.setdefault("seeds", [0])
    except FileNotFoundError:
        raise UserError(f"{flag}: {str(out)!r} is not a pldrop compare folder (no {COMPARE_FILE})") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{flag}: {str(path)!r} is damaged ({e})") from None
    return saved


def _write_compare_file(work: Path, arms: list[str], seeds: list[int], resumed: bool, **extra) -> None:
    from .checkpoint import atomic_write_text
    from .run import _mark

    work.mkdir(parents=True, exist_ok=True)
    if not (work / COMPARE_FILE).is_file():
        _mark(work, command_line())
    atomic_write_text(work / COMPARE_FILE, json.dumps({"arms": arms, "seeds": seeds, "command": command_line(),
                                                           "resumed": resumed, **extra}, indent=1))


def _bar(runs, progress):
    """One progress bar over all arms (time, steps and last validation loss of each)."""
    from tqdm.auto import tqdm

    show = progress if progress is not None else os.isatty(2)
    first = next(iter(runs.values()))
    total, unit = first._bar_total()
    bar = tqdm(total=total * len(runs), unit=unit, desc="compare", disable=not show, dynamic_ncols=True)
    done = {arm: r._bar_value(unit) for arm, r in runs.items()}
    bar.update(sum(done.values()))

    def update(name, rec):
        if name is None:
            bar.close()
            return
        r = runs[name]
        v = r._bar_value(unit)
        bar.update(v - done[name])
        done[name] = v
        bar.set_postfix({a: f"{x.last_eval['val_loss']:.2f}" if x.last_eval else f"{x.step_count}"
                         for a, x in runs.items()}, refresh=False)

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
                 meta: dict, num_layers: int | None = None) -> dict[str, Any]:
    """The comparison from the runs' metrics.jsonl: results.json, plots and report.md (one renderer,
    shared with `pldrop report`). With several seeds each arm maps to its list of runs. ``num_layers``
    defaults to the last arm's saved model config."""
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
    meta = {**meta, "seeds": seeds, "configs": {name: c.to_dict() for name, c in cfgs.items()}}
    return write_compare_report(out, records, settings, num_layers, unigram, meta)


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
