"""torchrun worker: pldrop's PLD under deepspeed.initialize, ZeRO stages 0, 1, 2, 2 CPU ranks (gloo).

    DS_ACCELERATOR=cpu torchrun --nproc_per_node=2 tests/distributed/ds_worker.py OUT_DIR [STEPS] [then-indep]

Rank 0 writes OUT_DIR/ds_result.json, per stage: DeepSpeed's own PLD state, gates compared across
ranks every step, whether each block skipped at a step came through ``engine.step`` unchanged,
final parameters compared across ranks, and the parameters themselves. With ``then-indep``
it then runs ZeRO-2 once more with a different gate seed on each rank, which is expected to
abort the job (so the exit code is non-zero after the result file is written).
"""

from __future__ import annotations

import importlib
import json
import sys
import warnings
from pathlib import Path

import deepspeed
import torch
import torch.distributed as dist

from _tiny import flat_params, global_batch, param_groups, shard, tiny_model
from ddp_worker import GAMMA, LR, SEED, THETA_BAR, WD
from pldrop.integrations import deepspeed as pld_ds
from pldrop.train.distributed import dist_teardown, exit_after_teardown

# DeepSpeed's CPU backend JIT-compiles a shared-memory all-reduce op (for inference) at
# init_distributed: minutes of C++ compilation on a fresh machine, and unused here.
# (`deepspeed.comm.torch` the attribute is torch itself: reach the submodule through importlib.)
importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None


def config(stage: int) -> dict:
    return {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1, "train_batch_size": 4,
            "zero_optimization": {"stage": stage}, "steps_per_print": 10**9,
            "gradient_clipping": 0.0,  # DeepSpeed 0.19 clips at 1.0 by default; the reference does not clip
            "progressive_layer_drop": {"enabled": True, "theta": THETA_BAR, "gamma": GAMMA}}


def run(stage: int, steps: int, seed: int) -> dict:
    rank, world = dist.get_rank(), dist.get_world_size()
    model = tiny_model()
    opt = torch.optim.AdamW(param_groups(model, WD), lr=LR)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine, _, _, _, ctl = pld_ds.initialize_with_pld(model, config(stage), seed=seed, optimizer=opt)
    res = {"ds_pld": engine.progressive_layer_drop is not None, "theta_bar": ctl.theta_bar, "gamma": ctl.gamma,
           "warned": any("ZeRO stage" in str(w.message) for w in caught), "gates": [], "unchanged": [],
           "released": 0}
    for step in range(steps):
        pld_ds.sync_step(ctl, engine)
        loss = engine(**shard(global_batch(step), rank, world)).loss
        engine.backward(loss)
        res["released"] += pld_ds.release_skipped_grads(ctl, engine)
        skipped = [i for i, k in enumerate(ctl.last_kept) if not k]
        before = {i: [p.detach().clone() for p in ctl.blocks[i].parameters()] for i in skipped}
        engine.step()
        res["unchanged"].append([all(torch.equal(a, p) for a, p in zip(before[i], ctl.blocks[i].parameters()))
                                 for i in skipped])
        res["gates"].append(list(ctl.last_kept))
    every = [None] * world
    dist.all_gather_object(every, res["gates"])
    res["gates_equal"] = all(g == every[0] for g in every)
    flat = flat_params(model)
    all_flat = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(all_flat, flat)
    res["params_equal"] = all(torch.equal(f, all_flat[0]) for f in all_flat)
    res["steps"] = engine.global_steps
    res["params"] = flat.tolist()
    return res


def main(out: Path, steps: int, indep: bool) -> None:
    deepspeed.init_distributed(dist_backend="gloo")
    rank = dist.get_rank()
    res = {stage: run(stage, steps, SEED) for stage in (0, 1, 2)}
    if rank == 0:
        (out / "ds_result.json").write_text(json.dumps(res))
    if indep:  # each rank its own gates: expected to abort inside ZeRO-2's bucketed reduction
        dist.barrier()
        print(f"rank {rank}: ZeRO-2 with independent gates", flush=True)
        run(2, steps, seed=SEED + 100 * rank)
        print(f"rank {rank}: ZeRO-2 with independent gates did not fail", flush=True)
    dist_teardown()  # not reached when the independent-gates run aborts, as expected


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 12, "then-indep" in sys.argv[3:])
    exit_after_teardown()  # no interpreter finalization with gloo threads alive (docs/distributed.md)
