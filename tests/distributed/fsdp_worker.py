"""torchrun worker: a tiny PLD model sharded with FSDP2 (``pldrop.integrations.fsdp.shard_with_pld``), gloo.

    torchrun --nproc_per_node=2 tests/distributed/fsdp_worker.py OUT_DIR MODE [STEPS] [LAYERS] [HIDDEN]

MODE:

- ``train``: STEPS optimizer steps; every all-gather and reduce-scatter FSDP2 issues is counted
  per step and phase (forward / backward); per skipped block, whether its sharded gradients were
  None and the optimizer left its parameters and state unchanged. Rank 0 then trains the same
  model in one process (no FSDP) on the same global batches and writes OUT_DIR/fsdp_result.json
  with both runs' losses, gates, counts and the largest parameter difference.
- ``die``: rank 1 exits at step 2 (before its forward); rank 0 must not hang (torchrun stops it).
- ``bench``: θ held at 1 and at 0.5 on alternate steps (interleaved); bytes all-gathered and
  reduce-scattered per step, and step times; rank 0 writes OUT_DIR/fsdp_bench.json.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

import pldrop
from _tiny import global_batch, param_groups, shard, tiny_model
from pldrop.integrations.fsdp import shard_with_pld

THETA_BAR, GAMMA, SEED, LR, WD = 0.5, 1.0, 3, 1e-3, 0.1  # γ = 1: blocks drop from step 1

COUNTS = {"phase": "forward", "log": []}  # one entry per collective: (phase, kind, bytes)


def _counting(fn, kind):
    def wrapped(output, input, *args, **kwargs):
        t = output if kind == "all_gather" else input  # the unsharded side
        COUNTS["log"].append((COUNTS["phase"], kind, t.numel() * t.element_size()))
        return fn(output, input, *args, **kwargs)

    return wrapped


def count_collectives() -> None:
    """FSDP2 calls ``dist.all_gather_single`` / ``dist.reduce_scatter_single`` (torch 2.13 ``_fsdp_collectives``)."""
    dist.all_gather_single = _counting(dist.all_gather_single, "all_gather")
    dist.reduce_scatter_single = _counting(dist.reduce_scatter_single, "reduce_scatter")


def model_for(layers: int, hidden: int):
    if hidden == 32:
        return tiny_model(layers)
    import transformers as T

    torch.manual_seed(0)
    cfg = T.RobertaPreLayerNormConfig(vocab_size=99, hidden_size=hidden, num_attention_heads=2,
                                      intermediate_size=4 * hidden, num_hidden_layers=layers,
                                      max_position_embeddings=64, hidden_dropout_prob=0.0,
                                      attention_probs_dropout_prob=0.0)
    return T.RobertaPreLayerNormForMaskedLM(cfg)


def local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def train(steps: int, layers: int, rank: int, world: int, die_at: int | None = None) -> dict:
    """Train ``steps`` steps; world=1: the one-process reference (no FSDP)."""
    model = model_for(layers, 32)
    ctl = pldrop.apply_pld(model, theta_bar=THETA_BAR, gamma=GAMMA, seed=SEED)
    if world > 1:
        shard_with_pld(model)
    opt = torch.optim.AdamW(param_groups(model, WD), lr=LR)
    out = {"losses": [], "gates": [], "counts": [], "skipped_grad_none": [], "skipped_unchanged": []}
    for step in range(steps):
        if step == die_at and rank == 1:
            os._exit(3)
        ctl.step(step)
        COUNTS["log"].clear()
        COUNTS["phase"] = "forward"
        batch = shard(global_batch(step), rank, world)  # (B/world, T)
        loss = model(**batch).loss
        COUNTS["phase"] = "backward"
        loss.backward()
        skipped = [i for i, k in enumerate(ctl.last_kept) if not k]
        out["skipped_grad_none"].append(all(p.grad is None for i in skipped for p in ctl.blocks[i].parameters()))
        before = {i: ([local(p).clone() for p in ctl.blocks[i].parameters()],
                      [{k: local(v).clone() for k, v in opt.state[p].items()} for p in ctl.blocks[i].parameters()])
                  for i in skipped}
        COUNTS["phase"] = "optimizer"
        opt.step()
        opt.zero_grad(set_to_none=True)
        same = True
        for i, (params, states) in before.items():
            for p, q, s in zip(ctl.blocks[i].parameters(), params, states):
                same &= torch.equal(local(p), q)
                now = opt.state[p]
                same &= set(now) == set(s) and all(torch.equal(local(now[k]), v) for k, v in s.items())
        out["skipped_unchanged"].append(bool(same))
        out["losses"].append(loss.item())
        out["gates"].append(list(ctl.last_kept))
        c = {}
        for phase, kind, _ in COUNTS["log"]:
            c[f"{phase}/{kind}"] = c.get(f"{phase}/{kind}", 0) + 1
        out["counts"].append(c)
    full = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone()
            for k, v in model.state_dict().items()}  # full_tensor: an all-gather, after the counting
    out["params"] = full
    return out


def bench(steps: int, layers: int, hidden: int, rank: int, world: int) -> dict:
    model = model_for(layers, hidden)
    ctl = pldrop.apply_pld(model, theta_bar=0.5, gamma=0.0, seed=SEED)
    shard_with_pld(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rows = {1.0: [], 0.5: []}
    for step in range(2 * steps + 4):
        th = 1.0 if step % 2 == 0 else 0.5
        ctl.step(step)
        ctl.hold(th)
        COUNTS["log"].clear()
        batch = shard(global_batch(step, size=8, seq=32), rank, world)
        dist.barrier()
        t0 = time.perf_counter()
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        dist.barrier()
        dt = time.perf_counter() - t0
        if step >= 4:
            ag = sum(b for _, k, b in COUNTS["log"] if k == "all_gather")
            rs = sum(b for _, k, b in COUNTS["log"] if k == "reduce_scatter")
            rows[th].append((dt, ag, rs, sum(ctl.last_kept)))
    res = {}
    for th, r in rows.items():
        res[str(th)] = {"median_step_s": statistics.median(x[0] for x in r),
                        "mean_all_gather_bytes": statistics.fmean(x[1] for x in r),
                        "mean_reduce_scatter_bytes": statistics.fmean(x[2] for x in r),
                        "mean_kept": statistics.fmean(x[3] for x in r), "steps": len(r)}
    block_bytes = sum(p.numel() * 4 for p in ctl.blocks[0].parameters())  # DTensor numel is the global one
    res["settings"] = {"layers": layers, "hidden": hidden, "world": world, "batch": 8, "seq": 32,
                       "block_bytes_unsharded": block_bytes, "threads": torch.get_num_threads()}
    return res


def main() -> None:
    out_dir, mode = Path(sys.argv[1]), sys.argv[2]
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 6
    layers = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    hidden = int(sys.argv[5]) if len(sys.argv) > 5 else 32
    torch.set_num_threads(1)
    count_collectives()
    # generous for a busy 2-core machine; a dead rank is still noticed at once (torchrun stops the others)
    dist.init_process_group("gloo", timeout=timedelta(seconds=300))
    rank, world = dist.get_rank(), dist.get_world_size()
    if mode == "bench":
        res = bench(steps, layers, hidden, rank, world)
        if rank == 0:
            (out_dir / "fsdp_bench.json").write_text(json.dumps(res, indent=1))
        dist.destroy_process_group()
        return
    got = train(steps, layers, rank, world, die_at=2 if mode == "die" else None)
    dist.barrier()
    if rank == 0:
        ref = train(steps, layers, 0, 1)
        diff = max((got["params"][k].float() - v.float()).abs().max().item() for k, v in ref["params"].items())
        res = {k: v for k, v in got.items() if k != "params"}
        res.update(world=world, ref_losses=ref["losses"], ref_gates=ref["gates"], max_param_diff=diff,
                   ref_skipped_unchanged=ref["skipped_unchanged"],
                   param_names_equal=sorted(got["params"]) == sorted(ref["params"]))
        (out_dir / "fsdp_result.json").write_text(json.dumps(res, indent=1))
    dist.barrier()  # both ranks leave together: none tears its process group down while the other still works
    dist.destroy_process_group()
    # Leave without the interpreter's C++ teardown: under CPU load a rank sometimes aborted *after* main()
    # had returned and the results were written ("terminate called without an active exception", SIGABRT,
    # no Python frame: a joinable std::thread destroyed at exit; 1 run in 5 beside a 2-thread training job)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
