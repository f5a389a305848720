"""`pldrop bench step | converge`: measure PLD's time per sample and its speed to a target loss.

    pldrop bench step --out bench/step                       # small and base, θ 1.0 … 0.5
    pldrop bench converge --out bench/conv --minutes 2 --seeds 3
    pldrop bench converge --out bench/conv --quick --corpus my.txt data.vocab_size=400

``step`` times training steps of the untouched model and of PLD at each θ, interleaved in one
run (:mod:`pldrop.reporting.step`). ``converge`` trains Post-LN at the paper's rate and at the
best rate of a short sweep, Pre-LN without PLD and Pre-LN + PLD, several seeds each, and reports
validation loss against time and FLOPs, and each arm's time and FLOPs to Post-LN's final loss
(:mod:`pldrop.reporting.protocol`). Each writes JSON, Markdown and PNG into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

STEP_DEFAULTS = {"presets": ["small", "base"], "batch_size": 8, "seq_len": 128, "thetas": [1.0, 0.9, 0.8, 0.7, 0.6, 0.5],
                 "repeats": 3, "warmup": 1, "vocab_size": 30522, "schedule_steps": 10_000, "theta_bar": 0.5}
STEP_QUICK = {"presets": ["tiny"], "batch_size": 4, "seq_len": 32, "thetas": [1.0, 0.75, 0.5], "repeats": 2,
              "warmup": 1, "vocab_size": 1000, "schedule_steps": 1000, "theta_bar": 0.5}
# the compare default's model and data (benchmarks/defaults-search.md), at the budget the search estimated
# the Post-LN baseline needs to leave the unigram plateau (~3,000 steps, ~10 idle minutes in bf16)
TRAIN_DEFAULTS = {"corpus": ["wiki-vital"], "preset": "narrow8", "batch_size": 32, "eval_every": 50}
TRAIN_QUICK = {"corpus": ["wiki-vital"], "preset": "tiny", "batch_size": 8, "eval_every": 2}
DEFAULT_OVERRIDES = ["data.val_max_seqs=256", "data.vocab_size=2000", "data.seq_len=64",
                     "model.dropout=0.0"]  # validation every 50 steps on 256 sequences: a few % of training time
QUICK_OVERRIDES = ["data.val_max_seqs=32"]
SCALE_DEFAULTS = {"minutes": 26.0, "max_steps": None, "seeds": 3, "sweep_lrs": [2e-4, 5e-4, 1e-3], "sweep_fraction": 0.25,
                  "ablation_fraction": 0.5, "ablation_seeds": 1, "ablation_theta_bars": [0.5, 0.7, 0.9]}
SCALE_QUICK = {**SCALE_DEFAULTS, "minutes": None, "max_steps": 6, "seeds": 2, "sweep_fraction": 0.5}


# --- arguments ------------------------------------------------------------------------------

def _converge_hours(s: dict = SCALE_DEFAULTS, arms: int = 4) -> float:
    """Training hours of ``bench converge`` (one process, runs in lockstep): 4 arms x seeds at the
    budget, plus the Post-LN sweep at its share.

    >>> round(_converge_hours(), 1)
    5.5
    """
    return (arms * s["seeds"] + len(s["sweep_lrs"]) * s["sweep_fraction"]) * s["minutes"] / 60


def add_step_args(p: argparse.ArgumentParser, prefix: str = "") -> None:
    """The step benchmark's knobs (``prefix`` = ``"step-"`` inside `pldrop report`)."""
    g = p.add_argument_group("step timing" + (f" (--{prefix}*)" if prefix else ""))
    d = STEP_DEFAULTS
    g.add_argument(f"--{prefix}presets", dest="step_presets", nargs="+", metavar="P",
                   help=f"model presets to time (default: {' '.join(d['presets'])}; --quick: tiny)")
    g.add_argument(f"--{prefix}batch-size", dest="step_batch_size", type=int, metavar="N",
                   help=f"sequences per step (default: {d['batch_size']})")
    g.add_argument(f"--{prefix}seq-len", dest="step_seq_len", type=int, metavar="N",
                   help=f"tokens per sequence (default: {d['seq_len']})")
    g.add_argument(f"--{prefix}thetas", dest="step_thetas", type=float, nargs="+", metavar="θ",
                   help=f"θ values held fixed (default: {' '.join(map(str, d['thetas']))})")
    g.add_argument(f"--{prefix}repeats", dest="step_repeats", type=int, metavar="N",
                   help=f"timed interleaved steps per arm (default: {d['repeats']})")
    g.add_argument(f"--{prefix}warmup", dest="step_warmup", type=int, metavar="N",
                   help=f"untimed rounds first (default: {d['warmup']})")
    g.add_argument(f"--{prefix}vocab-size", dest="step_vocab_size", type=int, metavar="V",
                   help=f"vocabulary of the timed models (default: {d['vocab_size']}, BERT's)")
    g.add_argument(f"--{prefix}schedule-steps", dest="step_schedule_steps", type=int, metavar="T",
                   help=f"T of the whole-schedule average, γ = 100/T (default: {d['schedule_steps']})")
    g.add_argument(f"--{prefix}theta-bar", dest="step_theta_bar", type=float, metavar="θ̄",
                   help=f"θ̄ of the whole-schedule average (default: {d['theta_bar']})")


def add_train_args(p: argparse.ArgumentParser) -> None:
    """Corpus, model and the convergence protocol's scale."""
    g = p.add_argument_group("pretraining runs")
    g.add_argument("--corpus", action="append", metavar="SRC",
                   help="corpus source, repeatable (default: wiki-vital; see `pldrop pretrain --help`)")
    from ..presets import PRESETS

    g.add_argument("--preset", choices=list(PRESETS),
                   help=f"model size of the runs (default: {TRAIN_DEFAULTS['preset']}; --quick: tiny)")
    g.add_argument("--batch-size", type=int, metavar="N",
                   help=f"sequences per step (default: {TRAIN_DEFAULTS['batch_size']}; --quick: 8)")
    g.add_argument("--eval-every", type=int, metavar="N",
                   help=f"validate every N steps (default: {TRAIN_DEFAULTS['eval_every']}; --quick: 2)")
    budget = g.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, metavar="M",
                        help=f"training minutes per run, the same for every arm (default: {SCALE_DEFAULTS['minutes']:g})")
    budget.add_argument("--max-steps", type=int, metavar="N",
                        help="optimizer steps per run instead of minutes (--quick: 6)")
    g.add_argument("--seeds", type=int, metavar="N", help=f"seeds per arm (default: {SCALE_DEFAULTS['seeds']}; --quick: 2)")
    g.add_argument("--sweep-lrs", type=float, nargs="+", metavar="LR",
                   help="Post-LN rates of the short sweep (default: 2e-4 5e-4 1e-3)")
    g.add_argument("--sweep-fraction", type=float, metavar="F",
                   help=f"sweep runs' share of the budget (default: {SCALE_DEFAULTS['sweep_fraction']:g})")
    g.add_argument("--ablation-fraction", type=float, metavar="F",
                   help=f"ablation runs' share of the budget (default: {SCALE_DEFAULTS['ablation_fraction']:g})")
    g.add_argument("--ablation-seeds", type=int, metavar="N",
                   help=f"seeds per ablation arm (default: {SCALE_DEFAULTS['ablation_seeds']})")
    g.add_argument("--ablation-theta-bars", type=float, nargs="+", metavar="θ̄",
                   help="θ̄ of the θ̄ ablation; the first is the reference's (default: 0.5 0.7 0.9)")
    g.add_argument("--cache-dir", help="pldrop cache (default: $PLDROP_CACHE or ~/.cache/pldrop)")
    g.add_argument("--config", type=Path, help="YAML config every run starts from")
    g.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides for every run, e.g. data.vocab_size=4000 (arm, lr, pld.*, budget.* "
                        "and seed are set by the protocol)")


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes that check the pipeline, not the claims, in under a minute on 2 CPU cores (CI); "
                        "flags still win")
    p.add_argument("--threads", type=int, metavar="N",
                   help="torch CPU threads (default: torch's choice; on a machine shared with other jobs 1 thread "
                        "can be several times faster than 2)")
    p.add_argument("--resume", action="store_true", help="reuse the finished runs already in --out")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out, a folder of this same command: every input is checked first, the new run is "
                        "written beside it and swapped in at the end (a failure or a kill leaves the old one)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-tcmalloc", action="store_true",
                   help="do not restart under tcmalloc (it steadies CPU step times; used when installed)")


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="measure time per sample against θ (minutes), and speed to a target loss (hours)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bsub = p.add_subparsers(dest="bench_command", metavar="WHAT", required=True)
    s = bsub.add_parser("step", help="time per sample against θ, baseline and PLD interleaved (defaults: about 5 "
                                     "minutes on 2 CPU cores, mostly BERT-base steps)",
                        description=_doc("step"), formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(s)
    add_step_args(s)
    s.add_argument("--bf16", action="store_true", help="bf16 autocast")
    s.add_argument("--device", help="cpu or cuda (default: cuda if there is one)")
    s.add_argument("--columns", nargs="+", metavar="C", choices=["fp32", "bf16", "compiled", "compiled+bf16"],
                   help="also time untouched and PLD (at the smallest --thetas) in these precisions side by side, "
                        "interleaved, e.g. --columns fp32 bf16 compiled (compiled = pldrop.compile.compile_blocks)")
    s.add_argument("--compile-backend", default="inductor", help="torch.compile backend of the compiled columns")
    s.set_defaults(run=run_step)
    c = bsub.add_parser("converge", help="Post-LN (paper and tuned rate), Pre-LN, Pre-LN + PLD: loss against "
                                         f"time and FLOPs, several seeds (defaults: about {_converge_hours():.1f} "
                                         "hours on 2 CPU cores; --minutes scales it)", description=_doc("converge"),
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(c)
    add_train_args(c)
    c.add_argument("--ablations", action="store_true",
                   help="also run the ablations (Post-LN + PLD, uniform rule, fixed rate, θ̄)")
    c.set_defaults(run=run_converge)


def _doc(which: str) -> str:
    from . import protocol, step

    return (step.__doc__ if which == "step" else protocol.__doc__) + "\nexit codes: 0 done, 2 bad input, 130 interrupted."


# --- resolving the knobs --------------------------------------------------------------------

def _pick(args, dest: str, key: str, defaults: dict, quick: dict):
    v = getattr(args, dest, None)
    return v if v is not None else (quick if args.quick else defaults)[key]


def step_settings(args, device: str | None = None, models: int = 2):
    """The step benchmark's settings, checked: values, the device, and that ``models`` timed copies of
    the largest preset fit in its memory (:func:`pldrop.reporting.step.check_fits`)."""
    from .step import StepSettings, check_device, check_fits

    kw = {k: _pick(args, f"step_{k}", k, STEP_DEFAULTS, STEP_QUICK) for k in STEP_DEFAULTS}
    import torch

    dev = check_device(device) if device else ("cuda" if torch.cuda.is_available() else "cpu")
    s = StepSettings(**kw, bf16=bool(getattr(args, "bf16", False)), device=dev)
    check_fits(s, models)
    return s


def scale_of(args):
    from .protocol import Scale

    kw = {k: _pick(args, k, k, SCALE_DEFAULTS, SCALE_QUICK) for k in SCALE_DEFAULTS}
    if args.minutes is not None:
        kw["max_steps"] = None
    elif args.max_steps is not None:
        kw["minutes"] = None
    return Scale(**kw)


def base_config(args):
    """The resolved config every run starts from, and the train knobs as resolved."""
    from ..errors import UserError
    from .runs import PROTOCOL_KEYS
    from ..train.config import load_config

    train = {k: _pick(args, k, k, TRAIN_DEFAULTS, TRAIN_QUICK) for k in TRAIN_DEFAULTS}
    overrides = list(args.overrides or [])
    for item in overrides:
        key = item.split("=", 1)[0]
        if any(key == k or key.startswith(k + ".") for k in PROTOCOL_KEYS):
            raise UserError(f"override {item!r}: {key} is set by the benchmark protocol for each run; "
                            f"use the flags (--minutes, --max-steps, --seeds, --sweep-lrs, …) instead")
    flat = {"data.corpus": train["corpus"], "model.preset": train["preset"], "optim.batch_size": train["batch_size"],
            "eval_every": train["eval_every"], "data.cache_dir": args.cache_dir, "threads": args.threads,
            "save_every": 0, "log_every": 1}
    train["overrides"] = (QUICK_OVERRIDES if args.quick else DEFAULT_OVERRIDES) + overrides  # later ones win
    cfg = load_config(args.config, train["overrides"], **flat)
    return cfg, train


def canonical_command(sub: str, out: Path, parts: list[tuple[str, Any]], overrides: list[str]) -> str:
    """``pldrop <sub> --out DIR --flag value …`` with every knob explicit (the run, reproducible)."""
    argv = ["pldrop", *sub.split(), "--out", str(out)]
    for flag, v in parts:
        if v is None or v is False:
            continue
        argv.append(flag)
        if v is True:
            continue
        argv += [_fmt(x) for x in v] if isinstance(v, (list, tuple)) else [_fmt(v)]
    return shlex.join(argv + list(overrides))


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def step_parts(s, prefix: str = "") -> list[tuple[str, Any]]:
    return [(f"--{prefix}{k.replace('_', '-')}", getattr(s, k)) for k in STEP_DEFAULTS]


def train_parts(args, train: dict, scale) -> list[tuple[str, Any]]:
    parts: list[tuple[str, Any]] = [("--corpus", c) for c in train["corpus"]]
    parts += [("--preset", train["preset"]), ("--batch-size", train["batch_size"]), ("--eval-every", train["eval_every"])]
    parts += [("--max-steps", scale.max_steps)] if scale.max_steps is not None else [("--minutes", scale.minutes)]
    parts += [("--seeds", scale.seeds), ("--sweep-lrs", scale.sweep_lrs), ("--sweep-fraction", scale.sweep_fraction),
              ("--ablation-fraction", scale.ablation_fraction), ("--ablation-seeds", scale.ablation_seeds),
              ("--ablation-theta-bars", scale.ablation_theta_bars), ("--cache-dir", args.cache_dir),
              ("--config", args.config), ("--threads", args.threads)]
    return parts


# --- shared plumbing ------------------------------------------------------------------------

def reexec_with_tcmalloc(args) -> None:
    """Restart under tcmalloc (see :func:`pldrop.reporting.timing.reexec_with_tcmalloc`) unless --no-tcmalloc."""
    from .timing import reexec_with_tcmalloc as reexec

    if not args.no_tcmalloc:
        reexec(args.command)


# What each command writes at the top of its --out; a folder holding another command's output is
# never replaced or resumed by this one (a finished comparison is not a bench folder).
OWN_FILES = {
    "bench step": ("bench_step.json", "bench_step.md", "bench_step*.png"),
    "bench converge": ("converge.json", "converge.md", "converge_*.png", "ablations_*.png", "runs"),
    "report": ("report.json", "report.md", "step.png", "bench_step.json", "converge_*.png", "ablations_*.png",
               "runs", "downstream"),
}
WRITERS = {"compare.json": "compare", "results.json": "compare", "report.json": "report", "config.yaml": "pretrain",
           "pldrop.json": "pretrain", "summary.json": "pretrain", "model.safetensors": "pretrain",
           "checkpoints": "pretrain", "converge.*": "bench converge", "bench_step.*": "bench step",
           "bench_step*.png": "bench step", "report.md": "report", "step.png": "report", "downstream": "report"}


def check_kind(out: Path, kind: str, flag: str) -> None:
    """Refuse (one line) to ``--resume`` or ``--overwrite`` a folder that holds another command's output."""
    import fnmatch

    from ..errors import UserError
    from ..train.rundir import LOCK, MARKER

    for entry in sorted(out.iterdir()):
        name = entry.name
        if name in (MARKER, LOCK) or name.startswith("."):  # marker, lock, temporaries (check_out judged them)
            continue
        if not any(fnmatch.fnmatchcase(name, pat) for pat in OWN_FILES[kind]):
            writer = next((f"`pldrop {w}`" for k, w in WRITERS.items() if fnmatch.fnmatchcase(name, k)),
                          "another pldrop command")
            raise UserError(f"{flag}: {str(out)!r} holds {name}, the output of {writer}, not of "
                            f"`pldrop {kind}`; it replaces only its own output -- choose another --out")


class BenchOut:
    """The ``--out`` of `pldrop bench` and `pldrop report`, by the rules of every pldrop run folder
    (:mod:`pldrop.train.rundir`).

    Made, it checks ``out`` and writes nothing: call it after every other input was checked.
    Entered, it locks ``out`` and yields the folder to write: ``out`` itself (a new run, or
    ``--resume``) or, with ``--overwrite`` of an existing folder, a staging folder beside it that
    replaces ``out`` only when the block ends normally. A failure or a kill leaves the old folder as
    it was; a run that stopped on a signal (:class:`pldrop.train.loop.Interrupted`: SIGTERM or Ctrl-C
    during training) with ``keep_interrupted`` keeps its staging folder (``kept`` names it, and
    :func:`interrupted_line` says so) so the runs already done are not lost.

    Args:
        out: the folder asked for.
        kind: ``bench step``, ``bench converge`` or ``report`` (:data:`OWN_FILES`).
        resume, overwrite: the flags.
        inputs: files and folders the command reads (``out`` may not be, hold or lie in one).
        keep_interrupted: keep the staging folder of an interrupted ``--overwrite`` run.
    """

    def __init__(self, out: Path, kind: str, resume: bool, overwrite: bool, inputs=(), keep_interrupted: bool = False):
        from ..errors import UserError
        from ..train.rundir import check_out

        if resume and overwrite:
            raise UserError("--resume and --overwrite exclude each other")
        self.out, self.kind, self.keep_interrupted = Path(out), kind, keep_interrupted
        self.existing = self.out.is_dir() and not self.out.is_symlink() and any(self.out.iterdir())
        self.resume = resume and self.existing
        check_out(self.out, resume=self.resume, overwrite=overwrite, inputs=inputs)
        self.replace = overwrite and self.existing
        if self.resume or self.replace:
            check_kind(self.out, kind, "--resume" if self.resume else "--overwrite")
        self.stage = None
        self.kept: Path | None = None
        self._locks = None
        self._work_lock = None

    def __enter__(self) -> Path:
        import contextlib

        from ..train.command_line import command_line
        from ..train.rundir import MARKER, RunLock, mark_run_folder, staged

        self._locks = contextlib.ExitStack()
        try:
            if self.existing:  # one process per folder: the old one stays locked until the swap
                self._locks.enter_context(RunLock(self.out))
            if self.replace:
                self.stage = staged(self.out)
            work = self.stage.path if self.stage is not None else self.out
            if not self.resume:  # a new folder: created under its lock, then marked as pldrop's
                self._work_lock = self._locks.enter_context(RunLock(work, create=True))
            if not (work / MARKER).is_file():
                mark_run_folder(work, command_line())
        except BaseException:
            self._release(failed=True)
            raise
        return work

    def __exit__(self, exc_type, exc, tb) -> bool:
        from ..train.loop import Interrupted

        self._release(failed=exc_type is not None, interrupted=exc_type is not None and issubclass(exc_type, Interrupted))
        return False

    def _release(self, failed: bool, interrupted: bool = False) -> None:
        try:
            if self.stage is not None:
                if not failed:
                    self.stage.commit()
                    if self._work_lock is not None:  # its file moved into out with the swap: removed on release
                        self._work_lock.path = self.out / self._work_lock.path.name
                elif interrupted and self.keep_interrupted:
                    self.kept = self.stage.path
                else:
                    self.stage.abort()
        finally:
            self.stage = None
            if self._locks is not None:
                self._locks.close()
                self._locks = None


def interrupted_line(command: str, e, dest: "BenchOut") -> str:
    """What an interrupted bench or report says: where its runs are and how to continue."""
    if dest.kept is not None:
        return (f"pldrop {command}: {e}; the old results in {str(dest.out)!r} are untouched, the new runs are in "
                f"{str(dest.kept)!r} (continue with --resume --out {dest.kept})")
    return f"pldrop {command}: {e}; rerun with --resume to continue"


def machine(start_load: float | None = None) -> dict[str, Any]:
    """The machine: CPU model, cores, threads, torch and Python versions, load average."""
    from .timing import machine_info

    m = machine_info()
    m["cores"] = os.cpu_count()
    m["loadavg"] = {"start": start_load, "end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    return m


def load_now() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=1, ensure_ascii=False) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write a report file atomically, recorded in its folder's manifest."""
    from ..train.checkpoint import atomic_write_text

    atomic_write_text(path, text)


def check_threads(args) -> None:
    """``--threads``, checked before anything is created."""
    from ..errors import UserError

    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads {args.threads}: expected a positive number")


def setup_threads(args) -> None:
    check_threads(args)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)


def num_layers(cfg) -> int:
    from ..models import PRESETS

    if cfg.model.config_file:
        return int(json.loads(Path(cfg.model.config_file).read_text())["num_hidden_layers"])
    return PRESETS[cfg.model.preset][0]


# --- bench step -----------------------------------------------------------------------------

def run_step(args) -> int:
    reexec_with_tcmalloc(args)
    check_threads(args)
    compiled = any(c.startswith("compiled") for c in args.columns or ())
    s = step_settings(args, args.device, models=4 if compiled else 2)
    dest = BenchOut(args.out, "bench step", args.resume, args.overwrite)  # after every input was checked
    setup_threads(args)
    with dest as work:
        return _run_step(args, s, work)


def _run_step(args, s, work: Path) -> int:
    from .plots import plot_step
    from .render import render_machine, render_step
    from .step import run_step_bench

    load0 = load_now()
    sec = run_step_bench(s, progress=not args.no_progress and sys.stderr.isatty())
    parts = step_parts(s) + [("--bf16", s.bf16), ("--device", s.device), ("--threads", args.threads)]
    res = {"command": canonical_command("bench step", args.out, parts, []), "machine": machine(load0), **sec}
    columns_md: list[str] = []
    if getattr(args, "columns", None):
        from .timing import format_columns, time_columns

        res["columns"] = {}
        parts += [("--columns", list(args.columns)), ("--compile-backend", args.compile_backend)]
        res["command"] = canonical_command("bench step", args.out, parts, [])
        for preset in s.presets:
            col = time_columns(preset, s.batch_size, s.seq_len, min(s.thetas), tuple(args.columns), s.repeats,
                               max(s.warmup, 2), s.vocab_size, device=s.device, backend=args.compile_backend,
                               progress=not args.no_progress and sys.stderr.isatty())
            res["columns"][preset] = col
            columns_md += ["", f"## Precisions side by side: {preset}", "", format_columns(col)]
            print(format_columns(col))
    write_json(work / "bench_step.json", res)
    png = plot_step(sec, work / "bench_step.png")
    md = ["# pldrop bench step", "", "```", res["command"], "```", ""] + render_machine(res["machine"])
    write_text(work / "bench_step.md", "\n".join(md + render_step(sec, png) + columns_md))
    for preset, r in sec["presets"].items():
        row = r["rows"][-1]
        print(f"{preset}: θ={row['theta']:g} saves {100 * row['realised_saving']:.1f} % per sample "
              f"(predicted {100 * row['predicted_saving']:.1f} %; fixed cost {100 * r['fixed_fraction']:.1f} % of a "
              f"step; whole schedule {100 * r['schedule']['saving']:.1f} %)")
    print(f"wrote {args.out / 'bench_step.json'}, bench_step.md, bench_step.png")
    return 0


# --- bench converge -------------------------------------------------------------------------

def prepare_inputs(cfg, progress: bool | None):
    """The corpus, read, tokenized and packed now (cached for the runs), so a bad ``--corpus`` or config
    fails before ``--out`` is touched; also checks the model config file."""
    from .runs import Runner

    num_layers(cfg)
    return Runner(Path("."), cfg, progress=progress).data


def bench_inputs(args, cfg) -> list:
    """Files and folders the runs read: ``--out`` may not be, hold or lie inside one."""
    from ..train.loop import input_paths

    return input_paths(cfg) + ([args.config] if args.config else [])


def execute_converge(out: Path, cfg, scale, ablations: bool, progress: bool | None, log=print, data=None) -> tuple:
    """Run the convergence protocol (and the ablations) into ``out/runs``; returns
    ``(runner, converge_section, ablations_section or None, plots)``. ``data``: the corpus already
    prepared (:func:`prepare_inputs`)."""
    from .plots import plot_loss_curves, plot_section_speedup
    from .protocol import run_ablations, run_converge
    from .runs import Runner
    scale.eval_every = cfg.eval_every
    runner = Runner(out / "runs", cfg, progress=progress, log=log)
    runner._data = data
    L = num_layers(cfg)
    conv = run_converge(runner, scale, L)
    abl = run_ablations(runner, scale, conv["sweep"]["best_lr"], L) if ablations and scale.ablation_seeds else None
    target = conv["targets"]["postln-tuned"]["target"]["mean"] if "postln-tuned" in conv["targets"] else None
    plots = {"converge": [plot_loss_curves(out, conv["arms"], out / "converge_loss.png", target,
                                           "Convergence: validation loss against training time, samples and FLOPs")]
                        + plot_section_speedup(conv, out / "converge_speedup.png", "Speed-up over Post-LN @ tuned lr")}
    if abl:
        t = abl["targets"].get("postln-tuned")
        plots["ablations"] = [plot_loss_curves(out, abl["arms"], out / "ablations_loss.png",
                                               t["target"]["mean"] if t else None, "Ablations")]
        plots["ablations"] += plot_section_speedup(abl, out / "ablations_speedup.png", "Ablations: speed-up over Post-LN")
    return runner, conv, abl, plots


def run_converge(args) -> int:
    from ..train.loop import Interrupted as _Interrupted

    reexec_with_tcmalloc(args)
    check_threads(args)
    cfg, train = base_config(args)
    scale = scale_of(args)
    progress = False if args.no_progress else None
    data = prepare_inputs(cfg, progress)
    dest = BenchOut(args.out, "bench converge", args.resume, args.overwrite, inputs=bench_inputs(args, cfg),
                    keep_interrupted=True)
    setup_threads(args)
    load0 = load_now()
    try:
        with dest as work:
            runner, conv, abl, plots = execute_converge(work, cfg, scale, args.ablations, progress, data=data)
            runner.prune_weights()
            _write_converge(args, work, train, scale, conv, abl, plots, load0)
    except _Interrupted as e:
        print(interrupted_line("bench converge", e, dest))
        return e.exit_code
    print_converge(conv)
    print(f"wrote {args.out / 'converge.json'}, converge.md and plots")
    return 0


def _write_converge(args, work: Path, train: dict, scale, conv, abl, plots, load0) -> None:
    from .render import render_ablations, render_converge, render_machine

    parts = train_parts(args, train, scale) + [("--ablations", args.ablations)]
    res = {"command": canonical_command("bench converge", args.out, parts, train["overrides"]),
           "machine": machine(load0), "settings": {**train, "quick": args.quick}, "converge": conv,
           "ablations": abl, "plots": plots}
    write_json(work / "converge.json", res)
    md = ["# pldrop bench converge", "", "```", res["command"], "```", ""] + render_machine(res["machine"])
    md += render_converge(conv, plots["converge"])
    if abl:
        md += ["## Ablations", ""] + render_ablations(abl, plots["ablations"])
    write_text(work / "converge.md", "\n".join(md))


def print_converge(conv: dict[str, Any]) -> None:
    for name, arm in conv["arms"].items():
        a = arm["aggregate"]["final_val_loss"]
        std = f" ± {a['std']:.4f}" if a["std"] is not None else ""
        print(f"{arm['label']:<22} final val loss {a['mean']:.4f}{std}" if a["mean"] is not None
              else f"{arm['label']:<22} no finished run")
    t = conv["targets"].get("postln-tuned")
    if t:
        f = t["arms"]["pld"]
        sp = f["speedup_time_agg"]["mean"]
        print(f"PLD to Post-LN's final loss: reached in {f['reached']}/{f['seeds']} seeds"
              + (f", {sp:.2f}x faster" if sp is not None else ""))
