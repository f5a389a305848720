"""`pldrop finetune`: learning is real, outputs are consistent, run folders of both arms load.

The synthetic task is clearly separable: every sentence holds "alpha" (label pos) or "beta"
(label neg) among random filler words, balanced, so the majority rate is 50 %.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score

from pldrop.cli import main

FILLER = [f"w{i}" for i in range(60)]
FAST = ["--lr", "2e-3", "--batch-size", "16", "--warmup-ratio", "0", "--no-progress"]


# --- helpers shared with the other test_finetune_* modules --------------------------------------


def make_tiny_model(folder: Path, arch: str = "bert") -> Path:
    """A random-init masked LM (hidden 32, 2 layers) and a word-level BERT tokenizer of FILLER."""
    import torch
    import transformers as T

    folder.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "alpha", "beta", *FILLER]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    T.BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    common = dict(vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=37, max_position_embeddings=64)
    torch.manual_seed(0)
    if arch == "bert":
        model = T.BertForMaskedLM(T.BertConfig(**common))
    else:
        model = T.RobertaPreLayerNormForMaskedLM(T.RobertaPreLayerNormConfig(**common, type_vocab_size=1))
    model.save_pretrained(folder)
    return folder


def keyword_rows(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = ("pos", "neg")[i % 2]
        words = [rng.choice(FILLER) for _ in range(rng.randint(3, 8))]
        words.insert(rng.randint(0, len(words)), "alpha" if label == "pos" else "beta")
        rows.append((" ".join(words), label))
    return rows


def write_keyword_task(folder: Path, n_train: int = 300, n_dev: int = 100, shuffle_train: bool = False) -> Path:
    """train.tsv / dev.tsv of the keyword task; ``shuffle_train`` permutes the train labels."""
    folder.mkdir(parents=True, exist_ok=True)
    train = keyword_rows(n_train, 1)
    if shuffle_train:
        labels = [y for _, y in train]
        random.Random(2).shuffle(labels)
        train = [(t, y) for (t, _), y in zip(train, labels)]
    for name, rows in (("train", train), ("dev", keyword_rows(n_dev, 3))):
        (folder / f"{name}.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    return folder


def read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Models this small train several times faster on one thread, above all on a busy machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def keyword_data(tmp_path_factory) -> Path:
    return write_keyword_task(tmp_path_factory.mktemp("kw") / "data")


# --- learning ---------------------------------------------------------------------------------


def test_learns_separable_task_and_outputs_agree(tiny_model, keyword_data, tmp_path, capsys):
    out = tmp_path / "ft"
    rc = main(["finetune", "--model", str(tiny_model), "--task", "kw", "--data", str(keyword_data),
               "--out", str(out), "--epochs", "4", "--save-model", *FAST])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "kw dev: accuracy" in printed and str(out / "results.json") in printed

    results = json.loads((out / "results.json").read_text())
    assert results["architecture"] == "BertForSequenceClassification"
    assert results["labels"] == ["neg", "pos"] and results["examples"] == {"train": 300, "dev": 100}
    assert results["metrics"]["accuracy"] > 0.9  # majority rate is 0.5

    # the reported metrics are recomputable from the predictions file
    rows = read_tsv(out / "predictions_dev.tsv")
    assert len(rows) == 100 and [int(r["index"]) for r in rows] == list(range(100))
    gold, pred = [r["label"] for r in rows], [r["prediction"] for r in rows]
    assert gold == [y for _, y in keyword_rows(100, 3)]
    assert results["metrics"]["accuracy"] == pytest.approx(accuracy_score(gold, pred))
    assert results["metrics"]["f1_macro"] == pytest.approx(f1_score(gold, pred, average="macro"))

    # the best dev evaluation is the one reported (4 epochs: 4 evaluations)
    history = results["per_seed"]["0"]["history"]
    assert [h["step"] for h in history] == [19, 38, 57, 76]
    best = max(history, key=lambda h: h["score"])
    assert results["score"] == best["score"] and results["per_seed"]["0"]["best_step"] == best["step"]

    # --save-model keeps the best checkpoint: reloaded, it predicts the same labels
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(out / "model").eval()
    tok = AutoTokenizer.from_pretrained(out / "model")
    texts = [t for t, _ in keyword_rows(100, 3)]
    with torch.no_grad():
        ids = model(**tok(texts, padding=True, return_tensors="pt")).logits.argmax(-1)
    assert [model.config.id2label[int(i)] for i in ids] == pred


def test_shuffled_labels_do_not_learn(tiny_model, tmp_path):
    data = write_keyword_task(tmp_path / "data", shuffle_train=True)
    out = tmp_path / "ft"
    assert main(["finetune", "--model", str(tiny_model), "--task", "kw", "--data", str(data), "--out", str(out),
                 "--epochs", "4", *FAST]) == 0
    # the best of 4 dev evaluations, so a little above chance at most
    assert json.loads((out / "results.json").read_text())["metrics"]["accuracy"] < 0.75


def test_regression_learns_a_score(tiny_model, tmp_path):
    rng = random.Random(5)
    data = tmp_path / "reg"
    data.mkdir()
    for name, seed, n in (("train", 1, 300), ("dev", 3, 60)):
        lines = [json.dumps({"s": t, "score": round((4.0 if y == "pos" else 1.0) + rng.random() / 2, 3)})
                 for t, y in keyword_rows(n, seed)]
        (data / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "ft"
    assert main(["finetune", "--model", str(tiny_model), "--task", "score", "--data", str(data), "--out", str(out),
                 "--text-columns", "s", "--label-column", "score", "--epochs", "6", *FAST, "--lr", "5e-3"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["labels"] is None and set(results["metrics"]) == {"pearson", "spearman"}
    assert results["metrics"]["pearson"] > 0.8
    history = results["per_seed"]["0"]["history"]
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]  # MSE fell well below the label variance
    rows = read_tsv(out / "predictions_dev.tsv")
    gold, pred = [float(r["label"]) for r in rows], [float(r["prediction"]) for r in rows]
    assert results["metrics"]["pearson"] == pytest.approx(stats.pearsonr(pred, gold).statistic)
    assert results["metrics"]["spearman"] == pytest.approx(stats.spearmanr(pred, gold).statistic)


def test_seeds_give_mean_std_and_are_reproducible(tiny_model, keyword_data, tmp_path):
    args = ["finetune", "--model", str(tiny_model), "--task", "kw", "--data", str(keyword_data),
            "--max-steps", "6", "--eval-every", "3", *FAST]
    assert main([*args, "--out", str(tmp_path / "two"), "--seeds", "1", "2"]) == 0
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["seeds"] == [1, 2] and two["complete"]
    per = [two["per_seed"][s]["metrics"]["f1_macro"] for s in ("1", "2")]
    assert two["metrics"]["f1_macro"] == pytest.approx(np.mean(per))
    assert two["std"]["f1_macro"] == pytest.approx(np.std(per, ddof=1))
    assert [h["step"] for h in two["per_seed"]["1"]["history"]] == [3, 6]
    assert sorted(p.name for p in (tmp_path / "two").glob("predictions_*")) == [
        "predictions_dev_seed1.tsv", "predictions_dev_seed2.tsv"]

    assert main([*args, "--out", str(tmp_path / "one"), "--seeds", "1"]) == 0
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    assert one["std"] == {"accuracy": None, "f1_macro": None}
    assert one["per_seed"]["1"]["metrics"] == two["per_seed"]["1"]["metrics"]
    seed1 = read_tsv(tmp_path / "two" / "predictions_dev_seed1.tsv")
    assert read_tsv(tmp_path / "one" / "predictions_dev.tsv") == seed1


# --- pldrop pretrain run folders ----------------------------------------------------------------


@pytest.fixture(scope="module")
def run_folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pretrain")
    corpus = Path(__file__).parents[1] / "fixtures" / "corpus" / "tiny.txt"
    folders = {}
    for arm in ("baseline", "pld"):
        folders[arm] = root / arm
        assert main(["pretrain", "--arm", arm, "--corpus", str(corpus), "--out", str(folders[arm]),
                     "--preset", "tiny", "--max-steps", "5", "--batch-size", "4", "--cache-dir", str(root / "cache"),
                     "--no-progress", "data.vocab_size=300"]) == 0
    return folders


@pytest.mark.parametrize("arm,architecture", [("baseline", "BertForSequenceClassification"),
                                              ("pld", "RobertaPreLayerNormForSequenceClassification")])
def test_finetunes_a_pretrain_run_folder(run_folders, keyword_data, tmp_path, arm, architecture):
    from safetensors.torch import load_file

    from pldrop.tasks.classifier import load_classifier, open_model

    folder = run_folders[arm]
    src = open_model(folder)
    model = load_classifier(src, ["neg", "pos"])
    assert type(model).__name__ == architecture
    # the encoder is the pretrained one, not a fresh initialisation
    saved = load_file(folder / "model.safetensors")
    prefix = model.base_model_prefix
    name = f"{prefix}.encoder.layer.1.attention.self.query.weight"
    assert np.array_equal(model.state_dict()[name].numpy(), saved[name].numpy())
    assert not any(type(m).__name__ == "SwitchableBlock" for m in model.modules())  # no PLD while fine-tuning

    out = tmp_path / "ft"
    assert main(["finetune", "--model", str(folder), "--task", "kw", "--data", str(keyword_data), "--out", str(out),
                 "--max-steps", "20", "--eval-every", "10", *FAST]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["architecture"] == architecture and results["pretrain"]["arm"] == arm
    assert results["pretrain"]["enabled"] is (arm == "pld")
    assert 0.0 <= results["metrics"]["accuracy"] <= 1.0 and len(read_tsv(out / "predictions_dev.tsv")) == 100


def test_sentence_pairs_and_regression_on_glue_stsb(run_folders, tmp_path):
    """STS-B (pairs, 10-column TSV) on a Pre-LN run folder: one token type, so no token_type_ids."""
    from .glue_fixtures import EXPECTED, write_glue

    glue = write_glue(tmp_path / "glue")
    out = tmp_path / "ft"
    assert main(["finetune", "--model", str(run_folders["pld"]), "--task", "stsb", "--data", str(glue),
                 "--out", str(out), "--max-steps", "2", *FAST]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["display"] == "STS-B" and results["primary"] == ["pearson", "spearman"]
    rows = read_tsv(out / "predictions_dev.tsv")
    assert [float(r["label"]) for r in rows] == [label for _, _, label in EXPECTED["stsb"]["dev"]]
    pred, gold = [float(r["prediction"]) for r in rows], [float(r["label"]) for r in rows]
    assert len(set(pred)) == 2  # real scores, one per pair
    assert results["metrics"]["pearson"] == pytest.approx(stats.pearsonr(pred, gold).statistic)


def test_every_block_runs_unless_pld_is_asked_for(tiny_model, keyword_data, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification

    model = tmp_path / "layerdrop"
    shutil.copytree(tiny_model, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "layerdrop": 0.2}))
    args = ["finetune", "--task", "kw", "--data", str(keyword_data), "--max-steps", "4", "--save-model", *FAST]
    assert main([*args, "--model", str(model), "--out", str(tmp_path / "a")]) == 0
    assert "layerdrop=0.2 in the model's config set to 0" in capsys.readouterr().out
    saved = json.loads((tmp_path / "a" / "model" / "config.json").read_text())
    assert saved["layerdrop"] == 0.0

    # --pld trains with PLD, and the saved checkpoint is a plain HF model (strict round trip)
    assert main([*args, "--model", str(tiny_model), "--out", str(tmp_path / "b"), "--pld"]) == 0
    results = json.loads((tmp_path / "b" / "results.json").read_text())
    assert results["settings"]["pld"] is True
    loaded, info = AutoModelForSequenceClassification.from_pretrained(tmp_path / "b" / "model",
                                                                      output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
