"""Depth on demand (issue 25 item 1): `pldrop.shrink` and `pldrop shrink`.

The shrunk model must be the original run without the dropped blocks: its logits equal the
original model's with the dropped blocks replaced by identity (a forward hook that returns the
block's input), and `from_pretrained` loads the saved folder with no missing or unexpected keys.
"""

from __future__ import annotations

import json

import pytest
import torch
from tiny_hf import tiny_models

import pldrop
from pldrop.cli import main
from pldrop.errors import UserError
from pldrop.prune import (block_list, check_keep, kept_blocks, kept_every_other, only_blocks, shrink,
                          shrink_model)
from pldrop.schedule import keep_probs

FAMILIES = ["bert", "roberta-prelayernorm", "distilbert", "gpt2", "llama", "mistral", "qwen2", "opt"]


def _identity_hook(module, args, kwargs, output):
    """The block's output replaced by its input (hidden states), in the block's own output structure."""
    hidden = args[0] if args else kwargs["hidden_states"]
    return hidden if isinstance(output, torch.Tensor) else (hidden, *output[1:])


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def _with_identity(model, dropped, batch):
    _, blocks = block_list(model)
    hooks = [blocks[i].register_forward_hook(_identity_hook, with_kwargs=True) for i in dropped]
    try:
        return _logits(model, batch)
    finally:
        for h in hooks:
            h.remove()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kept", [[0, 2], [1]])
def test_shrunk_model_is_the_original_without_the_dropped_blocks(family, kept, batch, tmp_path):
    torch.manual_seed(0)
    model = tiny_models()[family]().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ref = _with_identity(model, [i for i in range(3) if i not in kept], batch)
    small = shrink_model(model, kept)
    torch.testing.assert_close(_logits(small, batch), ref, rtol=0, atol=1e-5)
    assert small.config.num_hidden_layers == len(kept) and model.config.num_hidden_layers == 3
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the original is untouched

    small.save_pretrained(tmp_path)
    loaded, info = type(model).from_pretrained(tmp_path, output_loading_info=True)
    assert {k: v for k, v in info.items() if v} == {}  # no missing, unexpected or mismatched keys
    settings = {k: v for k, v in model.config.to_dict().items() if k != "layer_types"}  # rebuilt for K layers
    fresh = type(model)(type(model.config)(**{**settings, "num_hidden_layers": len(kept)}))
    assert set(loaded.state_dict()) == set(fresh.state_dict())  # the keys of the family at K layers
    torch.testing.assert_close(_logits(loaded.eval(), batch), ref, rtol=0, atol=1e-5)


def test_per_layer_config_lists_follow_the_kept_blocks(batch, tmp_path):
    """Qwen2 (like newer Llama/Mistral/Gemma configs) has layer_types; a kept sliding-attention block stays one."""
    import transformers as T

    types = ["full_attention", "sliding_attention", "full_attention", "sliding_attention"]
    cfg = T.Qwen2Config(vocab_size=99, hidden_size=32, num_attention_heads=2, intermediate_size=37, num_hidden_layers=4,
                        num_key_value_heads=1, layer_types=types, use_sliding_window=True, sliding_window=4)
    torch.manual_seed(0)
    model = T.Qwen2ForCausalLM(cfg).eval()
    ref = _with_identity(model, [0, 2], batch)
    small = shrink_model(model, [1, 3])
    assert small.config.layer_types == ["sliding_attention", "sliding_attention"]
    assert model.config.layer_types == types
    assert [b.self_attn.layer_idx for b in small.model.layers] == [0, 1]  # renumbered for the KV cache
    small.save_pretrained(tmp_path)
    loaded, info = T.Qwen2ForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values()) and loaded.config.layer_types == ["sliding_attention", "sliding_attention"]
    torch.testing.assert_close(_logits(loaded.eval(), batch), ref, rtol=0, atol=1e-5)


def test_only_blocks_restores_the_model(batch):
    model = tiny_models()["llama"]().eval()
    ref = _logits(model, batch)
    with pytest.raises(RuntimeError):
        with only_blocks(model, [2]):
            assert len(model.model.layers) == 1 and model.config.num_hidden_layers == 1
            raise RuntimeError("boom")
    assert len(model.model.layers) == 3 and model.config.num_hidden_layers == 3
    assert torch.equal(_logits(model, batch), ref)


def test_strategies_pick_the_blocks_they_say():
    assert kept_blocks("top", 12, 9) == list(range(9))
    assert kept_blocks("every-other", 12, 6) == [0, 2, 4, 6, 8, 10]  # LayerDrop's half depth
    assert kept_blocks("every-other", 12, 10) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 10]  # 11, then 9 go first
    assert kept_every_other(8, 2) == [0, 4]  # a second pass over 0 2 4 6 drops 6, then 2
    for L in range(1, 13):  # PLD's keep probability falls with depth (or is flat): keep-prob equals top
        for K in range(1, L + 1):
            for rule in ("linear", "uniform"):
                assert kept_blocks("keep-prob", L, K, probs=keep_probs(0.5, L, rule)) == kept_blocks("top", L, K)
    assert kept_blocks("keep-prob", 3, 2, probs=[0.6, 0.9, 0.7]) == [1, 2]
    # greedy: the block whose removal costs least goes first; here block 1 is worthless, then block 0
    cost = {(0, 2): 1.0, (1, 2): 3.0, (0, 1): 5.0, (2,): 2.0, (0,): 4.0}
    calls = []

    def loss(kept):
        calls.append(kept)
        return cost[tuple(kept)]

    assert kept_blocks("greedy", 3, 1, cost=loss) == [2]
    assert len(calls) == 3 + 2  # L + (L-1) + ... + (K+1) evaluations


def test_greedy_on_a_real_model_drops_a_block_that_does_nothing(batch):
    """A Pre-LN block whose output projections are zero is an identity: removing it costs nothing."""
    from pldrop.train.depth import loss_of_blocks

    torch.manual_seed(0)
    model = tiny_models()["roberta-prelayernorm"]().eval()
    blk = model.roberta_prelayernorm.encoder.layer[1]
    with torch.no_grad():
        for lin in (blk.attention.output.dense, blk.output.dense):
            lin.weight.zero_()
            lin.bias.zero_()
    labels = torch.full_like(batch["input_ids"], -100)
    labels[:, 2::3] = batch["input_ids"][:, 2::3]
    batches = [{**batch, "labels": labels}]
    small = shrink(model, 2, "greedy", cost=loss_of_blocks(model, batches, causal=False))
    assert small.shrunk_from == {"num_layers": 3, "kept": [0, 2]}
    torch.testing.assert_close(_logits(small, batch), _logits(model, batch), rtol=0, atol=1e-5)


def test_keep_as_a_fraction_and_bad_values():
    assert [check_keep(k, 12) for k in (1, 12, 0.5, 0.75, 0.01 + 0.49)] == [1, 12, 6, 9, 6]
    for bad in (0, 13, -1, 1.5, float("nan"), True, "6"):
        with pytest.raises(UserError, match="out of range"):
            check_keep(bad, 12)
    with pytest.raises(UserError, match="rounds to 0"):
        check_keep(0.01, 12)
    with pytest.raises(UserError, match="not known"):
        kept_blocks("bottom", 12, 6)
    with pytest.raises(UserError, match="needs validation data"):
        kept_blocks("greedy", 12, 6)


def test_library_entry_point_and_refusals(batch):
    model = tiny_models()["gpt2"]().eval()
    small = pldrop.shrink(model, keep=2 / 3, strategy="every-other")
    assert small.shrunk_from["kept"] == [0, 1] and len(small.transformer.h) == 2
    pldrop.apply_pld(model)
    with pytest.raises(UserError, match="remove_pld"):
        pldrop.shrink(model, keep=2)
    pldrop.remove_pld(model)
    import transformers as T

    t5 = T.T5ForConditionalGeneration(T.T5Config(vocab_size=99, d_model=32, d_ff=37, num_layers=2, num_heads=2,
                                                 d_kv=16))
    with pytest.raises(UserError, match="not a family pldrop can shrink"):
        pldrop.shrink(t5, keep=1)
    scaled = T.GPT2LMHeadModel(T.GPT2Config(vocab_size=99, n_embd=32, n_head=2, n_layer=3,
                                            scale_attn_by_inverse_layer_idx=True))
    with pytest.raises(UserError, match="depends on its position"):
        pldrop.shrink(scaled, keep=2)


# -- the command -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A finished tiny `pldrop pretrain` run (Pre-LN + PLD, 2 blocks)."""
    import os

    root = tmp_path_factory.mktemp("shrink")
    old = os.environ.get("PLDROP_CACHE")
    os.environ["PLDROP_CACHE"] = str(root / "cache")
    from pathlib import Path

    corpus = Path(__file__).parent / "fixtures" / "corpus" / "tiny.txt"
    rc = main(["pretrain", "--corpus", str(corpus), "--preset", "tiny", "--max-steps", "2", "--eval-every", "2",
               "--no-progress", "--out", str(root / "run"), "data.vocab_size=400", "--precision", "fp32"])
    assert rc == 0
    yield root / "run"
    if old is None:
        os.environ.pop("PLDROP_CACHE", None)
    else:
        os.environ["PLDROP_CACHE"] = old


@pytest.mark.parametrize("strategy", ["top", "every-other", "keep-prob", "greedy"])
def test_shrink_command_writes_a_model_transformers_loads(run_folder, tmp_path, strategy, capsys):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    out = tmp_path / "small"
    assert main(["shrink", "--model", str(run_folder), "--keep", "1", "--strategy", strategy, "--out", str(out)]) == 0
    info = json.loads((out / "shrink.json").read_text())
    assert info["num_layers"] == 2 and len(info["kept"]) == 1 and info["strategy"] == strategy
    if strategy != "greedy":
        assert info["kept"] == [0]
    for name in ("config.json", "model.safetensors", "tokenizer.json", ".pldrop-run"):
        assert (out / name).is_file(), name
    assert not list(tmp_path.glob(".small.*"))  # no staging folder left
    small, load = AutoModelForMaskedLM.from_pretrained(out, output_loading_info=True)
    assert not any(load.values()) and small.config.num_hidden_layers == 1
    original = AutoModelForMaskedLM.from_pretrained(run_folder).eval()
    tok = AutoTokenizer.from_pretrained(out)
    batch = dict(tok(["the cat sat on the mat", "a dog ran"], return_tensors="pt", padding=True))
    batch.pop("token_type_ids", None)
    ref = _with_identity(original, info["dropped"], batch)
    torch.testing.assert_close(_logits(small.eval(), batch), ref, rtol=0, atol=1e-5)


def test_shrink_command_out_rules(run_folder, tmp_path, capsys):
    out = tmp_path / "small"
    assert main(["shrink", "--model", str(run_folder), "--keep", "1", "--out", str(out)]) == 0
    first = (out / "model.safetensors").read_bytes()
    assert main(["shrink", "--model", str(run_folder), "--keep", "1", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["shrink", "--model", str(run_folder), "--keep", "2", "--out", str(out), "--overwrite"]) == 0
    assert json.loads((out / "shrink.json").read_text())["kept"] == [0, 1] and (out / "model.safetensors").read_bytes() != first
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("x")
    assert main(["shrink", "--model", str(run_folder), "--keep", "1", "--out", str(mine), "--overwrite"]) == 2
    assert (mine / "notes.txt").read_text() == "x" and len(list(mine.iterdir())) == 1
