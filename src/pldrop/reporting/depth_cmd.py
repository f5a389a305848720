"""`pldrop evaluate-depth`: validation loss, accuracy and inference time of each model at every depth.

The numbers come from :func:`pldrop.train.depth.depth_section` (the same block ``compare`` stores
under ``depth``); this command adds the model folders' validation data, the files and the table.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from ..errors import UserError

EPILOG = """
Each model runs with only the blocks the strategy keeps at each depth K (no fine-tuning), from its
L blocks down to L/2 (--min-keep 1: all the way). Strategies as in `pldrop shrink --help`;
greedy picks blocks on the same validation batches it reports (an optimistic curve) and costs
about L^2/2 validation passes.

validation data: a pldrop pretrain run folder uses its own tokenizer and the validation split it
was trained with (its corpus must still be readable), or the same split of --corpus; any other
model folder needs --corpus (held-out documents: seeded hash split, seed 0, 5 %).

inference time: one forward of the first validation batch, per sequence, at each depth; every
round runs each (model, depth) once in a seeded random order, medians over --rounds, reported as
a ratio to the model's full depth (measured on this machine, under its load).

output (--out): depth.json (every point), depth.md (a table per model), depth.png (accuracy
against blocks kept, one line per model).

example:
  pldrop evaluate-depth --models runs/cmp/baseline runs/cmp/pld --out depth/
"""


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate-depth", help="validation loss, accuracy and speed of models cut to fewer blocks",
                       description="Masked-LM (or causal-LM) validation loss and accuracy, and inference time, of "
                                   "each model at every depth from L down to L/2, with no fine-tuning.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", required=True, nargs="+", metavar="DIR", help="pldrop run folders or HF model folders")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--corpus", nargs="+", metavar="SRC", help="validation text (default: each run's own split)")
    p.add_argument("--strategy", default="top", metavar="NAME", help="top (default), every-other, keep-prob, greedy")
    p.add_argument("--min-keep", type=int, default=None, metavar="K", help="lowest depth (default L/2, rounded up)")
    p.add_argument("--rounds", type=int, default=5, metavar="N", help="timing rounds (default 5; 0: no timing)")
    p.add_argument("--max-seqs", type=int, default=None, metavar="N",
                   help="validation sequences (default: the run's data.val_max_seqs, else 256)")
    p.add_argument("--batch-size", type=int, default=None, metavar="N", help="validation batch size (default 32)")
    p.add_argument("--seed", type=int, default=0, help="seed of the timing order (default 0)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: cuda when there is one)")
    p.add_argument("--cache-dir", metavar="DIR", help="pldrop cache folder (default $PLDROP_CACHE or ~/.cache/pldrop)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it is a folder pldrop wrote")
    p.set_defaults(run=run)


def format_depth(section: dict[str, Any]) -> str:
    """A Markdown table per model: depth, kept blocks, loss, accuracy, share of full-depth accuracy, time.

    >>> sec = {"strategy": "top", "models": {"pld": {"num_layers": 2, "objective": "masked-lm", "points": [
    ...     {"keep": 2, "kept": [0, 1], "val_loss": 2.0, "val_accuracy": 0.5, "accuracy_kept": 1.0, "time_ratio": 1.0},
    ...     {"keep": 1, "kept": [0], "val_loss": 3.0, "val_accuracy": 0.4, "accuracy_kept": 0.8, "time_ratio": 0.55}]}}}
    >>> print(format_depth(sec).splitlines()[5])
    | 1 | 0 | 3.000 | 0.400 | 80.0 % | 0.55x |
    """
    lines = []
    for name, curve in section["models"].items():
        lines += [f"### {name} ({curve['num_layers']} blocks, {curve['objective']}, strategy {section['strategy']})", "",
                  "| blocks kept | kept (of the original) | val loss | val accuracy | accuracy kept | time / sequence |",
                  "|---|---|---|---|---|---|"]
        for p in curve["points"]:
            kept = " ".join(map(str, p["kept"]))
            share = f"{100 * p['accuracy_kept']:.1f} %" if p.get("accuracy_kept") is not None else "-"
            ratio = f"{p['time_ratio']:.2f}x" if p.get("time_ratio") is not None else "-"
            lines.append(f"| {p['keep']} | {kept} | {p['val_loss']:.3f} | {p['val_accuracy']:.3f} | {share} | {ratio} |")
        lines.append("")
    return "\n".join(lines)


def point_at(curve: dict[str, Any], fraction: float) -> dict[str, Any] | None:
    """The curve's point at ``ceil(fraction · L)`` blocks, or None where that is full depth or not in the curve.

    >>> c = {"num_layers": 8, "points": [{"keep": k} for k in range(8, 3, -1)]}
    >>> point_at(c, 0.75), point_at(c, 0.5), point_at({"num_layers": 2, "points": [{"keep": 2}, {"keep": 1}]}, 0.75)
    ({'keep': 6}, {'keep': 4}, None)
    """
    L = curve["num_layers"]
    k = math.ceil(fraction * L)  # as default_keeps rounds L/2 up
    return next((p for p in curve["points"] if p["keep"] == k and k < L), None)


def depth_sentence(label: str, curve: dict[str, Any]) -> str:
    """How much of its full-depth accuracy one arm keeps at three-quarter and half depth, and for what time.

    >>> pts = [{"keep": 4, "val_accuracy": 0.5, "accuracy_kept": 1.0, "time_ratio": 1.0},
    ...        {"keep": 3, "val_accuracy": 0.45, "accuracy_kept": 0.9, "time_ratio": 0.8},
    ...        {"keep": 2, "val_accuracy": 0.3, "accuracy_kept": 0.6, "time_ratio": None}]
    >>> depth_sentence("PLD", {"num_layers": 4, "points": pts})
    '**PLD** (full-depth accuracy 0.500) keeps 90.0 % of it at three-quarter depth (3 of 4 blocks, 0.80x the time per sequence), 60.0 % at half depth (2 of 4 blocks).'
    """
    L, full = curve["num_layers"], curve["points"][0]
    parts = []
    for fraction, name in ((0.75, "three-quarter"), (0.5, "half")):
        p = point_at(curve, fraction)
        if p is None:
            continue
        share = "an undefined share" if p.get("accuracy_kept") is None else f"{100 * p['accuracy_kept']:.1f} %"
        time = f", {p['time_ratio']:.2f}x the time per sequence" if p.get("time_ratio") is not None else ""
        parts.append(f"{share} at {name} depth ({p['keep']} of {L} blocks{time})")
    if not parts:
        return f"**{label}** has too few blocks ({L}) for three-quarter and half depth."
    parts[0] = parts[0].replace(" at ", " of it at ", 1)
    return f"**{label}** (full-depth accuracy {full['val_accuracy']:.3f}) keeps {', '.join(parts)}."


def render_depth(depth: dict[str, Any], labels: dict[str, str]) -> list[str]:
    """The "Depth on demand" section of `pldrop compare`'s report (its ``depth`` block in ``results.json``)."""
    t = depth.get("timing") or {}
    seeds = depth.get("seeds") or 1
    timing = (f"time per sequence: one forward of the first validation batch, {t['rounds']} interleaved rounds, "
              f"medians, as a ratio to full depth ({t.get('device', '')})" if t.get("rounds") else "not timed")
    prec = f" ({depth['precision']}, as in training)" if depth.get("precision") else ""
    lines = [f"**Depth on demand**: each arm's final model run with only some of its blocks (strategy "
             f"`{depth['strategy']}`: the highest blocks go; for PLD's rules this is also `keep-prob`, the blocks "
             f"PLD dropped most), no fine-tuning, on the validation batches every arm is validated on{prec}; "
             f"{timing}" + (f"; means over {seeds} seeds (each run's curve in `results.json`)" if seeds > 1 else "")
             + ". `pldrop shrink` writes such a model.", ""]
    lines += [f"- {depth_sentence(labels.get(a, a), c)}" for a, c in depth["models"].items()]
    lines += [f"- {labels.get(a, a)}: {why}" for a, why in (depth.get("skipped") or {}).items()]
    lines += [""] + ([f"![{depth['plot']}]({depth['plot']})", ""] if depth.get("plot") else [])
    lines += format_depth({**depth, "models": {labels.get(a, a): c for a, c in depth["models"].items()}}).splitlines()
    return lines + [""]


def run(args) -> int:
    import torch

    from ..prune import STRATEGIES, block_list
    from ..tasks.cli_evaluate import model_names
    from ..train.depth import depth_section, validation_for
    from ..train.rundir import check_out, mark_run_folder, staged
    from .bench_cmd import write_json, write_text
    from ..train.trained import check_model_folder, load_trained, pld_keep_probs
    from .plots import plot_depth

    if args.strategy not in STRATEGIES:
        raise UserError(f"--strategy {args.strategy!r} is not known: use one of {', '.join(STRATEGIES)}")
    if args.min_keep is not None and args.min_keep < 1:
        raise UserError(f"--min-keep {args.min_keep} must be >= 1")
    if args.rounds < 0:
        raise UserError(f"--rounds {args.rounds} must be >= 0")
    for flag, v in (("--max-seqs", args.max_seqs), ("--batch-size", args.batch_size)):
        if v is not None and v < 1:
            raise UserError(f"{flag} {v} must be >= 1")
    if args.device not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device {args.device!r} is not known: use cpu, cuda or auto")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available; use --device cpu")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    for m in args.models:  # every folder checked before any is loaded
        check_model_folder(m, "--models")
    inputs = list(args.models) + [c for c in (args.corpus or []) if Path(c).exists()]
    check_out(Path(args.out), resume=False, resumable=False, overwrite=args.overwrite, inputs=inputs)
    names = model_names(args.models)
    models, batches, about, probs, causal = {}, {}, {}, {}, {}
    for m, name in zip(args.models, names):
        tm = load_trained(m, "--models")
        _, blocks = block_list(tm.model)
        if args.min_keep is not None and args.min_keep > len(blocks):
            raise UserError(f"--min-keep {args.min_keep} is more than the {len(blocks)} blocks of {m}")
        if tm.causal and not args.corpus and not tm.run:
            raise UserError(f"--models {m}: a causal LM folder; give --corpus for its validation text")
        batches[name], about[name] = validation_for(tm, args.corpus, max_seqs=args.max_seqs,
                                                    batch_size=args.batch_size, cache_dir=args.cache_dir)
        models[name] = tm.model.to(device)
        causal[name] = tm.causal  # (a causal run's validation batches carry labels too: the class decides)
        probs[name] = pld_keep_probs(tm.pld, len(blocks))[0]
        print(f"{name}: {len(blocks)} blocks, {about[name]}")
    section = depth_section(models, batches, strategy=args.strategy, min_keep=args.min_keep, rounds=args.rounds,
                            seed=args.seed, causal=causal, probs=probs, device=device)
    result = {"command": "pldrop evaluate-depth", "paths": dict(zip(names, args.models)), "validation": about,
              **section}
    table = format_depth(section)
    out = Path(args.out)
    with staged(out) as st:
        mark_run_folder(st.path, "pldrop evaluate-depth")
        write_json(st.path / "depth.json", result)
        write_text(st.path / "depth.md", f"# Depth on demand\n\nStrategy `{args.strategy}`, no fine-tuning; time "
                                        f"per sequence as a ratio to full depth ({section['timing']['rounds']} "
                                        f"interleaved rounds, medians, {device.type}).\n\n{table}\n")
        plot_depth(section, st.path / "depth.png")
    print(table)
    print(f"depth.json, depth.md and depth.png in {out}")
    return 0
