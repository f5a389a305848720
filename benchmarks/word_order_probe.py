"""The word-order probe on finished run folders (runs made before `pldrop` logged it itself).

For each run folder given (one with ``model.safetensors``, ``config.yaml`` and the tokenizer), the
final model is scored on its run's validation sequences twice -- in order and with each sequence's
tokens shuffled (``pldrop.train.evaluation.shuffle_order``: same masks, fixed permutations) -- with
the run's own precision, batch size and ``data.val_max_seqs``. A model that reads word order loses
accuracy on shuffled text; a bag-of-words predictor does not. New runs log the same two figures
with their final validation (``val_accuracy_shuffled`` in metrics.jsonl and summary.json).

    python benchmarks/word_order_probe.py RUNS/compare/*-s? --data-seed 0 --json probe.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import yaml


def probe(run: Path, data_seed: int | None = None) -> dict:
    from transformers import AutoModelForMaskedLM

    from pldrop.data.dataset import prepare_data
    from pldrop.train.analysis import word_order
    from pldrop.train.evaluation import evaluate

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    d, o = cfg["data"], cfg["optim"]
    summary = json.loads((run / "summary.json").read_text())
    seed = cfg["seed"] if data_seed is None else data_seed
    data = prepare_data(d["corpus"], seq_len=d["seq_len"], tokenizer_dir=run, val_fraction=d["val_fraction"],
                        seed=seed, mlm_prob=d["mlm_prob"], text_field=d["text_field"],
                        text_column=d["text_column"], progress=False)
    model = AutoModelForMaskedLM.from_pretrained(run).eval()
    bf16 = summary.get("precision") == "bf16"
    args = (model, data.valid, o["batch_size"], d["val_max_seqs"], bf16, torch.device("cpu"))
    plain, shuf = evaluate(*args), evaluate(*args, shuffled=True)
    out = {"run": str(run), "data_seed": seed, "precision": "bf16" if bf16 else "fp32", **plain, **shuf,
           "summary_val_accuracy": summary.get("val_accuracy")}
    out["word_order"] = word_order({"final_val_accuracy": plain["val_accuracy"],
                                    "final_val_accuracy_shuffled": shuf["val_accuracy_shuffled"]})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="finished run folders")
    ap.add_argument("--data-seed", type=int, help="seed of the validation split and masks (default: the run's "
                    "seed; `pldrop compare` prepares one split for all its runs, with the first run's seed, 0)")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    results = []
    for run in args.runs:
        r = probe(run, args.data_seed)
        results.append(r)
        if r["summary_val_accuracy"] is not None and abs(r["val_accuracy"] - r["summary_val_accuracy"]) > 0.01:
            print(f"{run}: the in-order accuracy {r['val_accuracy']:.3f} is not the run's own "
                  f"{r['summary_val_accuracy']:.3f}: wrong --data-seed?", flush=True)
        print(f"{run}: accuracy {r['val_accuracy']:.3f} in order, {r['val_accuracy_shuffled']:.3f} shuffled "
              f"(loss {r['val_loss']:.3f} / {r['val_loss_shuffled']:.3f}); "
              f"{'reads word order' if r['word_order']['uses_order'] else 'bag-of-words predictor'}", flush=True)
    if args.json:
        cmd = "python benchmarks/word_order_probe.py " + " ".join(map(str, args.runs))
        if args.data_seed is not None:
            cmd += f" --data-seed {args.data_seed}"
        args.json.write_text(json.dumps({"command": cmd, "runs": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
