"""Depth curves (issue 25 item 2): `pldrop.train.depth` and `pldrop evaluate-depth`.

Every point of a curve is recomputed here from a model physically cut to those blocks and the
training loop's own validation (`pldrop.train.evaluation.evaluate`); the full-depth point is the
model's normal validation loss on the same batches.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from tiny_hf import tiny_models

from pldrop.cli import main
from pldrop.prune import shrink_model
from pldrop.train.depth import default_keeps, depth_curve, depth_section, evaluate_batches

CORPUS = Path(__file__).parent / "fixtures" / "corpus" / "tiny.txt"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from pldrop.data.dataset import prepare_data

    cache = tmp_path_factory.mktemp("cache")
    return prepare_data([str(CORPUS)], seq_len=32, vocab_size=400, cache_dir=cache, progress=False)


@pytest.fixture(scope="module")
def mlm(data):
    from pldrop.models import build_model

    return build_model("pld", len(data.tokenizer), "tiny", seq_len=32, seed=0, num_hidden_layers=4).eval()


def _batches(data, n=24, size=8):
    from torch.utils.data import Subset

    from pldrop.data.batches import eval_batches

    return list(eval_batches(Subset(data.valid, range(min(n, len(data.valid)))), size))


def test_every_point_recomputed_from_a_cut_model(data, mlm):
    from pldrop.train.evaluation import evaluate

    batches = _batches(data)
    n = sum(b["input_ids"].shape[0] for b in batches)
    curve = depth_curve(mlm, batches, keeps=[4, 3, 2, 1], strategy="every-other")
    assert [p["keep"] for p in curve["points"]] == [4, 3, 2, 1]
    assert [p["kept"] for p in curve["points"]] == [[0, 1, 2, 3], [0, 1, 2], [0, 2], [0]]
    for p in curve["points"]:
        ref = evaluate(shrink_model(mlm, p["kept"]), data.valid, 8, n, False, torch.device("cpu"))
        assert p["val_loss"] == pytest.approx(ref["val_loss"], rel=1e-6)
        assert p["val_accuracy"] == pytest.approx(ref["val_accuracy"])
        assert p["val_tokens"] == ref["val_tokens"]
    full = evaluate(mlm, data.valid, 8, n, False, torch.device("cpu"))  # the model's normal validation
    assert curve["points"][0]["val_loss"] == pytest.approx(full["val_loss"], rel=1e-6)
    if curve["points"][0]["val_accuracy"] > 0:
        assert curve["points"][2]["accuracy_kept"] == pytest.approx(
            curve["points"][2]["val_accuracy"] / curve["points"][0]["val_accuracy"])


def test_causal_lm_full_depth_equals_the_models_own_loss(batch):
    torch.manual_seed(0)
    model = tiny_models()["gpt2"]().eval()
    curve = depth_curve(model, [batch], causal=True, keeps=[3, 2, 1])
    with torch.no_grad():
        own = model(**batch, labels=batch["input_ids"]).loss.item()
    assert curve["objective"] == "causal-lm" and curve["points"][0]["val_loss"] == pytest.approx(own, rel=1e-5)
    assert curve["points"][0]["val_tokens"] == batch["input_ids"].numel() - batch["input_ids"].shape[0]
    with torch.no_grad():  # the 1-block point is the 1-block model's own loss
        one = shrink_model(model, [0])(**batch, labels=batch["input_ids"]).loss.item()
    assert curve["points"][-1]["val_loss"] == pytest.approx(one, rel=1e-5)


def test_greedy_curve_is_nested_and_never_worse_than_top_on_its_batches(data, mlm):
    batches = _batches(data)
    greedy = depth_curve(mlm, batches, keeps=[4, 3, 2, 1], strategy="greedy")
    kept = [set(p["kept"]) for p in greedy["points"]]
    assert all(b <= a for a, b in zip(kept, kept[1:]))  # one removal path
    top = depth_curve(mlm, batches, keeps=[3], strategy="top")
    assert greedy["points"][1]["val_loss"] <= top["points"][1]["val_loss"] + 1e-9


def test_section_for_compare_and_timing(data, mlm):
    batches = _batches(data, n=8)
    other = tiny_models()["bert"]()
    section = depth_section({"pld": mlm, "bert": other}, {"pld": batches, "bert": [
        {"input_ids": b["input_ids"] % 99, "attention_mask": b["attention_mask"], "labels": b["labels"] % 99}
        for b in batches]}, rounds=2, seed=1)
    assert set(section) == {"strategy", "min_keep", "timing", "models"}
    assert section["timing"]["seqs"] == 8 and section["timing"]["rounds"] == 2
    assert [p["keep"] for p in section["models"]["pld"]["points"]] == default_keeps(4) == [4, 3, 2]
    assert [p["keep"] for p in section["models"]["bert"]["points"]] == [3, 2]
    for curve in section["models"].values():
        assert curve["points"][0]["time_ratio"] == 1.0
        assert all(p["time_per_seq_s"] > 0 for p in curve["points"])
    json.dumps(section)  # goes into results.json as it is
    assert depth_section({"pld": mlm}, batches, rounds=0)["models"]["pld"]["points"][0].get("time_ratio") is None


def test_evaluate_batches_weights_by_tokens():
    """Two batches with 1 and 3 predicted tokens: the mean is over tokens, not batches."""
    class Fixed(torch.nn.Module):  # logits favour token 1 everywhere
        config = None

        def forward(self, input_ids, attention_mask=None, **kw):
            out = torch.zeros(*input_ids.shape, 4)
            out[..., 1] = 2.0
            return type("O", (), {"logits": out})()

    lab = lambda *v: torch.tensor([list(v)])  # noqa: E731
    b1 = {"input_ids": lab(0, 0, 0, 0), "labels": lab(1, -100, -100, -100)}
    b2 = {"input_ids": lab(0, 0, 0, 0), "labels": lab(2, 2, 2, -100)}
    r = evaluate_batches(Fixed(), [b1, b2], causal=False)
    lse = torch.logsumexp(torch.tensor([0.0, 2.0, 0.0, 0.0]), 0).item()
    assert r["val_tokens"] == 4 and r["val_accuracy"] == 0.25
    assert r["val_loss"] == pytest.approx(((lse - 2.0) + 3 * lse) / 4)


# -- the command -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two finished tiny `pldrop pretrain` runs: Pre-LN + PLD and the Post-LN baseline."""
    root = tmp_path_factory.mktemp("depth")
    old = os.environ.get("PLDROP_CACHE")
    os.environ["PLDROP_CACHE"] = str(root / "cache")
    for arm in ("pld", "baseline"):
        assert main(["pretrain", "--corpus", str(CORPUS), "--preset", "tiny", "--max-steps", "2", "--eval-every", "2",
                     "--no-progress", "--arm", arm, "--out", str(root / arm), "data.vocab_size=400",
                     "--precision", "fp32", "model.dropout=0"]) == 0
    yield root
    if old is None:
        os.environ.pop("PLDROP_CACHE", None)
    else:
        os.environ["PLDROP_CACHE"] = old


def test_evaluate_depth_command(runs, tmp_path, capsys):
    out = tmp_path / "depth"
    assert main(["evaluate-depth", "--models", str(runs / "pld"), str(runs / "baseline"), "--out", str(out),
                 "--min-keep", "1", "--rounds", "1"]) == 0
    result = json.loads((out / "depth.json").read_text())
    assert set(result["models"]) == {"pld", "baseline"} and result["strategy"] == "top"
    for name in ("pld", "baseline"):
        pts = result["models"][name]["points"]
        assert [p["keep"] for p in pts] == [2, 1] and pts[0]["time_ratio"] == 1.0
        # the full-depth point is the run's own final validation (fp32, same split, same masks)
        summary = json.loads((runs / name / "summary.json").read_text())
        assert pts[0]["val_loss"] == pytest.approx(summary["val_loss"], rel=1e-4)
        assert "the run's validation split" in result["validation"][name]
    md = (out / "depth.md").read_text()
    assert "### pld" in md and "| 1 | 0 |" in md
    assert (out / "depth.png").stat().st_size > 1000 and (out / ".pldrop-run").is_file()
    capsys.readouterr()
    assert main(["evaluate-depth", "--models", str(runs / "pld"), "--out", str(out), "--rounds", "0"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_evaluate_depth_with_a_corpus_for_a_plain_hf_folder(runs, tmp_path):
    """An HF causal-LM folder (not a pldrop run) is evaluated on --corpus with its own tokenizer."""
    from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

    folder = tmp_path / "gpt2"
    tok = PreTrainedTokenizerFast(tokenizer_file=str(runs / "pld" / "tokenizer.json"), eos_token="[SEP]",
                                  pad_token="[PAD]")
    torch.manual_seed(0)
    import transformers as T

    GPT2LMHeadModel(T.GPT2Config(vocab_size=len(tok), n_embd=32, n_head=2, n_layer=4, n_positions=64)).save_pretrained(folder)
    tok.save_pretrained(folder)
    out = tmp_path / "d"
    assert main(["evaluate-depth", "--models", str(folder), "--corpus", str(CORPUS), "--out", str(out),
                 "--rounds", "1", "--strategy", "every-other", "--max-seqs", "4"]) == 0
    curve = json.loads((out / "depth.json").read_text())["models"]["gpt2"]
    assert curve["objective"] == "causal-lm" and [p["kept"] for p in curve["points"]] == [[0, 1, 2, 3], [0, 1, 2],
                                                                                            [0, 2]]
