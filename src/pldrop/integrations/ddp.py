"""A DDP communication hook that leaves out gradient buckets of blocks every rank skipped.

With pldrop's gates every rank skips the same blocks, so their gradients are zero everywhere
and DDP (``find_unused_parameters=True``) leaves them ``None`` after backward -- yet it still
all-reduces the buckets that hold them. This hook returns such a bucket as it is (zeros)
without communication; any bucket with a parameter of a block that ran is all-reduced (mean)
as DDP's default hook does. Skipped blocks still get no update: their ``grad`` stays ``None``.

    ddp = DistributedDataParallel(model, find_unused_parameters=True)
    ddp.register_comm_hook(ctl, skip_dropped_buckets_hook)

Only valid with identical gates on every rank (pldrop's default: same ``seed`` everywhere).
"""


import torch
import torch.distributed as dist


def skipped_param_ids(ctl) -> "set[int]":
    """``id`` of every parameter of a block that ran in none of this step's forwards."""
    key = (ctl.global_step, ctl.micro_step)
    cached = getattr(ctl, "_skipped_ids_cache", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    ids = {id(p) for b, kept in zip(ctl.blocks, ctl._kept_this_step) if not kept for p in b.parameters()}
    ctl._skipped_ids_cache = (key, ids)
    return ids


def skip_dropped_buckets_hook(ctl, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP comm hook (state = the PLD controller): no all-reduce for all-skipped buckets."""
    skipped = skipped_param_ids(ctl)
    if skipped and all(id(p) in skipped for p in bucket.parameters()):
        ctl.buckets_skipped = getattr(ctl, "buckets_skipped", 0) + 1
        fut: torch.futures.Future[torch.Tensor] = torch.futures.Future()
        fut.set_result(bucket.buffer())
        return fut
    buf = bucket.buffer().div_(dist.get_world_size())
    return dist.all_reduce(buf, async_op=True).get_future().then(lambda f: f.value()[0])
