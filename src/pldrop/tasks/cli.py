"""`pldrop finetune`: fine-tune a pretrained model on one task, once per seed."""

from __future__ import annotations

import argparse
from pathlib import Path

TASKS_HELP = """\
tasks (--task):
  cola sst2 mrpc stsb qqp mnli qnli rte wnli
                           GLUE; --data GLUE_DIR (the official download's layout) or
                           hf:nyu-mll/glue (the default; needs the hub or a local HF cache)
  movie-polarity trec6 sms-spam bbc-topic
                           offline recipes with fixed 80/10/10 splits (no --data); the test
                           split is scored with the best dev checkpoint
  any other name           your own files: --data DIR (train.* and dev.*, csv/tsv/jsonl) or
                           --data TRAIN,DEV; columns from --text-columns and --label-column
"""

FINETUNE_EPILOG = TASKS_HELP + """
output (--out):
  results.json             dev metrics (mean over seeds), std, per-seed values and history,
                           test metrics (recipes), settings
  predictions_<split>.tsv  index, label, prediction per example (several seeds:
                           predictions_<split>_seed<S>.tsv)
  model/                   the best checkpoint, with --save-model

model (--model): a `pldrop pretrain` run folder (Post-LN -> BertForSequenceClassification,
Pre-LN -> RobertaPreLayerNormForSequenceClassification), any Hugging Face model folder with a
sequence-classification head, or hf:NAME. Every block runs while fine-tuning (no PLD, no
LayerDrop) unless --pld is given.

learning rate (no --lr): as BERT and the PLD paper did, every seed runs at each rate of a small
grid and the rate with the best mean dev score is kept; results.json reports every rate's dev
(and test) scores under lr_grid, and predictions_<split>_lr<LR>.tsv holds each rate's predictions.
The grid by the model's hidden size (pldrop.tasks.lr; measured in docs/finetune.md):
  hidden <  512  1e-4 5e-4 2e-3   presets tiny, narrow (12 x H128), mini; measured on tiny and
                                  narrow, which learned nothing at BERT's 5e-5
  hidden <  768  5e-5 1e-4 3e-4   presets small, medium (Turc et al. 2019's grid, one step up)
  hidden >= 768  2e-5 3e-5 5e-5   preset base, BERT-base and wider (Devlin et al. 2019, A.3)
So the default costs 3 runs per seed (3 with --seeds 0; 9 with --seeds 1 2 3). The chosen
rate's dev score is optimistic twice over (rate and checkpoint picked on dev); the recipes'
test split is scored with each rate's best dev checkpoint and is the honest number.

example:
  pldrop finetune --model runs/pld --task trec6 --out ft/pld-trec6 --seeds 1 2 3

exit codes: 0 done, 2 bad input, 130 interrupted.
"""


def add_training_args(p: argparse.ArgumentParser) -> None:
    """Flags shared by `pldrop finetune` and `pldrop evaluate`: data columns and hyperparameters."""
    data = p.add_argument_group("your own files")
    data.add_argument("--text-columns", default="text", metavar="A[,B]",
                      help="text column(s); two for sentence pairs (default: text)")
    data.add_argument("--label-column", default="label", metavar="Y", help="label column (default: label)")
    kind = data.add_mutually_exclusive_group()
    kind.add_argument("--regression", dest="regression", action="store_const", const=True, default=None,
                      help="numeric labels are scores (default: decided from the train labels)")
    kind.add_argument("--classification", dest="regression", action="store_const", const=False,
                      help="labels are classes, even if they are numbers")

    t = p.add_argument_group("training (BERT's GLUE recipe and learning-rate search by default)")
    t.add_argument("--seeds", type=int, nargs="+", default=[0], metavar="S",
                   help="one run per seed; results are mean ± std over seeds (default: 0)")
    t.add_argument("--epochs", type=int, default=3, metavar="N", help="passes over the train set (default: 3)")
    t.add_argument("--max-steps", type=int, metavar="N", help="optimizer steps in all; overrides --epochs")
    t.add_argument("--lr", type=float, nargs="+", default=None, metavar="LR",
                   help="peak learning rate of AdamW; one rate fixes it, several are your own grid (default: "
                        "3 rates chosen by the model's width, every seed fine-tuned at each and the best mean dev "
                        "score kept, so the default does 3 x seeds runs; see 'learning rate' below)")
    t.add_argument("--batch-size", type=int, default=32, metavar="N", help="examples per step (default: 32)")
    t.add_argument("--warmup-ratio", type=float, default=0.1, metavar="F",
                   help="linear warm-up over this fraction of the steps, then linear decay (default: 0.1)")
    t.add_argument("--weight-decay", type=float, default=0.01, metavar="F", help="AdamW weight decay (default: 0.01)")
    t.add_argument("--max-length", type=int, default=128, metavar="N",
                   help="truncate inputs to N tokens (default: 128; capped at the model's positions)")
    t.add_argument("--clip-grad", type=float, default=1.0, metavar="F", help="gradient-norm clip, 0 = off (default: 1)")
    t.add_argument("--eval-every", type=int, metavar="N",
                   help="dev evaluation every N steps (default: after each epoch); the best is kept")
    t.add_argument("--device", help="cpu, cuda, cuda:1, … (default: the GPU if there is one)")
    t.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
    t.add_argument("--pld", action="store_true", help="fine-tune with Progressive Layer Dropping (default: off)")
    t.add_argument("--pld-theta-bar", type=float, default=0.5, metavar="F", help="θ̄ with --pld (default: 0.5)")
    t.add_argument("--save-model", action="store_true",
                   help="save the best checkpoint (model and tokenizer) in the output folder's model/")
    t.add_argument("--cache-dir", metavar="DIR", help="pldrop cache for the offline recipes (default: $PLDROP_CACHE or "
                                       "~/.cache/pldrop)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--overwrite", action="store_true", help="replace results already in --out")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune a pretrained model on one task (GLUE, offline recipe, your files)",
        description="Fine-tune a model folder on a classification or regression task: AdamW with linear\n"
                    "warm-up and decay, gradient clipping, dev evaluation after each epoch, the best dev\n"
                    "checkpoint kept for the final predictions; one run per seed.",
        epilog=FINETUNE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, metavar="DIR", help="pretrained model folder (or hf:NAME)")
    p.add_argument("--task", required=True, metavar="NAME", help="task name (see below)")
    p.add_argument("--data", metavar="DIR|FILES",
                   help="the task's data: GLUE folder, hf:REPO, your folder or TRAIN,DEV")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_training_args(p)
    p.set_defaults(run=run)


def text_columns(args) -> list[str]:
    """``--text-columns a,b`` as a list, checked."""
    from pldrop.errors import UserError

    cols = [c.strip() for c in args.text_columns.split(",")]
    if not 1 <= len(cols) <= 2 or not all(cols):
        raise UserError(f"--text-columns {args.text_columns}: expected one column name or two, comma-separated")
    return cols


def finetune_config(args):
    """The :class:`~pldrop.tasks.finetune.FinetuneConfig` of the command-line flags (checked)."""
    from pldrop.tasks.finetune import FinetuneConfig

    lr = None if args.lr is None else args.lr[0] if len(args.lr) == 1 else tuple(args.lr)
    return FinetuneConfig(lr=lr, batch_size=args.batch_size, epochs=args.epochs, max_steps=args.max_steps,
                          warmup_ratio=args.warmup_ratio, weight_decay=args.weight_decay, max_length=args.max_length,
                          clip_grad=args.clip_grad, eval_every=args.eval_every, device=args.device, pld=args.pld,
                          pld_theta_bar=args.pld_theta_bar, save_model=args.save_model)


def setup(args) -> None:
    """Process-wide settings: CPU threads, a checked device; ``args.out`` checked and made a Path."""
    import torch

    from pldrop.errors import UserError

    if isinstance(args.out, str):
        if not args.out.strip():
            raise UserError(f"--out {args.out!r}: expected a folder name (an empty one would mean the current folder)")
        args.out = Path(args.out)

    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads {args.threads}: expected a positive number")
        torch.set_num_threads(args.threads)
    if args.device:
        try:
            dev = torch.device(args.device)
        except RuntimeError:
            raise UserError(f"--device {args.device}: not a device (expected cpu, cuda or cuda:N)") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"--device {args.device}: no CUDA GPU here (use cpu)")


def stop_on_signals() -> None:
    """SIGTERM and SIGINT end a fine-tuning command as an interrupt (exit 130, "interrupted" on
    stderr): finished seeds stay in results.json, a staged --overwrite run is dropped and the old
    one kept."""
    import signal

    def stop(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            signal.signal(sig, stop)
        except ValueError:  # not the main thread: leave the caller's handlers alone
            pass


def run(args) -> int:
    from pldrop.tasks.finetune import finetune
    from pldrop.tasks.results import summary_lines

    cfg = finetune_config(args)
    setup(args)
    stop_on_signals()
    results = finetune(args.model, args.task, args.out, args.data, args.seeds, cfg,
                       text_columns=text_columns(args), label_column=args.label_column,
                       regression=args.regression, cache_dir=args.cache_dir, overwrite=args.overwrite,
                       progress=False if args.no_progress else None)
    print("\n".join(summary_lines(results, args.out)))
    return 0
