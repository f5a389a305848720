"""pldrop.compile.compile_blocks: a compiled PLD model does not recompile per kept set or θ."""

import functools
import sys
from pathlib import Path

import pytest
import torch

import pldrop
from pldrop.compile import compile_blocks

sys.path.insert(0, str(Path(__file__).parent / "distributed"))
from _tiny import global_batch, tiny_model  # noqa: E402

dynamo = pytest.importorskip("torch._dynamo")
from torch._dynamo.testing import CompileCounterWithBackend  # noqa: E402

STEPS, LAYERS = 30, 4


def train(compiled: str | None, steps: int = STEPS):
    """Tiny Pre-LN PLD model, θ moving every step (γ = 0.2); returns losses, gate sets, frame counts."""
    dynamo.reset()
    model = tiny_model(LAYERS)
    cnt = CompileCounterWithBackend("aot_eager")  # counts graphs; aot_eager also runs autograd's graph
    if compiled == "before":
        compile_blocks(model, backend=cnt)
    ctl = pldrop.apply_pld(model, theta_bar=0.5, gamma=0.2, seed=1)
    if compiled == "after":
        compile_blocks(model, backend=cnt)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses, gates, frames = [], [], []
    for step in range(steps):
        ctl.step(step)
        loss = model(**global_batch(step)).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        gates.append(tuple(ctl.last_kept))
        frames.append(cnt.frame_count)
    return losses, gates, frames, model


@functools.lru_cache(maxsize=1)
def eager_run():
    return train(None)[:2]


@pytest.mark.slow
@pytest.mark.parametrize("order", ["after", "before"])
def test_regional_compile_does_not_recompile_and_matches_eager(order):
    eager, eager_gates = eager_run()
    losses, gates, frames, model = train(order)
    assert gates == eager_gates
    assert len(set(gates)) >= 5  # many different kept sets, and θ changed every step
    # One graph for all blocks (they share code), compiled once: the count after 10 steps is the
    # count after 30, and a small constant.
    assert frames[9] == frames[-1] <= 2
    assert losses == pytest.approx(eager, rel=1e-5, abs=1e-6)
    assert not any(k.startswith("_orig_mod") for k in model.state_dict())
    assert set(model.state_dict()) == set(tiny_model(LAYERS).state_dict())


def test_remove_pld_keeps_blocks_compiled_and_identity():
    model = tiny_model(2).eval()
    batch = global_batch(0)
    with torch.no_grad():
        ref = model(**batch).logits
    ctl = pldrop.apply_pld(model, theta_bar=0.5, gamma=0.0)
    compile_blocks(model, backend="eager")
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, ref)  # eval: every block, divided by 1
    pldrop.remove_pld(model)
    assert all(b.__dict__.get("forward") is b._pld_compiled for b in ctl.blocks)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, ref)


def test_refuses_module_compile_and_double_compile():
    model = tiny_model(2)
    model.roberta_prelayernorm.encoder.layer[0].compile(backend="eager")
    with pytest.raises(ValueError, match="Module.compile"):
        pldrop.apply_pld(model)
    model = tiny_model(2)
    compile_blocks(model, backend="eager")
    with pytest.raises(ValueError, match="already compiled"):
        compile_blocks(model, backend="eager")


def test_bench_columns_side_by_side():
    from pldrop.reporting.timing import format_columns, time_columns

    torch.set_num_threads(1)
    r = time_columns("tiny", batch_size=2, seq_len=16, vocab_size=99, repeats=2, warmup=2, backend="eager",
                     progress=False)
    assert set(r["median_s"]) == {f"{w}/{c}" for w in ("untouched", "pld") for c in ("fp32", "bf16", "compiled")}
    assert all(t > 0 for t in r["median_s"].values())
    assert r["recompiles_after_warmup"] == 0  # new kept sets after warmup compile nothing
    table = format_columns(r)
    assert "| untouched |" in table and "compiled / fp32" in table
    with pytest.raises(ValueError, match="fp16"):
        time_columns("tiny", columns=("fp16",))
