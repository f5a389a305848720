"""torchrun worker: PLD under DDP with and without ``skip_dropped_buckets_hook``.

    torchrun --nproc_per_node=2 tests/distributed/hook_worker.py OUT_DIR [STEPS] [LAYERS] [HIDDEN] [BATCH] [SEQ] [BUCKET_MB]

Trains the same model from the same init twice (plain DDP, then DDP + hook), interleaving the
two per step, and writes OUT_DIR/hook_result.json on rank 0: whether the parameters agree, how
many buckets the hook left out, and the median step time of each (a benchmark at larger sizes).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import pldrop
from pldrop.integrations.ddp import skip_dropped_buckets_hook
from pldrop.train.distributed import dist_teardown, exit_after_teardown


def make(layers, hidden, hook, bucket_mb):
    import transformers as T

    torch.manual_seed(0)
    cfg = T.RobertaPreLayerNormConfig(vocab_size=1000, hidden_size=hidden, num_attention_heads=max(1, hidden // 64),
                                      intermediate_size=4 * hidden, num_hidden_layers=layers,
                                      max_position_embeddings=520, hidden_dropout_prob=0.0,
                                      attention_probs_dropout_prob=0.0)
    model = T.RobertaPreLayerNormForMaskedLM(cfg)
    ctl = pldrop.apply_pld(model, theta_bar=0.5, gamma=0.5, seed=7)
    ddp = DDP(model, find_unused_parameters=True, bucket_cap_mb=bucket_mb)
    if hook:
        ddp.register_comm_hook(ctl, skip_dropped_buckets_hook)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    return ddp, model, ctl, opt


def main() -> None:
    out = Path(sys.argv[1])
    defaults = ["20", "4", "64", "4", "16", "0.01"]  # tiny buckets: each lies within one block
    args = sys.argv[2:] + defaults[len(sys.argv) - 2:]
    steps, layers, hidden, batch, seq = (int(x) for x in args[:5])
    bucket_mb = float(args[5])
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    arms = {name: make(layers, hidden, hook, bucket_mb) for name, hook in (("plain", False), ("hook", True))}
    times = {k: [] for k in arms}
    for step in range(steps):
        g = torch.Generator().manual_seed(step * 10 + rank)
        ids = torch.randint(5, 1000, (batch, seq), generator=g)
        for name, (ddp, model, ctl, opt) in arms.items():
            ctl.step(step + 10)
            dist.barrier()
            t0 = time.perf_counter()
            loss = ddp(input_ids=ids, labels=ids).loss
            loss.backward()
            ctl.release_skipped_grads()
            opt.step()
            opt.zero_grad(set_to_none=True)
            times[name].append(time.perf_counter() - t0)
    pa = torch.cat([p.detach().reshape(-1) for p in arms["plain"][1].parameters()])
    pb = torch.cat([p.detach().reshape(-1) for p in arms["hook"][1].parameters()])
    gathered = [torch.zeros_like(pb) for _ in range(world)]
    dist.all_gather(gathered, pb)
    if rank == 0:
        res = {
            "world": world, "steps": steps, "layers": layers, "hidden": hidden, "batch_per_rank": batch, "seq": seq, "bucket_cap_mb": bucket_mb,
            "max_abs_diff_plain_vs_hook": float((pa - pb).abs().max()),
            "ranks_identical": all(torch.equal(gathered[0], x) for x in gathered[1:]),
            "buckets_skipped": getattr(arms["hook"][2], "buckets_skipped", 0),
            "median_step_s": {k: statistics.median(v[2:]) for k, v in times.items()},
        }
        (out / "hook_result.json").write_text(json.dumps(res, indent=1))
        print(json.dumps(res))
    dist_teardown()  # barrier first: no rank exits while a peer's collective is in flight


if __name__ == "__main__":
    main()
    exit_after_teardown()  # no interpreter finalization with gloo threads alive (docs/distributed.md)
