"""torchrun worker: a tiny PLD model under DistributedDataParallel on 2 CPU ranks (gloo).

    torchrun --nproc_per_node=2 tests/distributed/ddp_worker.py OUT_DIR [STEPS]

Rank 0 writes OUT_DIR/ddp_result.json and OUT_DIR/ddp_params.pt (the final parameters of the
main run); the test compares them with a single process trained on the same global batches.

Runs, one after the other in one process group:

- ``main``: DDP(find_unused_parameters=True), AdamW with weight decay, ``zero_grad(set_to_none=True)``,
  ``ctl.release_skipped_grads()`` after backward; gates all-gathered every step.
- ``zeros`` / ``zeros_released``: ``zero_grad(set_to_none=False)`` (skipped blocks keep zero
  gradient tensors) without / with ``release_skipped_grads``.
- ``indep`` / ``indep_released``: each rank its own gate seed (no consistency), without / with release.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import pldrop
from _tiny import flat_params, global_batch, param_groups, shard, tiny_model
from pldrop.train.distributed import dist_teardown, exit_after_teardown

THETA_BAR, GAMMA, SEED, LR, WD = 0.5, 0.2, 3, 1e-3, 0.1


def train(steps: int, rank: int = 0, world: int = 1, seed: int = SEED, set_to_none: bool = True,
          release: bool = True) -> dict:
    """Train a fresh tiny PLD model for ``steps`` optimizer steps; world=1 means no DDP (the reference).

    Returns the model, each step's gates, and per skipped block and step: whether its gradient was
    None before release, and whether the optimizer step left it unchanged.
    """
    model = tiny_model()
    ctl = pldrop.apply_pld(model, theta_bar=THETA_BAR, gamma=GAMMA, seed=seed)
    net = DDP(model, find_unused_parameters=True) if world > 1 else model
    opt = torch.optim.AdamW(param_groups(model, WD), lr=LR)
    gates, grad_none, unchanged, losses = [], [], [], []
    for step in range(steps):
        ctl.step(step)
        batch = shard(global_batch(step), rank, world)  # (B/world, T)
        loss = net(**batch).loss  # mean over this rank's tokens; DDP averages gradients over ranks
        loss.backward()
        skipped = [i for i, k in enumerate(ctl.last_kept) if not k]
        grad_none.append([all(p.grad is None for p in ctl.blocks[i].parameters()) for i in skipped])
        if release:
            ctl.release_skipped_grads()
        before = {i: [p.detach().clone() for p in ctl.blocks[i].parameters()] for i in skipped}
        opt.step()
        opt.zero_grad(set_to_none=set_to_none)
        unchanged.append([all(torch.equal(a, p) for a, p in zip(before[i], ctl.blocks[i].parameters()))
                          for i in skipped])
        gates.append(list(ctl.last_kept))
        losses.append(loss.item())
    return {"model": model, "gates": gates, "grad_none": grad_none, "unchanged": unchanged, "losses": losses}


def _gather(obj):
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _params_agree(model) -> tuple[bool, float]:
    flat = flat_params(model)
    every = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(every, flat)
    return all(torch.equal(f, every[0]) for f in every), max((f - every[0]).abs().max().item() for f in every)


def main(out: Path, steps: int) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    res = {"world": world, "steps": steps}

    # main run: gates compared across ranks at every step
    torch.manual_seed(0)
    r = train(steps, rank, world)
    every_gates = _gather(r["gates"])
    res["gates"] = r["gates"]
    res["gates_equal_every_step"] = [all(g[s] == every_gates[0][s] for g in every_gates) for s in range(steps)]
    res["params_equal"], res["params_max_diff"] = _params_agree(r["model"])
    res["grad_none"], res["unchanged"] = r["grad_none"], r["unchanged"]
    res["mean_losses"] = [sum(x) / world for x in zip(*_gather(r["losses"]))]  # = the full-batch loss
    if rank == 0:
        torch.save(flat_params(r["model"]), out / "ddp_params.pt")

    # what release_skipped_grads is for: zero gradient tensors left by zero_grad(set_to_none=False)
    short = min(steps, 12)
    for name, kw in {"zeros": dict(set_to_none=False, release=False),
                     "zeros_released": dict(set_to_none=False, release=True),
                     "indep": dict(seed=SEED + 100 * rank, release=False),
                     "indep_released": dict(seed=SEED + 100 * rank, release=True)}.items():
        r = train(short, rank, world, **kw)
        equal, diff = _params_agree(r["model"])
        res[name] = {"unchanged": r["unchanged"], "grad_none": r["grad_none"], "params_equal": equal,
                     "params_max_diff": diff, "gates_equal": all(g == r["gates"] for g in _gather(r["gates"]))}
    if rank == 0:
        (out / "ddp_result.json").write_text(json.dumps(res))
    dist_teardown()  # barrier first: no rank exits while a peer's collective is in flight


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 50)
    exit_after_teardown()  # no interpreter finalization with gloo threads alive (docs/distributed.md)
