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
    assert model.config.eos_token_id == tok.eos_token_id == tok.convert_tokens_to_ids("<|endoftext|>")
    assert model.config.bos_token_id == tok.bos_token_id and model.config.pad_token_id == tok.pad_token_id
    ids = tok("The history of", return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert out.shape == (1, ids.shape[1] + 8) and torch.equal(out[:, :ids.shape[1]], ids)
    text = tok.decode(out[0], skip_special_tokens=True)
    assert isinstance(text, str) and text.startswith("The history of") and "[UNK]" not in text


def _run_data(run, causal=True, **kw):
    """The run's data, prepared as `pldrop pretrain` prepared it (its config.yaml; the shared token cache)."""
    import yaml

    from pldrop.data.dataset import prepare_data

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    d = cfg["data"]
    kw = {"seq_len": d["seq_len"], "vocab_size": d["vocab_size"], "lowercase": d["lowercase"],
          "val_fraction": d["val_fraction"], "seed": cfg["seed"], **kw}
    return prepare_data(d["corpus"], causal=causal, progress=False, **kw), d, cfg["seed"]


def test_decoder_tokenizer_is_byte_level_bpe_and_rows_end_documents_with_eos(pretrained):
    from transformers import AutoTokenizer

    from pldrop.data.corpora import is_validation, load_documents
    from pldrop.data.tokenizer import tokenizer_fingerprint

    tok = AutoTokenizer.from_pretrained(str(pretrained))
    state = json.loads((pretrained / "tokenizer.json").read_text())
    assert state["model"]["type"] == "BPE" and state["pre_tokenizer"]["type"] == "ByteLevel"
    assert tok.eos_token == "<|endoftext|>" and tok.unk_token is None and tok.pad_token is not None
    text = "Ça déjà vu: Élodie's naïve CAFÉ, 日本語 — ünïcödé\t end  \n"  # cased, accents, unseen scripts
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text and tok.eos_token_id not in ids  # exact round trip; no specials added

    data, d, seed = _run_data(pretrained)
    assert tokenizer_fingerprint(data.tokenizer) == tokenizer_fingerprint(tok)  # the run's own tokenizer and rows
    rows = [data.train.tokens(i) for i in range(len(data.train))]
    stream = torch.cat(rows[:-1] + [rows[-1][:data.train.last_len]]).tolist()
    eos = tok.eos_token_id
    assert stream[-1] == eos and stream.count(eos) == data.meta["splits"]["train"]["n_docs"] > 1
    docs = [doc for doc in load_documents(d["corpus"]) if not is_validation(doc, seed, d["val_fraction"])]
    cut = [i for i, t in enumerate(stream) if t == eos]
    pieces = [stream[a + 1:b] for a, b in zip([-1] + cut, cut)]
    assert [tok.decode(p) for p in pieces] == docs  # every document whole, cased, with EOS between documents


def test_masked_lm_runs_keep_their_wordpiece_tokenizer_and_cache(pretrained, tmp_path):
    from pldrop.data.dataset import FORMAT_VERSION, _key
    from pldrop.data.corpora import fingerprint_sources
    from pldrop.data.tokenizer import tokenizer_fingerprint

    causal, d, seed = _run_data(pretrained)
    mlm, _, _ = _run_data(pretrained, causal=False)
    assert json.loads(mlm.tokenizer.backend_tokenizer.to_str())["model"]["type"] == "WordPiece"
    assert mlm.tokenizer.cls_token == "[CLS]" and mlm.tokenizer.mask_token == "[MASK]"
    assert mlm.tokenizer.tokenize("Water") == ["water"]  # uncased WordPiece, as before
    assert mlm.folder != causal.folder and "objective" not in mlm.meta and causal.meta["objective"] == "causal-lm"
    # the masked-LM cache keys are those pldrop used before decoders (existing caches stay valid)
    fp = fingerprint_sources(d["corpus"])
    cache = mlm.folder.parent.parent
    assert (cache / "tokenizers" / _key(FORMAT_VERSION, fp, d["vocab_size"], d["lowercase"], seed,
                                        d["val_fraction"])).is_dir()
    assert mlm.folder.name == _key(FORMAT_VERSION, fp, tokenizer_fingerprint(mlm.tokenizer), d["seq_len"], seed,
                                   d["val_fraction"])
    # one WordPiece tokenizer given to both objectives: still two caches, packed each its own way
    tok_dir = tmp_path / "wp"
    mlm.tokenizer.save_pretrained(str(tok_dir))
    both = [_run_data(pretrained, causal=c, tokenizer_dir=tok_dir)[0] for c in (False, True)]
    assert both[0].folder == mlm.folder and both[1].folder != mlm.folder
    sep = mlm.tokenizer.sep_token_id
    assert both[1].train.tokens(0)[0] != mlm.tokenizer.cls_token_id and sep in both[1].train.tokens(0).tolist()


def test_evaluate_depth_on_a_decoder_run_uses_the_runs_own_data(pretrained, tmp_path):
    from pldrop.train.depth import validation_for
    from pldrop.train.trained import load_trained

    tm = load_trained(str(pretrained), "--models")
    batches, _ = validation_for(tm, max_seqs=4, batch_size=2)
    data, _, _ = _run_data(pretrained)
    want = torch.stack([data.valid.tokens(i) for i in range(min(4, len(data.valid)))])
    assert torch.equal(torch.cat([b["input_ids"] for b in batches]), want)
    assert data.tokenizer.eos_token_id in want.flatten().tolist()  # EOS-separated, no [CLS]/[SEP] framing
    out = tmp_path / "depth"
    assert main(["evaluate-depth", "--models", str(pretrained), "--out", str(out), "--max-seqs", "4",
                 "--device", "cpu"]) == 0
    curve = json.loads((out / "depth.json").read_text())["models"]
    (c,) = curve.values()
    assert c["objective"] == "causal-lm" and c["points"][0]["val_loss"] > 0


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
