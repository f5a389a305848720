"""One table of bad inputs (issue 9): each row is a command line a user could type.

Every row must end with exit code 2, exactly one line on stderr that holds the expected words,
and nothing created, changed or removed in the user's folders. Add a row with every bug fixed.
Rows run ``pldrop.cli.main`` in-process; none reaches the training loop.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pldrop.cli import main

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "corpus"
TINY = FIXTURES / "tiny.txt"


def _run_folder(path: Path, **extra: str) -> Path:
    """A finished-looking pldrop run folder."""
    from pldrop.train.rundir import mark_run_folder, record

    path.mkdir(parents=True)
    mark_run_folder(path, "pldrop pretrain")
    for name in ("config.yaml", "pldrop.json", "metrics.jsonl", "summary.json", "CREDITS.md"):
        (path / name).write_text("{}\n")
        record(path / name)  # as pldrop writes them
    for name, text in extra.items():
        (path / name).write_text(text)
    return path


def _model_json(w: Path, **kw) -> str:
    base = dict(model_type="roberta-prelayernorm", hidden_size=32, num_attention_heads=2, num_hidden_layers=2,
                intermediate_size=64, max_position_embeddings=130, hidden_act="gelu")
    base.update(kw)
    (w / "model.json").write_text(json.dumps(base))
    return str(w / "model.json")


def _yaml(w: Path, text: str) -> str:
    (w / "c.yaml").write_text(text)
    return str(w / "c.yaml")


def _utf16(w: Path) -> str:
    (w / "wide.txt").write_bytes(TINY.read_text(encoding="utf-8").encode("utf-16"))
    return str(w / "wide.txt")


def _file(w: Path, name="f") -> str:
    (w / name).write_text("a user's file\n")
    return str(w / name)


def _symlink(w: Path) -> str:
    _run_folder(w / "real")
    (w / "link").symlink_to(w / "real")
    return str(w / "link")


def _corpus_folder_run(w: Path) -> str:
    d = _run_folder(w / "d")
    (d / "corpus.txt").write_text(TINY.read_text(encoding="utf-8"))
    return str(d)


def _hf_model(w: Path, family: str = "bert") -> str:
    """A saved tiny HF model folder (3 blocks; BERT, or an encoder-decoder T5 whose blocks pldrop cannot shrink)."""
    import transformers as T

    if family == "t5":
        model = T.T5ForConditionalGeneration(T.T5Config(vocab_size=99, d_model=32, d_ff=37, num_layers=2, num_heads=2,
                                                        d_kv=16))
    else:
        model = T.BertForMaskedLM(T.BertConfig(vocab_size=99, hidden_size=32, num_attention_heads=2,
                                               intermediate_size=37, num_hidden_layers=3))
    model.save_pretrained(w / family)
    return str(w / family)


def _odd_config(w: Path) -> str:
    (w / "odd").mkdir()
    (w / "odd" / "config.json").write_text('{"model_type": "no-such-family"}')
    (w / "odd" / "model.safetensors").write_bytes(b"x")
    return str(w / "odd")


BENCH_FILES = {"step": ("bench_step.json", "bench_step.md"), "converge": ("converge.json", "converge.md"),
               "report": ("report.json", "report.md"), "compare": ("compare.json", "results.json", "report.md")}


def _bench(w: Path, name: str, kind: str) -> str:
    """A finished-looking folder of `pldrop bench step|converge`, `pldrop report` or `pldrop compare`."""
    from pldrop.train.rundir import mark_run_folder, record

    path = w / name
    path.mkdir()
    mark_run_folder(path, f"pldrop {kind}")
    for f in BENCH_FILES[kind]:
        (path / f).write_text('{"old": "results"}\n')
        record(path / f)
    return str(path)


def _unrecorded(w: Path) -> str:
    run = _run_folder(w / "old")
    (run / ".pldrop-files.jsonl").unlink()
    return str(run)


def _linked(w: Path, name: str) -> str:
    """A run folder whose lock or marker is a link to a user's file."""
    run = _run_folder(w / "run")
    (w / "important.txt").write_text("precious\n")
    (run / name).unlink(missing_ok=True)
    (run / name).symlink_to(w / "important.txt")
    return str(run)


P = ["pretrain", "--preset", "tiny", "--max-steps", "1", "--no-progress"]
B = ["bench", "step", "--quick", "--no-progress", "--no-tcmalloc"]
BC = ["bench", "converge", "--quick", "--no-progress", "--no-tcmalloc", "data.vocab_size=400"]
R = ["report", "--quick", "--no-progress", "--no-tcmalloc", "--no-downstream", "--no-step", "data.vocab_size=400"]
RD = [x for x in R if x != "--no-downstream"]  # with fine-tuning
C = ["compare", "--preset", "tiny", "--max-steps", "1", "--no-progress"]

# (id, argv builder taking the user's folder w, expected words in the one-line error)
ROWS = [
    # --out and --overwrite (item 1)
    ("out empty", lambda w: P + ["--corpus", str(TINY), "--out", ""], "current folder"),
    ("out dot", lambda w: P + ["--corpus", str(TINY), "--out", "."], "current folder"),
    ("out a file", lambda w: P + ["--corpus", str(TINY), "--out", _file(w)], "is a file"),
    ("out below a file", lambda w: P + ["--corpus", str(TINY), "--out", _file(w) + "/run"], "is a file"),
    ("out a symlink", lambda w: P + ["--corpus", str(TINY), "--out", _symlink(w), "--overwrite"], "symbolic link"),
    ("overwrite: thesis.tex in the run",
     lambda w: P + ["--corpus", str(TINY), "--out", str(_run_folder(w / "run", **{"thesis.tex": "x"})), "--overwrite"],
     "thesis.tex"),
    ("overwrite: a folder pldrop did not make",
     lambda w: P + ["--corpus", str(TINY), "--out", str(Path(_file(w / "mine" if (w / "mine").mkdir() is None
                                                                     else w, "n.md")).parent), "--overwrite"],
     "not a pldrop run folder"),
    ("overwrite: --corpus d --out d",
     lambda w: P + ["--corpus", _corpus_folder_run(w), "--out", str(w / "d"), "--overwrite"], "holds the run's input"),
    ("overwrite: the corpus file inside --out",
     lambda w: P + ["--corpus", _corpus_folder_run(w) + "/corpus.txt", "--out", str(w / "d"), "--overwrite"],
     "holds the run's input"),
    ("overwrite: the config file inside --out",
     lambda w: P + ["--corpus", str(TINY), "--out", str(_run_folder(w / "run", **{"config.yaml": "seed: 1\n"})),
                    "--config", str(w / "run" / "config.yaml"), "--overwrite"], "holds the run's input"),
    ("overwrite: a typo in --corpus leaves the old run",
     lambda w: P + ["--corpus", str(w / "typo.txt"), "--out", str(_run_folder(w / "prev")), "--overwrite"],
     "corpus path not found"),
    ("compare overwrite: a typo in --corpus leaves the old run",
     lambda w: C + ["--corpus", str(w / "typo.txt"), "--out", str(_run_folder(w / "prev")), "--overwrite"],
     "corpus path not found"),
    ("existing run without a flag", lambda w: P + ["--corpus", str(TINY), "--out", str(_run_folder(w / "run"))],
     "--resume to continue it or --overwrite"),
    # issue 23: what pldrop wrote is what its manifest records, whatever the names; links are never followed
    ("overwrite: a user's picture named like a plot",
     lambda w: P + ["--corpus", str(TINY), "--out", str(_run_folder(w / "run", **{"val_loss_mine.png": "x"})),
                    "--overwrite"], "val_loss_mine.png"),
    ("overwrite: a run folder without a manifest (an older pldrop)",
     lambda w: P + ["--corpus", str(TINY), "--out", _unrecorded(w), "--overwrite"], "kept no record"),
    ("resume: the lock is a link", lambda w: P + ["--out", _linked(w, ".pldrop.lock"), "--resume"], "symbolic link"),
    ("overwrite: the marker is a link",
     lambda w: P + ["--corpus", str(TINY), "--out", _linked(w, ".pldrop-run"), "--overwrite"], "symbolic link"),
    ("resume and overwrite",
     lambda w: P + ["--corpus", str(TINY), "--out", str(_run_folder(w / "run")), "--resume", "--overwrite"],
     "exclude each other"),
    # values (item 6)
    ("cache-dir a file", lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"), "--cache-dir", _file(w)],
     "is a file"),
    ("huge seed", lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"), "--seed", "99999999999999999999999"],
     "must be in [0, 2**63)"),
    ("negative seed", lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"), "--seed", "-1"], "seed=-1"),
    ("beta1 1.5", lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"), "optim.beta1=1.5"], "optim.beta1=1.5"),
    ("eps -1", lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"), "optim.eps=-1"], "optim.eps=-1.0"),
    ("beta2 nan", lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"), "optim.beta2=nan"], "optim.beta2=nan"),
    ("lr nan", lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"), "optim.lr=nan"], "optim.lr=nan"),
    ("theta_bar nan", lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"), "pld.theta_bar=nan"],
     "pld.theta_bar=nan"),
    ("threads -1", lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"), "--threads", "-1"], "threads=-1"),
    ("max-minutes inf", lambda w: ["pretrain", "--corpus", str(TINY), "--out", str(w / "r"), "--max-minutes", "inf"],
     "budget.max_minutes=inf"),
    ("config_file a list", lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"),
                                          f"model.config_file={_yaml(w, '[1, 2]')}"], "holds a JSON list"),
    ("config_file heads", lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"),
                                         f"model.config_file={_model_json(w, num_attention_heads=3)}"],
     "does not divide hidden_size"),
    ("config_file hidden_act", lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"),
                                              f"model.config_file={_model_json(w, hidden_act='nope')}"],
     "hidden_act='nope' is not known"),
    ("config_file positions", lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"),
                                             f"model.config_file={_model_json(w, max_position_embeddings=64)}"],
     "max_position_embeddings=64 is too small"),
    ("config section a scalar", lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"),
                                               "--config", _yaml(w, "optim: 0\n")], "config section optim must be"),
    ("config lr a word", lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"),
                                        "--config", _yaml(w, "optim:\n  lr: fast\n")], "must be a number"),
    ("depth schedule unknown", lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"), "pld.schedule=linear"],
     "pld.schedule='linear' is not a depth schedule"),
    ("cooldown 1", lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"), "pld.cooldown=1"],
     "pld.cooldown=1.0 is out of range"),
    ("compare cooldown 0", lambda w: C + ["--corpus", str(TINY), "--out", str(w / "r"), "pld.schedule=cooldown",
                                         "pld.cooldown=0"], "pld.cooldown=0.0 is out of range"),
    ("deepspeed PLD block with another schedule",
     lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"), "pld.schedule=anneal", "--deepspeed",
                    _yaml(w, '{"progressive_layer_drop": {"enabled": true}}')], "is the pld schedule"),
    ("demo theta-bar 0", lambda w: ["demo", "--theta-bar", "0"], "--theta-bar 0.0"),
    ("demo theta-bar nan", lambda w: ["demo", "--theta-bar", "nan"], "--theta-bar nan"),
    ("demo threads 0", lambda w: ["demo", "--threads", "0"], "--threads 0"),
    # data (item 7)
    ("corpus an empty name", lambda w: P + ["--corpus", "", "--out", str(w / "r")], "empty corpus name"),
    ("seq_len absurd", lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"), "data.seq_len=1000000000"],
     "data.seq_len=1000000000"),
    ("corpus UTF-16", lambda w: P + ["--corpus", _utf16(w), "--out", str(w / "r")], "is UTF-16 text"),
    ("decoder vocabulary below the byte-level BPE's 258",
     lambda w: P + ["--arm", "llama", "--corpus", str(TINY), "--out", str(w / "r"), "data.vocab_size=200"],
     "vocab_size must be an integer >= 258 for a byte-level BPE"),
    # pldrop shrink / evaluate-depth (issue 25)
    ("shrink keep 0", lambda w: ["shrink", "--model", _hf_model(w), "--keep", "0", "--out", str(w / "s")],
     "keep=0 is out of range"),
    ("shrink keep > L", lambda w: ["shrink", "--model", _hf_model(w), "--keep", "4", "--out", str(w / "s")],
     "keep=4 is out of range: give a number of blocks in [1, 3]"),
    ("shrink keep 1.5", lambda w: ["shrink", "--model", _hf_model(w), "--keep", "1.5", "--out", str(w / "s")],
     "keep=1.5 is out of range"),
    ("shrink keep a word", lambda w: ["shrink", "--model", _hf_model(w), "--keep", "half", "--out", str(w / "s")],
     "is not a number"),
    ("shrink unknown strategy",
     lambda w: ["shrink", "--model", _hf_model(w), "--keep", "2", "--strategy", "bottom", "--out", str(w / "s")],
     "--strategy 'bottom' is not known"),
    ("shrink a run without its final model",
     lambda w: ["shrink", "--model", str(_run_folder(w / "run")), "--keep", "1", "--out", str(w / "s")],
     "no final model"),
    ("shrink a folder with no model",
     lambda w: ["shrink", "--model", str(Path(_file((w / "m").mkdir() or w / "m")).parent), "--keep", "1",
                "--out", str(w / "s")],
     "no config.json"),
    ("shrink a missing folder", lambda w: ["shrink", "--model", str(w / "nope"), "--keep", "1", "--out", str(w / "s")],
     "not found"),
    ("shrink an unknown family",
     lambda w: ["shrink", "--model", _hf_model(w, "t5"), "--keep", "1", "--out", str(w / "s")],
     "not a family pldrop can shrink"),
    ("shrink an unknown model_type", lambda w: ["shrink", "--model", _odd_config(w), "--keep", "1", "--out", str(w / "s")],
     "cannot read its config"),
    ("shrink greedy without validation data",
     lambda w: ["shrink", "--model", _hf_model(w), "--keep", "2", "--strategy", "greedy", "--out", str(w / "s")],
     "give --corpus"),
    ("shrink into an existing folder", lambda w: ["shrink", "--model", _hf_model(w), "--keep", "2", "--out", str(w)],
     "current folder"),
    ("shrink into an existing run folder advises only flags shrink takes",
     lambda w: ["shrink", "--model", _hf_model(w), "--keep", "2", "--out", str(_run_folder(w / "old"))],
     "already exists; pass --overwrite to replace it or choose another --out"),
    ("evaluate-depth into an existing run folder advises only flags it takes",
     lambda w: ["evaluate-depth", "--models", _hf_model(w), "--corpus", str(TINY), "--out", str(_run_folder(w / "old"))],
     "already exists; pass --overwrite to replace it or choose another --out"),
    ("evaluate-depth min-keep 0",
     lambda w: ["evaluate-depth", "--models", _hf_model(w), "--min-keep", "0", "--out", str(w / "d")], "--min-keep 0"),
    ("evaluate-depth min-keep > L",
     lambda w: ["evaluate-depth", "--models", _hf_model(w), "--min-keep", "5", "--corpus", str(TINY),
                "--out", str(w / "d")], "more than the 3 blocks"),
    ("evaluate-depth a plain folder without --corpus",
     lambda w: ["evaluate-depth", "--models", _hf_model(w), "--out", str(w / "d")], "give --corpus"),
    ("evaluate-depth a run without its final model",
     lambda w: ["evaluate-depth", "--models", str(_run_folder(w / "run")), "--out", str(w / "d")], "no final model"),
    # bench and report (issue 23 items 3, 8, 9): every input checked before the old folder is touched
    ("bench converge overwrite: a missing corpus leaves the old results",
     lambda w: BC + ["--overwrite", "--out", _bench(w, "c", "converge"), "--corpus", str(w / "missing.txt")],
     "corpus path not found"),
    ("report overwrite: a missing corpus leaves the old report",
     lambda w: R + ["--overwrite", "--out", _bench(w, "r", "report"), "--corpus", str(w / "missing.txt")],
     "corpus path not found"),
    ("bench step overwrite: a GPU this machine lacks",
     lambda w: B + ["--overwrite", "--out", _bench(w, "s", "step"), "--device", "cuda:99"], "--device cuda:99"),
    ("bench step overwrite: not a device",
     lambda w: B + ["--overwrite", "--out", _bench(w, "s", "step"), "--device", "gpu"], "--device 'gpu'"),
    ("bench step: seq-len 100000", lambda w: B + ["--out", str(w / "s"), "--seq-len", "100000"], "--seq-len 100000"),
    ("bench step: more memory than the machine has",
     lambda w: B + ["--out", str(w / "s"), "--seq-len", "65536", "--batch-size", "64"], "more than the"),
    ("bench step: vocab-size 0", lambda w: B + ["--out", str(w / "s"), "--vocab-size", "0"], "--vocab-size 0"),
    ("bench step: schedule-steps 0", lambda w: B + ["--out", str(w / "s"), "--schedule-steps", "0"],
     "--schedule-steps 0"),
    ("bench step: threads 0 creates no folder", lambda w: B + ["--out", str(w / "s"), "--threads", "0"], "--threads 0"),
    ("bench converge: threads 0 creates no folder",
     lambda w: BC + ["--out", str(w / "s"), "--corpus", str(TINY), "--threads", "0"], "--threads 0"),
    ("bench step overwrite: a finished comparison is not a bench folder",
     lambda w: B + ["--overwrite", "--out", _bench(w, "cmp", "compare")], "the output of `pldrop compare`"),
    ("bench converge overwrite: a bench step folder",
     lambda w: BC + ["--overwrite", "--out", _bench(w, "s", "step"), "--corpus", str(TINY)],
     "the output of `pldrop bench step`"),
    # fine-tuning values refused before any pretraining (issue 26 item 3: they failed after it)
    ("report: ft-epochs 0", lambda w: RD + ["--out", str(w / "r"), "--corpus", str(TINY), "--ft-epochs", "0"],
     "--ft-epochs 0"),
    ("report: ft-max-steps 0", lambda w: RD + ["--out", str(w / "r"), "--corpus", str(TINY), "--ft-max-steps", "0"],
     "--ft-max-steps 0"),
    ("report resume: a finished comparison",
     lambda w: R + ["--resume", "--out", _bench(w, "cmp", "compare"), "--corpus", str(TINY)],
     "the output of `pldrop compare`"),
    # settings that disagree are refused, not resolved silently (issue 23 item 9)
    ("compare --bf16 --precision fp32",
     lambda w: C + ["--corpus", str(TINY), "--out", str(w / "r"), "--bf16", "--precision", "fp32"],
     "--bf16 and --precision fp32 disagree"),
    ("pretrain --bf16 --precision fp32",
     lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"), "--bf16", "--precision", "fp32"],
     "--bf16 and --precision fp32 disagree"),
    ("compare --downstream an unknown task, before training",
     lambda w: C + ["--corpus", str(TINY), "--out", str(w / "r"), "--downstream", "no-such-task"],
     "--downstream no-such-task: unknown task"),
    ("compare --downstream swallows an override",
     lambda w: C + ["--corpus", str(TINY), "--out", str(w / "r"), "--downstream", "trec6", "data.vocab_size=400"],
     "give key=value overrides before --downstream"),
    ("compare --downstream-max-steps 0",
     lambda w: C + ["--corpus", str(TINY), "--out", str(w / "r"), "--downstream", "trec6", "--downstream-max-steps",
                    "0"], "give at least 1"),
    *[(f"compare --downstream-depths {v}",
       lambda w, v=v: C + ["--corpus", str(TINY), "--out", str(w / "r"), "--downstream", "trec6",
                           "--downstream-depths", "1", v],
       f"--downstream-depths {v}: give fractions of the model's blocks in (0, 1]") for v in ("0", "1.5", "abc")],
    ("compare --downstream-depths without --downstream",
     lambda w: C + ["--corpus", str(TINY), "--out", str(w / "r"), "--downstream-depths", "0.5"],
     "--downstream-depths sets the fine-tuning of --downstream TASK"),
    ("compare --downstream-data without --downstream",
     lambda w: C + ["--corpus", str(TINY), "--out", str(w / "r"), "--downstream-data", str(w)], "give the tasks too"),
    ("compare model.arm override", lambda w: C + ["--corpus", str(TINY), "--out", str(w / "r"), "model.arm=preln"],
     "model.arm=preln: compare trains the arms of --arms"),
    ("compare seed override", lambda w: C + ["--corpus", str(TINY), "--out", str(w / "r"), "seed=7"],
     "give --seed 7 instead"),
    ("compare deepspeed override", lambda w: C + ["--corpus", str(TINY), "--out", str(w / "r"), "deepspeed=ds.json"],
     "without DeepSpeed"),
    ("pretrain --arm and model.arm",
     lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"), "--arm", "pld", "model.arm=baseline"],
     "--arm pld and model.arm=baseline disagree"),
    ("pretrain --preset and model.preset",
     lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"), "model.preset=base"],
     "--preset tiny and model.preset=base disagree"),
    ("pretrain --bf16 and optim.precision",
     lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"), "--bf16", "optim.precision=fp32"],
     "--bf16 and optim.precision=fp32 disagree"),
    ("pretrain optim.bf16 and optim.precision",
     lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"), "optim.bf16=true", "optim.precision=fp32"],
     "optim.bf16=true and optim.precision=fp32 disagree"),
    ("pretrain one key twice", lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"), "optim.lr=1e-3",
                                              "optim.lr=2e-3"], "optim.lr=1e-3 and optim.lr=2e-3 disagree"),
    ("compare --pld-lr and optim.lr",
     lambda w: C + ["--corpus", str(TINY), "--out", str(w / "r"), "--pld-lr", "1e-3", "optim.lr=5e-4"],
     "optim.lr=5e-4 (every arm) and --pld-lr disagree"),
    ("compare --theta-bar and pld.theta_bar",
     lambda w: C + ["--corpus", str(TINY), "--out", str(w / "r"), "--theta-bar", "0.7", "pld.theta_bar=0.5"],
     "--theta-bar 0.7 and pld.theta_bar=0.5 disagree"),
    # the arms table (issue 24 item 3)
    ("compare --arms nope", lambda w: C + ["--corpus", str(TINY), "--out", str(w / "r"), "--arms", "pld", "nope"],
     "--arms: unknown arm nope; known arms: baseline, preln, pld, postln-pld, pld-cooldown"),
    ("compare --arms preln llama (masked and causal LMs)",
     lambda w: C + ["--corpus", str(TINY), "--out", str(w / "r"), "--arms", "preln", "llama"],
     "--arms preln llama: preln trains a masked LM and llama a causal LM; their losses are not comparable"),
    ("pretrain --arm nope", lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"), "--arm", "nope"],
     "--arm nope: unknown arm nope; known arms: baseline"),
    ("compare --lr nope=1", lambda w: C + ["--corpus", str(TINY), "--out", str(w / "r"), "--lr", "nope=1"],
     "--lr nope=1: unknown arm nope; known arms: baseline"),
    ("compare --lr pld=abc", lambda w: C + ["--corpus", str(TINY), "--out", str(w / "r"), "--lr", "pld=abc"],
     "--lr pld=abc: the rate must be a number > 0"),
    ("compare --lr pld=-1", lambda w: C + ["--corpus", str(TINY), "--out", str(w / "r"), "--lr", "pld=-1"],
     "--lr pld=-1: the rate must be a number > 0"),
    ("compare --lr pld=nan", lambda w: C + ["--corpus", str(TINY), "--out", str(w / "r"), "--lr", "pld=nan"],
     "--lr pld=nan: the rate must be a number > 0"),
    ("compare --lr without =", lambda w: C + ["--corpus", str(TINY), "--out", str(w / "r"), "--lr", "3e-3"],
     "--lr 3e-3: give ARM=RATE"),
    ("compare --lr of an arm not compared",
     lambda w: C + ["--corpus", str(TINY), "--out", str(w / "r"), "--lr", "pld-anneal=1e-3"],
     "pld-anneal is not one of the arms compared (baseline preln pld)"),
    ("compare --pld-lr and --lr pld disagree",
     lambda w: C + ["--corpus", str(TINY), "--out", str(w / "r"), "--pld-lr", "1e-3", "--lr", "pld=2e-3"],
     "--pld-lr 0.001 and --lr pld=2e-3 disagree"),
    ("compare --lr pld twice", lambda w: C + ["--corpus", str(TINY), "--out", str(w / "r"), "--lr", "pld=1e-3",
                                              "--lr", "pld=2e-3"], "--lr pld=1e-3 and --lr pld=2e-3 disagree"),
    ("compare --lr and optim.lr",
     lambda w: C + ["--corpus", str(TINY), "--out", str(w / "r"), "--lr", "pld=1e-3", "optim.lr=5e-4"],
     "optim.lr=5e-4 (every arm) and --lr pld=1e-3 disagree"),
    ("compare a variant arm against its schedule override",
     lambda w: C + ["--corpus", str(TINY), "--out", str(w / "r"), "pld.schedule=anneal", "--arms", "preln",
                    "pld-cooldown"], "--arms pld-cooldown trains with pld.schedule=cooldown"),
    ("compare an override after --arms",
     lambda w: C + ["--corpus", str(TINY), "--out", str(w / "r"), "--arms", "preln", "pld", "pld.schedule=anneal"],
     "unknown arm pld.schedule=anneal; known arms: baseline, preln, pld, postln-pld, pld-cooldown, sd-constant, "
     "pld-anneal, llama, llama-pld, llama-pld-cooldown; give key=value overrides before --arms"),
    ("pretrain a variant arm against its schedule override",
     lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"), "--arm", "sd-constant", "pld.schedule=pld"],
     "--arm sd-constant trains with pld.schedule=constant"),
    ("compare --report-only with --lr",
     lambda w: C[:1] + ["--out", _compare_json(w), "--report-only", "--lr", "pld=1e-3"], "leave out --lr"),
    # compare's own files (issue 23 items 6-8)
    ("compare --resume of a merge", lambda w: C + ["--out", _merged(w), "--resume"], "was joined by --merge"),
    ("compare --report-only: damaged compare.json seeds",
     lambda w: C[:1] + ["--out", _compare_json(w, seeds=5), "--report-only"], "(seeds is 5, not a list"),
    ("compare --report-only: unknown arm in compare.json",
     lambda w: C[:1] + ["--out", _compare_json(w, arms=["baseline", "nope"]), "--report-only"],
     "compare.json' is damaged (arms ['baseline', 'nope']"),
    ("compare --resume: unknown arm in compare.json",
     lambda w: C + ["--out", _compare_json(w, arms=["nope"]), "--resume"], "compare.json' is damaged"),
    ("compare --report-only with training flags",
     lambda w: C + ["--out", _compare_json(w), "--report-only", "--precision", "fp32"],
     "leave out --preset --max-steps --precision"),
    ("compare --merge into an existing folder",
     lambda w: C[:1] + ["--merge", _compare_json(w, "a"), _compare_json(w, "b"), "--out", _taken(w)],
     "already exists; choose another folder, or pass --overwrite"),
]


def _compare_json(w: Path, name: str = "cmp", **fields) -> str:
    """A comparison folder (compare.json only) with ``fields`` set in its compare.json."""
    d = w / name
    d.mkdir()
    (d / "compare.json").write_text(json.dumps({"arms": ["baseline", "pld"], "seeds": [0], **fields}))
    return str(d)


def _taken(w: Path) -> str:
    (w / "taken").mkdir()
    _file(w / "taken", "notes.md")
    return str(w / "taken")


def _merged(w: Path) -> str:
    return _compare_json(w, merged_from=["a", "b"])


@pytest.mark.parametrize("build,expected", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_bad_input_is_one_line_exit_2_and_touches_nothing(tmp_path, monkeypatch, capsys, build, expected):
    world = tmp_path / "w"  # the user's folders (and the current directory)
    world.mkdir()
    (world / "keep.txt").write_text("the user's own file\n")
    monkeypatch.chdir(world)
    monkeypatch.setenv("PLDROP_CACHE", str(tmp_path / "cache"))
    argv = build(world)
    before = _snapshot(world)
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert expected in err, err
    assert _snapshot(world) == before  # nothing created, changed or removed


def _snapshot(folder: Path) -> dict[str, object]:
    out = {}
    for p in sorted(folder.rglob("*")):
        key = str(p.relative_to(folder))
        if p.is_symlink():
            out[key] = ("link", os.readlink(p))
        elif p.is_file():
            out[key] = p.read_bytes()
        else:
            out[key] = "dir"
    return out


def test_read_only_out_parent(read_only_dir, capsys):
    assert main(P + ["--corpus", str(TINY), "--out", str(read_only_dir / "run")]) == 2
    assert "not writable" in capsys.readouterr().err


PROBE = """
import sys
from pldrop.cli import main
main(["demo", "--theta-bar", "0"])  # any command: the CLI sets the probe up at start
from pldrop.models import build_model
build_model("pld", 99, "tiny", seq_len=16).save_pretrained(sys.argv[1])
print("deepspeed imported:", "deepspeed" in sys.modules)
"""


@pytest.mark.slow  # a fresh interpreter imports transformers (5-20 s under load)
def test_deepspeed_is_not_imported_unless_asked_for(tmp_path):
    """accelerate's save_pretrained path imported DeepSpeed (and printed its accelerator warning) on every command."""
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        pytest.skip("DeepSpeed is not installed: nothing could import it")
    p = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "m")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "deepspeed imported: False" in p.stdout
    assert "Setting accelerator" not in p.stderr
    assert (tmp_path / "m" / "model.safetensors").is_file()


def test_compare_under_torchrun_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    """Issue 23 item 8: under torchrun rank 1 failed on the lock, rank 0 died in a broadcast, half a folder stayed."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    for extra in ([], ["--report-only"], ["--merge", "a", "b"]):
        assert main(C + ["--corpus", str(TINY), "--out", str(tmp_path / "r"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "does not run under torchrun (WORLD_SIZE=2)" in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.multiprocess
def test_compare_under_real_torchrun_is_refused(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed next to this Python")
    p = subprocess.run([str(torchrun), "--nproc_per_node=2", "-m", "pldrop", *C, "--corpus", str(TINY),
                        "--out", str(tmp_path / "r")], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                       env={**os.environ, "PLDROP_CACHE": str(tmp_path / "cache")})
    assert p.returncode != 0
    # the first rank to refuse exits 2 and torchrun stops the other with SIGTERM: under load that one may not
    # have printed its refusal yet, and then says it stopped before writing anything -- both are fine
    said = [ln for ln in p.stderr.splitlines() if ln.startswith("pldrop compare")]
    assert said and "does not run under torchrun" in said[0], p.stderr
    assert all("does not run under torchrun" in ln or "stopped before anything was written" in ln for ln in said), said
    # torchrun prints its own traceback (ChildFailedError); none comes from pldrop's processes
    assert "Traceback" not in p.stderr.split("failed (exitcode: 2)")[0], p.stderr
    assert not [ln for ln in p.stderr.splitlines() if 'File "' in ln and "pldrop" in ln.split('File "')[1]], p.stderr
    assert not (tmp_path / "r").exists()


# modules whose messages reach users of one command, and the commands that show them
MESSAGE_MODULES = {
    "compare": ["train/compare.py", "train/merge.py", "train/finished.py", "train/run.py", "train/loop.py",
                "train/lockstep.py", "train/rundir.py", "train/config.py"],
    "pretrain": ["train/cli.py", "train/run.py", "train/loop.py", "train/rundir.py", "train/config.py"],
    "finetune": ["tasks/files.py"],
    "evaluate": ["tasks/files.py"],
}
# flags that a shared module names only where the command takes them (each checked by hand)
NAMED_ELSEWHERE = {
    "--allow-data-change": "run.py advises it only where PretrainRun.data_change_flag (pretrain)",
    "--arm": "run.py: a --deepspeed config enabling PLD (pretrain only: compare refuses deepspeed)",
    "--deepspeed": "run.py/config.py: a DeepSpeed run (pretrain only: compare refuses deepspeed)",
    "--fsdp": "run.py/config.py: an FSDP run (pretrain only: compare refuses fsdp)",
    "--nproc_per_node": "torchrun's flag, not pldrop's",
    "--theta-bar": "cli.py FLAG_NAMES: named only for the flags compare passes",
    "--paper-lrs": "cli.py FLAG_NAMES: named only for the flags compare passes",
}


def _option_strings(command: str) -> set[str]:
    from pldrop.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if hasattr(a, "choices") and isinstance(a.choices, dict))
    return {o for a in sub.choices[command]._actions for o in a.option_strings}


@pytest.mark.parametrize("command", list(MESSAGE_MODULES))
def test_every_flag_named_in_messages_is_one_the_command_takes(command):
    """Issue 23 item 9: messages advised --allow-data-change to compare, regression=True for --regression."""
    import ast
    import re

    root = Path(__file__).resolve().parents[1] / "src" / "pldrop"
    flags = _option_strings(command)
    bad = []
    for rel in MESSAGE_MODULES[command]:
        tree = ast.parse((root / rel).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*[a-z0-9]", node.value):
                    if flag not in flags and flag not in NAMED_ELSEWHERE:
                        bad.append(f"{rel}: {flag}")
    assert not bad, bad
    if command in ("finetune", "evaluate"):
        assert "--regression" in flags


def test_one_class_labels_advise_the_flag_finetune_takes(tmp_path):
    """Issue 23 item 9: the message advised ``regression=True`` (Python) where the command's flag is --regression."""
    from pldrop.errors import UserError
    from pldrop.tasks import load_task

    (tmp_path / "train.jsonl").write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 1}\n')
    (tmp_path / "dev.jsonl").write_text('{"text": "c", "label": 1}\n')
    with pytest.raises(UserError, match="pass --regression"):
        load_task("c", tmp_path)
