"""Step time of PLD under DDP (2 CPU ranks, gloo) vs one process, with shared vs per-rank gates.

    python benchmarks/bench_ddp.py                               # narrow (L12 H128), batch 8, seq 128
    python benchmarks/bench_ddp.py --preset mini --steps 30 --out mini.json

Arms (the per-process batch is the same everywhere, so DDP does twice the samples per step):

    single/full    one process, no PLD
    single/pld     one process, PLD at θ = --theta
    ddp/full       2 ranks, DDP, no PLD
    ddp/pld        2 ranks, PLD, the same gates on both ranks (pldrop's counter-based gates)
    ddp/pld-indep  2 ranks, PLD, each rank its own gate seed (what a per-rank RNG would give)

A DDP step ends with an all-reduce, so it lasts as long as its slowest rank: with independent
gates that rank runs max(kept_0, kept_1) blocks, with shared gates every rank runs the same
number. Arms are timed interleaved, step by step; each process uses one thread. Figures are
medians over the timed steps; writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import pldrop
from pldrop.models import MaskedLMLoss, build_model

VOCAB = 8000


def batch(size: int, seq_len: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (size, seq_len), generator=g)  # (B, T)
    labels = torch.where(torch.rand(size, seq_len, generator=g) < 0.15, ids, torch.full_like(ids, -100))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def expected_blocks(theta: float, layers: int, ranks: int) -> float:
    """E[max over ``ranks`` independent draws of the number of blocks kept] at θ (linear rule).

    >>> round(expected_blocks(0.5, 12, 1), 3), round(expected_blocks(0.5, 12, 2), 3)
    (8.75, 9.557)
    """
    pmf = [1.0]  # Poisson-binomial distribution of the number of kept blocks
    for p in pldrop.keep_probs(theta, layers):
        pmf = [(pmf[k] if k < len(pmf) else 0.0) * (1 - p) + (pmf[k - 1] * p if k else 0.0) for k in range(len(pmf) + 1)]
    cdf, acc = [], 0.0
    for q in pmf:
        acc += q
        cdf.append(acc)
    return sum(k * (cdf[k] ** ranks - (cdf[k - 1] ** ranks if k else 0.0)) for k in range(len(cdf)))


class Arm:
    """One model + optimizer (+ PLD controller) whose training steps we time."""

    def __init__(self, args, pld: bool, seed: int, world: int):
        self.model = build_model("pld", VOCAB, args.preset, seq_len=args.seq_len, seed=0, hidden_dropout_prob=0.0,
                                 attention_probs_dropout_prob=0.0)
        self.model.train()
        self.ctl = pldrop.apply_pld(self.model, theta_bar=args.theta, gamma=1.0, seed=seed) if pld else None
        self.net = MaskedLMLoss(self.model)  # masked-only MLM head, as pldrop's pretraining loop
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.net = DDP(self.net, find_unused_parameters=pld)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, weight_decay=0.01)
        self.times: list[float] = []
        self.kept: list[int] = []

    def step(self, i: int, b: dict[str, torch.Tensor], record: bool) -> None:
        if self.ctl is not None:
            self.ctl.step(10_000 + i)  # θ = θ̄ (γ·t is large), a fresh set of gates each step
        t0 = time.perf_counter()
        self.net(b["input_ids"], b["attention_mask"], b["labels"])[0].backward()
        if self.ctl is not None:
            self.ctl.release_skipped_grads()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        if record:
            self.times.append(dt)
            self.kept.append(sum(self.ctl.last_kept) if self.ctl is not None else self.model.config.num_hidden_layers)


def _fit(x: list[float], y: list[float]) -> tuple[float, float]:
    """Least-squares slope and intercept of y on x.

    >>> _fit([1, 2, 3], [3, 5, 7])
    (2.0, 1.0)
    """
    mx, my = statistics.fmean(x), statistics.fmean(y)
    sxx = sum((a - mx) ** 2 for a in x)
    slope = sum((a - mx) * (b - my) for a, b in zip(x, y)) / sxx if sxx else 0.0
    return slope, my - slope * mx


def time_arms(args, specs: dict[str, tuple[bool, int]], rank: int = 0, world: int = 1) -> dict[str, Arm]:
    """Time the arms interleaved step by step (rotating their order), so that load changes on the
    machine hit every arm alike."""
    arms = {name: Arm(args, pld, seed, world) for name, (pld, seed) in specs.items()}
    names = list(arms)
    for i in range(args.warmup + args.steps):
        b = batch(args.batch, args.seq_len, seed=1000 * rank + i)
        for j in range(len(names)):
            if world > 1:
                torch.distributed.barrier()
            arms[names[(i + j) % len(names)]].step(i, b, record=i >= args.warmup)
    return arms


def worker(args) -> None:
    """One rank of the DDP arms (started by torchrun)."""
    torch.distributed.init_process_group("gloo")
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    torch.set_num_threads(1)
    arms = time_arms(args, {"ddp/full": (False, 0), "ddp/pld": (True, 0), "ddp/pld-indep": (True, 100 * rank)},
                     rank, world)
    res = {}
    for name, arm in arms.items():
        every = [None] * world
        torch.distributed.all_gather_object(every, {"times": arm.times, "kept": arm.kept})
        steps = range(len(arm.times))
        res[name] = {  # a DDP step lasts as long as its slowest rank
            "step_s": statistics.median(max(e["times"][s] for e in every) for s in steps),
            "kept_mean": statistics.fmean(statistics.fmean(e["kept"][s] for e in every) for s in steps),
            "kept_slowest": statistics.fmean(max(e["kept"][s] for e in every) for s in steps),
            "gates_equal": all(e["kept"] == every[0]["kept"] for e in every),
            "per_step": [(max(e["times"][s] for e in every), max(e["kept"][s] for e in every)) for s in steps],
        }
    if rank == 0:
        Path(args.worker_out).write_text(json.dumps(res))
    torch.distributed.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="narrow", help="model preset (default: narrow = L12 H128)")
    ap.add_argument("--batch", type=int, default=8, help="sequences per process per step (default: 8)")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--theta", type=float, default=0.5, help="θ̄ held for the PLD arms (default: 0.5)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per arm (after --warmup)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("bench_ddp.json"))
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker_out:
        return worker(args)

    torch.set_num_threads(1)
    res = {}
    for name, arm in time_arms(args, {"single/full": (False, 0), "single/pld": (True, 0)}).items():
        res[name] = {"step_s": statistics.median(arm.times), "kept_mean": statistics.fmean(arm.kept),
                     "kept_slowest": statistics.fmean(arm.kept), "gates_equal": True}
    with tempfile.TemporaryDirectory() as tmp:
        wout = Path(tmp) / "ddp.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__,
               "--worker-out", str(wout), "--preset", args.preset, "--batch", str(args.batch), "--seq-len",
               str(args.seq_len), "--theta", str(args.theta), "--steps", str(args.steps), "--warmup",
               str(args.warmup)]
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        res.update(json.loads(wout.read_text()))

    base = res["single/full"]["step_s"]
    print(f"preset {args.preset}, {args.batch} x {args.seq_len} tokens per process, θ = {args.theta}, "
          f"{args.steps} timed steps, 1 thread per process")
    print(f"{'arm':<15}{'step ms':>9}{'vs single/full':>16}{'blocks (mean)':>15}{'blocks (slowest)':>18}")
    for name, r in res.items():
        print(f"{name:<15}{1000 * r['step_s']:>9.1f}{r['step_s'] / base:>15.2f}x{r['kept_mean']:>15.2f}"
              f"{r['kept_slowest']:>18.2f}")
    layers = build_model("pld", VOCAB, args.preset, seq_len=args.seq_len).config.num_hidden_layers
    e1, e2 = expected_blocks(args.theta, layers, 1), expected_blocks(args.theta, layers, 2)
    print(f"\nexpected blocks per step at θ = {args.theta}: {e1:.2f} of {layers} with shared gates; "
          f"the slowest of 2 ranks with per-rank gates runs {e2:.2f}")
    # step time against the slowest rank's block count, over every DDP step: ms per block
    pts = [pt for name in ("ddp/full", "ddp/pld", "ddp/pld-indep") for pt in res[name]["per_step"]]
    slope, intercept = _fit([k for _, k in pts], [t for t, _ in pts])
    print(f"DDP step time ≈ {1000 * intercept:.1f} ms + {1000 * slope:.1f} ms per block run by the slowest rank "
          f"(least squares over {len(pts)} steps): per-rank gates would cost {1000 * slope * (e2 - e1):.1f} ms "
          f"per step ({100 * slope * (e2 - e1) / (intercept + slope * e1):.1f} %) over shared gates")
    full, shared, indep = res["ddp/full"]["step_s"], res["ddp/pld"]["step_s"], res["ddp/pld-indep"]["step_s"]
    print(f"DDP step time saved by PLD: shared gates {100 * (1 - shared / full):.1f} %, "
          f"per-rank gates {100 * (1 - indep / full):.1f} %")
    out = {"args": {k: v for k, v in vars(args).items() if k != "worker_out"}, "arms": res,
           "saving_shared": 1 - shared / full, "saving_indep": 1 - indep / full,
           "expected_blocks": {"layers": layers, "shared": e1, "slowest_of_2_indep": e2},
           "fit": {"ms_per_block": 1000 * slope, "ms_fixed": 1000 * intercept,
                   "indep_cost_ms": 1000 * slope * (e2 - e1)},
           "torch": torch.__version__, "cpus": os.cpu_count()}
    args.out.write_text(json.dumps(out, indent=1, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
