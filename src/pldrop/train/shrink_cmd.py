"""`pldrop shrink`: write a model with K of its L blocks (no fine-tuning), loadable by plain transformers."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from ..errors import UserError

EPILOG = """
strategies (which blocks stay):
  top          drop the highest blocks (keep 0 .. K-1)
  every-other  LayerDrop's: drop positions n-1, n-3, ... of the n blocks left, top down, one at a
               time until K remain (a new pass from the top if needed); K = L/2 keeps 0, 2, 4, ...
  keep-prob    drop the blocks PLD dropped most (lowest keep probability; the run's recorded rule,
               else the linear rule): for pldrop's rules this equals top
  greedy       data-driven: remove, one at a time, the block whose removal costs least in
               validation loss; L + (L-1) + ... + (K+1) validation passes. Needs validation data:
               a pldrop run folder's own split, or --corpus

output (--out): config.json + model.safetensors (save_pretrained, K layers, blocks renumbered),
the tokenizer files, shrink.json (the kept and dropped blocks of the original, the strategy).

example:
  pldrop shrink --model runs/cmp/pld --keep 0.75 --out runs/pld-9of12
  python -c "from transformers import AutoModelForMaskedLM as M; M.from_pretrained('runs/pld-9of12')"

exit codes: 0 written, 2 bad input (nothing written).
"""


def add_parser(sub) -> None:
    p = sub.add_parser("shrink", help="cut a trained model to K of its blocks and save it",
                       description="Write a model with K of its L blocks (no fine-tuning), loadable with "
                                   "AutoModelFor... from_pretrained.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="DIR", help="a pldrop pretrain run folder or an HF model folder")
    p.add_argument("--keep", required=True, metavar="K", help="blocks to keep: a number in [1, L] or a fraction in (0, 1)")
    p.add_argument("--out", required=True, metavar="DIR", help="the folder to write")
    p.add_argument("--strategy", default="top", metavar="NAME", help="top (default), every-other, keep-prob, greedy")
    p.add_argument("--corpus", nargs="+", metavar="SRC", help="validation text for --strategy greedy (default: a "
                   "pldrop run's own validation split)")
    p.add_argument("--max-seqs", type=int, default=None, metavar="N", help="validation sequences for greedy "
                   "(default: the run's data.val_max_seqs, else 256)")
    p.add_argument("--batch-size", type=int, default=None, metavar="N", help="validation batch size (default 32)")
    p.add_argument("--cache-dir", metavar="DIR", help="pldrop cache folder (default $PLDROP_CACHE or ~/.cache/pldrop)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it is a folder pldrop wrote")
    p.set_defaults(run=run)


def parse_keep(text: str) -> float | int:
    """``--keep``: an integer or a fraction.

    >>> parse_keep("6"), parse_keep("0.75"), parse_keep("6.0")
    (6, 0.75, 6)
    """
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise UserError(f"--keep {text!r} is not a number: give a number of blocks (e.g. 6) or a fraction "
                        "in (0, 1) (e.g. 0.5)") from None
    return int(value) if value.is_integer() else value


def check_counts(max_seqs: int | None, batch_size: int | None) -> None:
    for flag, v in (("--max-seqs", max_seqs), ("--batch-size", batch_size)):
        if v is not None and v < 1:
            raise UserError(f"{flag} {v} must be >= 1")


def run(args) -> int:
    from ..prune import STRATEGIES, block_list, check_keep, kept_blocks, shrink_model
    from .checkpoint import atomic_write_text
    from .rundir import check_out, mark_run_folder, recording, staged
    from .trained import TOKENIZER_FILES, check_model_folder, load_trained, pld_keep_probs

    if args.strategy not in STRATEGIES:
        raise UserError(f"--strategy {args.strategy!r} is not known: use one of {', '.join(STRATEGIES)}")
    keep = parse_keep(args.keep)
    check_counts(args.max_seqs, args.batch_size)
    check_model_folder(args.model)
    inputs = [args.model] + [c for c in (args.corpus or []) if Path(c).exists()]
    check_out(Path(args.out), resume=False, resumable=False, overwrite=args.overwrite, inputs=inputs)
    tm = load_trained(args.model)
    _, blocks = block_list(tm.model)
    L = len(blocks)
    k = check_keep(keep, L)
    probs, probs_from = pld_keep_probs(tm.pld, L)
    info = {"source": str(Path(args.model).resolve()), "strategy": args.strategy, "num_layers": L, "keep": k}
    cost = None
    if args.strategy == "greedy" and k < L:
        from .depth import loss_of_blocks, validation_for

        batches, about = validation_for(tm, args.corpus, max_seqs=args.max_seqs, batch_size=args.batch_size,
                                        cache_dir=args.cache_dir)
        cost = loss_of_blocks(tm.model, batches, tm.causal)
        info["validation"] = about
        print(f"greedy: {sum(range(k + 1, L + 1))} validation passes on {about}")
    if args.strategy == "keep-prob":
        info["keep_probs"] = {"values": probs, "from": probs_from}
    kept = kept_blocks(args.strategy, L, k, probs=probs, cost=cost)
    small = shrink_model(tm.model, kept)
    info.update(kept=kept, dropped=[i for i in range(L) if i not in kept])

    out = Path(args.out)
    from ..tasks.classifier import _quiet_transformers

    with staged(out) as st, _quiet_transformers():
        mark_run_folder(st.path, "pldrop shrink")
        with recording(st.path):  # every file written is recorded as pldrop's (--overwrite may replace them)
            small.save_pretrained(str(st.path))
            for name in TOKENIZER_FILES:
                if (tm.path / name).is_file():
                    shutil.copy2(tm.path / name, st.path / name)
        atomic_write_text(st.path / "shrink.json", json.dumps(info, indent=1) + "\n")
    print(f"kept blocks {kept} of {L} ({args.strategy}); dropped {info['dropped']}; model saved in {out}")
    return 0
