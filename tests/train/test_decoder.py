"""Llama-style causal LMs in `pldrop pretrain` and `pldrop compare` (issue 28): next-token loss on packed
text, PLD on the decoder blocks, a saved model plain transformers loads and generates with, exact resume."""

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pldrop.cli import main
from pldrop.models import build_model, causal_lm_loss
from pldrop.train.analysis import read_metrics
from pldrop.train.lockstep import KILL_AT_STEP

CORPUS = str(Path(__file__).parents[1] / "fixtures" / "corpus" / "tiny.txt")
TINY = ["--preset", "tiny", "--no-progress", "data.vocab_size=400"]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PLDROP_CACHE", str(tmp_path_factory.getbasetemp() / "pldrop-cache"))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """One `pldrop pretrain --arm llama-pld` run of 30 steps on the tiny preset."""
    out = tmp_path_factory.mktemp("decoder") / "run"
    cache = tmp_path_factory.getbasetemp() / "pldrop-cache"
    env = {**os.environ, "PLDROP_CACHE": str(cache)}
    p = subprocess.run([sys.executable, "-m", "pldrop", "pretrain", "--arm", "llama-pld", *TINY, "--max-steps", "30",
                        "--eval-every", "10", "--corpus", CORPUS, "--out", str(out)], env=env, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    return out


def test_decoder_pretrain_learns_and_drops_blocks(pretrained):
    recs = read_metrics(pretrained / "metrics.jsonl")
    vals = [r for r in recs if r.get("val_loss") is not None]
    assert len(vals) == 3 and vals[-1]["val_loss"] < vals[0]["val_loss"] - 0.05
    for r in vals:  # perplexity is exp(loss); accuracy is next-token accuracy
        assert r["val_ppl"] == pytest.approx(math.exp(r["val_loss"]))
        assert 0 <= r["val_accuracy"] <= 1 and r["val_tokens"] > 0
        assert "val_accuracy_shuffled" not in r  # the word-order probe is masked-LM only
    steps = [r for r in recs if "blocks_run" in r]
    assert any(r["blocks_run"] < 2 for r in steps), "PLD never dropped a block"
    assert all(0 <= r["next_token_accuracy"] <= 1 for r in steps)
    # FLOPs follow the blocks run: a step that ran fewer blocks cost fewer FLOPs
    flops = [b["flops"] - a["flops"] for a, b in zip(steps, steps[1:])]
    by_blocks = {s["blocks_run"]: f for s, f in zip(steps[1:], flops)}
    assert by_blocks[min(by_blocks)] < by_blocks[max(by_blocks)]
    summary = json.loads((pretrained / "summary.json").read_text())
    assert summary["arm"] == "llama-pld" and summary["val_ppl"] == pytest.approx(math.exp(summary["val_loss"]))


def test_saved_decoder_loads_with_plain_transformers_and_generates(pretrained):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(pretrained))
    tok = AutoTokenizer.from_pretrained(str(pretrained))
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.tie_word_embeddings
    assert model.config.bos_token_id == tok.cls_token_id and model.config.eos_token_id == tok.sep_token_id
    ids = torch.tensor([[tok.cls_token_id, *tok("the history of", add_special_tokens=False)["input_ids"]]])
    out = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert out.shape == (1, ids.shape[1] + 8) and torch.equal(out[:, :ids.shape[1]], ids)
    assert isinstance(tok.decode(out[0]), str)


def test_a_tokens_loss_does_not_depend_on_later_tokens():
    torch.manual_seed(0)
    model = build_model("llama", vocab_size=50, preset="tiny", seq_len=16, attention_probs_dropout_prob=0.0)
    ids = torch.randint(5, 50, (2, 16))
    k = 9
    later = ids.clone()
    later[:, k:] = torch.randint(5, 50, (2, 16 - k))

    def per_token(x):
        _, logits, target = causal_lm_loss(model, x, torch.ones_like(x))
        return F.cross_entropy(logits.float(), target, reduction="none").view(2, 15)  # position t predicts t+1

    a, b = per_token(ids), per_token(later)
    assert torch.allclose(a[:, :k - 1], b[:, :k - 1], atol=1e-6)  # predictions of tokens 1..k-1 see only tokens < k
    assert not torch.allclose(a[:, k - 1:], b[:, k - 1:])  # the later ones do change


@pytest.mark.slow
def test_decoder_compare_resumes_after_sigkill_exactly_and_writes_its_report(tmp_path):
    args = ["compare", "--corpus", CORPUS, *TINY, "--batch-size", "8", "data.val_max_seqs=16", "--arms", "llama",
            "llama-pld", "--max-steps", "8", "--save-every", "2", "--eval-every", "3", "--no-depth-curve"]
    full = tmp_path / "full"
    p = subprocess.run([sys.executable, "-m", "pldrop", *args, "--out", str(full)], capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr
    report = (full / "report.md").read_text()
    assert "Llama + PLD" in report and "Causal LMs" in report and "unigram plateau of this tokenizer" not in p.stdout
    assert "final next-token accuracy" in report and "masked-token" not in report  # a decoder's accuracy, named so

    killed = tmp_path / "killed"
    p = subprocess.run([sys.executable, "-m", "pldrop", *args, "--out", str(killed)], capture_output=True, text=True,
                       timeout=600, env={**os.environ, KILL_AT_STEP: "3"})
    assert p.returncode == -signal.SIGKILL, p.stderr
    p = subprocess.run([sys.executable, "-m", "pldrop", "compare", "--out", str(killed), "--resume", "--no-progress"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    for arm in ("llama", "llama-pld"):
        def losses(folder):
            return [(r["step"], r["loss"], r.get("val_loss")) for r in read_metrics(folder / arm / "metrics.jsonl")]

        assert losses(killed) == losses(full), arm
    assert (killed / "report.md").is_file()


def test_compare_refuses_masked_and_causal_arms_together(tmp_path, capsys):
    assert main(["compare", "--arms", "preln", "llama", "--corpus", CORPUS, *TINY, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not comparable" in err[0]
    assert not (tmp_path / "r").exists()
