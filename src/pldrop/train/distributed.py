"""Process-group set-up for ``torchrun``: one place for rank, world size, device and teardown.

Runs as one process when ``WORLD_SIZE`` is unset; under ``torchrun`` DDP/FSDP over gloo (CPU) or
nccl (GPU). Only rank 0 writes files.
"""

from __future__ import annotations

import datetime
import os

import torch


def dist_setup() -> tuple[int, int, torch.device]:
    """(rank, world size, device); initialises the default process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend, timeout=datetime.timedelta(seconds=60))
    return rank, world, device


def any_rank(flag: bool, world: int, device) -> bool:
    """True on every rank if ``flag`` is true on any rank (one all-reduce; free in one process)."""
    if world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())


def dist_teardown() -> None:
    """Leave the process group cleanly (a no-op in one process)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
