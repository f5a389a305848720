"""Depth curves (issue 25 item 2): `pldrop.train.depth` and `pldrop evaluate-depth`.

Every point of a curve is recomputed here from a model physically cut to those blocks and the
training loop's own validation (`pldrop.train.evaluation.evaluate`); the full-depth point is the
model's normal validation loss on the same batches.
"""

from __future__ import annotations

import json
import os
import re
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


# -- `pldrop compare` stores each arm's depth curve ---------------------------------------------------

CMP = ["--preset", "tiny", "--max-steps", "4", "--eval-every", "2", "--no-progress", "data.vocab_size=400",
       "--corpus", str(CORPUS)]


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """A finished tiny two-arm comparison (depth curves on, by default)."""
    root = tmp_path_factory.mktemp("cmp")
    mp = pytest.MonkeyPatch()
    mp.setenv("PLDROP_CACHE", str(root / "cache"))
    try:
        assert main(["compare", *CMP, "--arms", "baseline", "pld", "--depth-rounds", "2", "--out", str(root / "c")]) == 0
    finally:
        mp.undo()
    return root / "c"


def test_compare_stores_a_depth_curve_per_arm_recomputable_from_the_saved_model(compared):
    from pldrop.reporting.compare_report import render_compare
    from pldrop.train.trained import load_trained
    from pldrop.train.depth import validation_for

    res = json.loads((compared / "results.json").read_text())
    depth = res["depth"]
    assert set(depth["models"]) == set(depth["runs"]) == {"baseline", "pld"}
    assert depth["strategy"] == "top" and depth["timing"]["rounds"] == 2 and depth["seeds"] == 1
    for arm in ("baseline", "pld"):
        curve = depth["models"][arm]
        assert [p["keep"] for p in curve["points"]] == [2, 1] and curve["points"][0]["time_ratio"] == 1.0
        assert all(p["time_per_seq_s"] > 0 for p in curve["points"])
        # the full-depth point is the arm's final validation: the same batches, the same model
        summary = json.loads((compared / arm / "summary.json").read_text())
        assert res["meta"]["summaries"][arm]["val_loss"] == summary["val_loss"]
        assert depth["precision"] == summary["precision"]  # validated as in training (bf16 where it trained so)
        assert curve["points"][0]["val_loss"] == pytest.approx(summary["val_loss"], rel=1e-5)
        assert curve["points"][0]["val_accuracy"] == pytest.approx(summary["val_accuracy"])
        assert curve["points"][0]["val_tokens"] == summary["val_tokens"]
        # every point recomputed from the saved final model on the run's own validation split
        tm = load_trained(compared / arm)
        batches, _ = validation_for(tm)
        with torch.autocast("cpu", torch.bfloat16, enabled=summary["precision"] == "bf16"):
            again = depth_curve(tm.model, batches)
        for p, q in zip(curve["points"], again["points"]):
            assert (p["keep"], p["kept"]) == (q["keep"], q["kept"])
            assert p["val_loss"] == pytest.approx(q["val_loss"], rel=1e-6)
            assert p["val_accuracy"] == pytest.approx(q["val_accuracy"])
            assert p["accuracy_kept"] == pytest.approx(q["accuracy_kept"])
    md = (compared / "report.md").read_text()
    assert render_compare(res) == md
    section = md[md.index("**Depth on demand**"):]
    for label in ("Post-LN BERT", "Pre-LN + PLD"):
        assert f"- **{label}** (full-depth accuracy " in section and f"### {label} (2 blocks" in section
    assert "at half depth (1 of 2 blocks" in section and "![depth.png](depth.png)" in section
    assert (compared / "depth.png").stat().st_size > 1000
    from pldrop.train.rundir import foreign_files, read_manifest

    assert "depth.png" in read_manifest(compared) and not foreign_files(compared)  # pldrop wrote it, and said so


def test_compare_depth_section_numbers_are_figures_of_results_json(compared):
    from test_bench_report import NUMBER, formatted_leaves

    res = json.loads((compared / "results.json").read_text())
    md = (compared / "report.md").read_text()
    section = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", md[md.index("**Depth on demand**"):])
    known = formatted_leaves(res["depth"])
    assert not [n for n in NUMBER.findall(section) if n not in known]


def test_compare_report_only_renders_depth_without_models(compared, monkeypatch):
    import pldrop.train.depth as depth_mod
    import pldrop.train.trained as trained

    md = (compared / "report.md").read_text()
    (compared / "report.md").unlink()
    (compared / "depth.png").unlink()

    def refuse(*a, **k):
        raise AssertionError("--report-only loaded a model")

    monkeypatch.setattr(trained, "load_trained", refuse)
    monkeypatch.setattr(depth_mod, "depth_section", refuse)
    assert main(["compare", "--report-only", "--out", str(compared)]) == 0
    assert (compared / "report.md").read_text() == md
    assert (compared / "depth.png").is_file()


def test_old_results_without_depth_render_as_before(compared):
    from pldrop.reporting.compare_report import render_compare

    res = json.loads((compared / "results.json").read_text())
    old = {k: v for k, v in res.items() if k != "depth"}
    text = render_compare(old)
    assert "Depth on demand" not in text and "depth.png" not in text
    assert (compared / "report.md").read_text().startswith(text)


def test_compare_no_depth_curve_leaves_no_key(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PLDROP_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "c"
    assert main(["compare", *CMP, "--arms", "pld", "--max-steps", "2", "--no-depth-curve", "--out", str(out)]) == 0
    assert "depth" not in json.loads((out / "results.json").read_text())
    assert "Depth on demand" not in (out / "report.md").read_text() and not (out / "depth.png").exists()
    assert "depth curves" not in capsys.readouterr().out
    for bad, needle in ((["--depth-rounds", "-1"], "--depth-rounds -1"), (["--no-depth-curve", "--depth-rounds", "2"],
                                                                            "give one")):
        assert main(["compare", *CMP, "--arms", "pld", "--out", str(tmp_path / "x"), *bad]) == 2
        assert needle in capsys.readouterr().err
        assert not (tmp_path / "x").exists()
    assert main(["compare", "--report-only", "--out", str(out), "--depth-curve"]) == 2
    assert "leave out --depth-curve" in capsys.readouterr().err
