"""apply_pld / remove_pld on real HF models built from tiny configs."""

import copy
import math

import pytest
import torch
from tiny_hf import tiny_models

import pldrop
from pldrop.block import SwitchableBlock

FAMILIES = tiny_models()


def _logits(model, batch):
    out = model(**batch)
    return out.logits


def _blocks(model):
    ctl = pldrop.get_controller(model)
    return ctl.blocks


def _count_runs(blocks):
    """Count forwards of each block's first parameterised submodule (is the block really run?)."""
    counts = [0] * len(blocks)
    for i, b in enumerate(blocks):
        leaf = next(m for m in b.modules() if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D")

        def hook(mod, args, i=i):
            counts[i] += 1

        leaf.register_forward_pre_hook(hook)
    return counts


@pytest.mark.parametrize("family", list(FAMILIES))
def test_off_means_bit_identical(family, batch):
    torch.manual_seed(0)
    model = FAMILIES[family]()
    ref = copy.deepcopy(model)
    ctl = pldrop.apply_pld(model, theta_bar=0.5, gamma=0.1, seed=3)

    # eval mode at a step where θ < 1
    ctl.step(100)
    model.eval(), ref.eval()
    assert torch.equal(_logits(model, batch), _logits(ref, batch))

    # training mode at θ = 1 (step 0): same dropout masks, same outputs
    ctl.step(0)
    model.train(), ref.train()
    torch.manual_seed(1)
    a = _logits(model, batch)
    torch.manual_seed(1)
    b = _logits(ref, batch)
    assert torch.equal(a, b)

    # controller disabled
    ctl.step(100)
    ctl.enabled = False
    torch.manual_seed(1)
    a = _logits(model, batch)
    torch.manual_seed(1)
    assert torch.equal(a, _logits(ref, batch))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_names_state_dict_and_remove(family, batch):
    model = FAMILIES[family]()
    names = [n for n, _ in model.named_parameters()]
    keys = list(model.state_dict())
    blocks_before = [b for b in model.modules()]
    classes_before = [type(b) for b in blocks_before]

    ctl = pldrop.apply_pld(model)
    assert [n for n, _ in model.named_parameters()] == names
    assert list(model.state_dict()) == keys
    assert all(isinstance(b, SwitchableBlock) for b in ctl.blocks)

    ctl.step(10**6)
    model.train()
    model(**batch)
    pldrop.remove_pld(model)
    after = [b for b in model.modules()]
    assert len(after) == len(blocks_before) and all(a is b for a, b in zip(after, blocks_before))
    assert [type(b) for b in after] == classes_before
    assert not any(isinstance(b, SwitchableBlock) for b in after)
    assert list(model.state_dict()) == keys
    # after remove_pld, training forwards run every block again
    counts = _count_runs([b for b in ctl.blocks])
    model(**batch)
    assert counts == [1] * len(counts)


@pytest.mark.parametrize("family", ["bert", "roberta-prelayernorm", "gpt2", "llama", "distilbert"])
def test_save_pretrained_strict_round_trip(family, batch, tmp_path):
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    auto = AutoModelForCausalLM if family in ("gpt2", "llama") else AutoModelForMaskedLM
    torch.manual_seed(0)
    model = FAMILIES[family]()
    ref_files = tmp_path / "ref"
    model.save_pretrained(ref_files)
    ctl = pldrop.apply_pld(model, gamma=0.5)
    ctl.step(50)
    model.train()
    model(**batch)  # some blocks dropped in this forward
    model.save_pretrained(tmp_path / "pld")

    ref_sd = __import__("safetensors.torch", fromlist=["load_file"]).load_file(ref_files / "model.safetensors")
    pld_sd = __import__("safetensors.torch", fromlist=["load_file"]).load_file(tmp_path / "pld" / "model.safetensors")
    assert list(ref_sd) == list(pld_sd)
    assert all(torch.equal(ref_sd[k], pld_sd[k]) for k in ref_sd)

    loaded, info = auto.from_pretrained(tmp_path / "pld", output_loading_info=True)
    assert type(loaded) is type(model)
    assert not any(isinstance(m, SwitchableBlock) for m in loaded.modules())  # plain HF blocks
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    model.eval(), loaded.eval()
    assert torch.equal(_logits(model, batch), _logits(loaded, batch))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_dropped_blocks_do_not_run_and_get_no_update(family, batch):
    torch.manual_seed(0)
    model = FAMILIES[family]()
    ctl = pldrop.apply_pld(model, theta_bar=0.5, gamma=1.0, seed=0)
    counts = _count_runs(ctl.blocks)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    model.train()
    seen_dropped = 0
    for step in range(20, 30):
        ctl.step(step)
        before = [[p.detach().clone() for p in b.parameters()] for b in ctl.blocks]
        counts[:] = [0] * len(counts)
        out = model(**batch)
        kept = list(ctl.last_kept)
        assert counts == [int(k) for k in kept]  # ran exactly the blocks last_kept names
        out.logits.float().pow(2).mean().backward()
        for b, k in zip(ctl.blocks, kept):
            grads = [p.grad for p in b.parameters()]
            if k:
                assert any(g is not None for g in grads)
            else:
                assert all(g is None for g in grads)
        opt.step()
        opt.zero_grad(set_to_none=True)
        for b, k, old in zip(ctl.blocks, kept, before):
            same = all(torch.equal(p, q) for p, q in zip(b.parameters(), old))
            assert same == (not k)
        seen_dropped += kept.count(False)
    assert seen_dropped > 0


def test_st_block_formula_on_pre_ln_block():
    """Kept Pre-LN block in training: h = x + A(LN(x))/p ; y = h + F(LN(h))/p, with the drawn p."""
    from transformers import RobertaPreLayerNormConfig, RobertaPreLayerNormModel

    torch.manual_seed(0)
    cfg = RobertaPreLayerNormConfig(
        vocab_size=99, hidden_size=32, num_attention_heads=2, intermediate_size=37, num_hidden_layers=4,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    model = RobertaPreLayerNormModel(cfg)
    ctl = pldrop.apply_pld(model, theta_bar=0.5, gamma=0.05, seed=1)
    model.train()
    x = torch.randn(2, 7, 32)
    for step in range(40, 80):
        ctl.step(step)
        ctl.draw()
        for i, blk in enumerate(ctl.blocks):
            p = ctl.keep_probs[i]
            y = blk(x)
            if not ctl.last_kept[i]:
                assert y is x
                continue
            a = blk.attention
            attn = a.output.dense(a.self(a.LayerNorm(x))[0])
            h = x + attn / p
            ff = blk.output.dense(blk.intermediate(h))  # intermediate applies the second LN
            expect = h + ff / p
            torch.testing.assert_close(y, expect, rtol=1e-6, atol=1e-6)
            # and it is not the unscaled block
            assert not torch.allclose(y, x + attn + blk.output.dense(blk.intermediate(x + attn)), atol=1e-4)


def test_generic_rule_on_post_ln_block():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=99, hidden_size=32, num_attention_heads=2, intermediate_size=37,
                     num_hidden_layers=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = BertModel(cfg)
    ctl = pldrop.apply_pld(model, gamma=0.05)
    ctl.step(60)
    model.train()
    x = torch.randn(2, 5, 32)
    ctl.draw()
    i = ctl.last_kept.index(True)
    blk = ctl.blocks[i]
    p = ctl.keep_probs[i]
    y = blk(x)
    ctl.enabled = False
    f = blk(x)
    torch.testing.assert_close(y, x + (f - x) / p)
    ctl.rescale = False
    ctl.enabled = True
    assert torch.equal(blk(x), f)  # rescale=False: a kept block runs unscaled


def test_gates_are_reproducible_and_resume_exactly():
    sizes = [6]
    a = pldrop.ProgressiveLayerDrop(sizes, gamma=0.01, seed=7)
    b = pldrop.ProgressiveLayerDrop(sizes, gamma=0.01, seed=7)
    c = pldrop.ProgressiveLayerDrop(sizes, gamma=0.01, seed=8)
    seq_a, seq_b, seq_c = [], [], []
    for step in range(300):
        for ctl, seq in ((a, seq_a), (b, seq_b), (c, seq_c)):
            ctl.step(step)
            seq.append((ctl.draw(), ctl.draw()))  # two micro-steps (gradient accumulation)
    assert seq_a == seq_b
    assert seq_a != seq_c

    # resume from a state_dict taken mid-step (after one micro-step)
    ref = pldrop.ProgressiveLayerDrop(sizes, gamma=0.01, seed=7)
    ref.step(150)
    ref.draw()
    state = ref.state_dict()
    import json

    state = json.loads(json.dumps(state))  # plain JSON survives
    resumed = pldrop.ProgressiveLayerDrop(sizes, theta_bar=0.9, gamma=0.5, seed=0)
    resumed.load_state_dict(state)
    assert resumed.draw() == seq_a[150][1]
    assert resumed.theta == pldrop.theta(150, 0.5, 0.01)
    with pytest.raises(ValueError, match="block lists of sizes"):
        pldrop.ProgressiveLayerDrop([3]).load_state_dict(state)


def test_kept_frequency_within_4_sigma():
    L, steps = 12, 3000
    ctl = pldrop.ProgressiveLayerDrop([L], theta_bar=0.5, gamma=0.0, seed=123)  # γ = 0: θ stays 1
    ctl.theta_bar = 0.5
    counts = [0] * L
    for step in range(steps):
        ctl.step(step)
        ctl.hold(0.5)  # θ held at θ̄ so every p_l is fixed
        assert ctl.keep_probs == pldrop.keep_probs(0.5, L) and ctl.theta == 0.5
        for i, k in enumerate(ctl.draw()):
            counts[i] += k
    for i, p in enumerate(pldrop.keep_probs(0.5, L)):
        sigma = math.sqrt(steps * p * (1 - p))
        assert abs(counts[i] - steps * p) < 4 * sigma, (i, counts[i], steps * p)
    # the schedule version: frequencies follow θ(t) through a decaying run
    ctl = pldrop.ProgressiveLayerDrop([L], theta_bar=0.5, gamma=0.002, seed=5)
    expect, got = [0.0] * L, [0] * L
    var = [0.0] * L
    for step in range(steps):
        ctl.step(step)
        for i, (k, p) in enumerate(zip(ctl.draw(), ctl.keep_probs)):
            got[i] += k
            expect[i] += p
            var[i] += p * (1 - p)
    for i in range(L):
        assert abs(got[i] - expect[i]) < 4 * math.sqrt(var[i])


def test_errors():
    from torch import nn

    with pytest.raises(ValueError, match="found no list of transformer blocks"):
        pldrop.apply_pld(nn.Sequential(nn.Linear(2, 2)))
    model = FAMILIES["bert"]()
    with pytest.raises(ValueError, match="names no submodule"):
        pldrop.apply_pld(model, layers="bert.decoder.layer")
    with pytest.raises(ValueError, match="not a non-empty nn.ModuleList"):
        pldrop.apply_pld(model, layers="bert.embeddings")
    with pytest.raises(ValueError, match="theta_bar=2.0"):
        pldrop.apply_pld(model, theta_bar=2.0)
    with pytest.raises(ValueError, match="rule='x'"):
        pldrop.apply_pld(model, rule="x")
    assert not any(isinstance(m, SwitchableBlock) for m in model.modules())  # failed calls left no trace
    pldrop.apply_pld(model)
    with pytest.raises(ValueError, match="already has PLD applied"):
        pldrop.apply_pld(model)
    pldrop.remove_pld(model)
    with pytest.raises(ValueError, match="has no PLD applied"):
        pldrop.remove_pld(model)


def test_explicit_layers_and_several_lists():
    from transformers import BartConfig, BartForConditionalGeneration

    model = BartForConditionalGeneration(BartConfig(
        vocab_size=99, d_model=32, encoder_layers=2, decoder_layers=3, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=64,
    ))
    with pytest.raises(ValueError, match="several block lists"):
        pldrop.apply_pld(model)
    ctl = pldrop.apply_pld(model, layers=["model.encoder.layers", "model.decoder.layers"], gamma=1.0)
    assert ctl.group_sizes == [2, 3]
    ctl.step(100)
    assert ctl.keep_probs == pldrop.keep_probs(ctl.theta, 2) + pldrop.keep_probs(ctl.theta, 3)
    ids = torch.randint(3, 99, (2, 9))
    model.train()
    counts = _count_runs(ctl.blocks)
    model(input_ids=ids, decoder_input_ids=ids)
    assert counts == [int(k) for k in ctl.last_kept]
    assert ctl.micro_step == 1  # one set of gates per forward, encoder and decoder together


def test_gradient_accumulation_and_release_skipped_grads(batch):
    model = FAMILIES["roberta-prelayernorm"]()
    ctl = pldrop.apply_pld(model, gamma=1.0, seed=2)
    model.train()
    ctl.step(100)
    union = [False] * ctl.num_layers
    for _ in range(2):  # two micro-batches
        model(**batch).logits.sum().backward()
        union = [u or k for u, k in zip(union, ctl.last_kept)]
    assert ctl.micro_step == 2
    for b in ctl.blocks:  # emulate DDP(find_unused_parameters=True): zeros for unused params
        for p in b.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
    released = ctl.release_skipped_grads()
    assert released == sum(len(list(b.parameters())) for b, u in zip(ctl.blocks, union) if not u)
    for b, u in zip(ctl.blocks, union):
        assert all((p.grad is None) == (not u) for p in b.parameters())


def test_from_deepspeed_config(tmp_path):
    import json

    cfg = {"train_batch_size": 8, "progressive_layer_drop": {"enabled": True, "theta": 0.6, "gamma": 0.002}}
    with pytest.warns(UserWarning, match="double dropping"):
        kwargs = pldrop.from_deepspeed_config(cfg)
    assert kwargs == {"theta_bar": 0.6, "gamma": 0.002}
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"progressive_layer_drop": {"enabled": True}}))
    assert pldrop.from_deepspeed_config(path, engine_uses_config=False) == {"theta_bar": 0.5, "gamma": 0.001}
    assert pldrop.from_deepspeed_config({"progressive_layer_drop": {"enabled": False}}) is None
    from pldrop.integrations.deepspeed import without_pld

    off = without_pld(cfg)
    assert off["progressive_layer_drop"]["enabled"] is False and cfg["progressive_layer_drop"]["enabled"] is True
    with pytest.raises(ValueError, match="theta_bar=0.0"):
        pldrop.from_deepspeed_config({"progressive_layer_drop": {"enabled": True, "theta": 0}}, False)
    with pytest.raises(pldrop.UserError, match="does not exist"):
        pldrop.from_deepspeed_config(tmp_path / "missing.json")


@pytest.mark.parametrize("family", ["roberta-prelayernorm", "llama"])
def test_gradient_checkpointing_recomputes_with_the_same_gates(family, batch):
    """Checkpointing re-runs kept blocks in backward: same gates, same 1/p, same gradients."""
    torch.manual_seed(0)
    plain = FAMILIES[family]()
    plain.config.hidden_dropout_prob = plain.config.attention_probs_dropout_prob = 0.0
    for m in plain.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    ckpt = copy.deepcopy(plain)
    ckpt.gradient_checkpointing_enable()
    from pldrop.controller import draw_gates

    probs = pldrop.keep_probs(pldrop.theta(30, 0.5, 1.0), 3)
    step = next(s for s in range(30, 300) if not all(draw_gates(probs, 4, s, 0)))  # a step with a drop
    grads = []
    for model in (plain, ckpt):
        ctl = pldrop.apply_pld(model, gamma=1.0, seed=4)
        ctl.step(step)
        model.train()
        model(**batch).logits.pow(2).mean().backward()
        grads.append(([p.grad for p in model.parameters()], list(ctl.last_kept)))
    (g1, k1), (g2, k2) = grads
    assert k1 == k2 and not all(k1)
    for a, b in zip(g1, g2):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_hold_validates_and_is_reset_by_step():
    ctl = pldrop.ProgressiveLayerDrop([2, 3], gamma=0.0)
    ctl.hold(0.6)
    assert ctl.keep_probs == pldrop.keep_probs(0.6, 2) + pldrop.keep_probs(0.6, 3)
    ctl.step(5)
    assert ctl.theta == 1.0 and ctl.keep_probs == [1.0] * 5
    with pytest.raises(ValueError, match="out of range"):
        ctl.hold(0.0)
