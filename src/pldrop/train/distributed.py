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


def max_over_ranks(value: float, world: int, device) -> float:
    """The largest ``value`` over all ranks, on every rank (one all-reduce; free in one process)."""
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return float(t.item())


def dist_teardown() -> None:
    """Leave the process group cleanly (a no-op in one process); call it on every rank at the end.

    A barrier first: gloo's barrier also waits for this rank's collectives still in flight, and no
    rank passes it before every rank has reached it. Without it a rank that finishes first destroys
    its group and exits while a peer is still inside its last collective; the peer (or the exiting
    rank, with its own work still queued) can then die in gloo's threads at interpreter exit with
    SIGABRT, "terminate called without an active exception" -- one run in a few on a busy machine
    (docs/distributed.md, "flaky test: cause and fix"). Then every group (the default one and those
    made with ``new_group``) is destroyed while the interpreter is still fully alive.
    """
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return
    if dist.get_world_size() > 1:
        dist.barrier()
    dist.destroy_process_group()


def exit_after_teardown(code: int = 0) -> None:
    """``dist_teardown()``, then end the process at once with ``code`` (for the end of a torchrun worker).

    After DDP has wrapped a model, ``destroy_process_group()`` does not free the gloo group
    (measured, torch 2.13: its 3 threads still run afterwards, even after ``gc.collect()``); it is
    then torn down during interpreter finalization, where it can still abort with SIGABRT,
    "terminate called without an active exception" (seen once in 3 runs x 3 tests on a loaded
    machine *after* the barrier). With nothing left in flight after the barrier, skipping
    finalization is safe: stdout and stderr are flushed first, and files written with ``with``
    blocks are already closed.
    """
    import sys

    dist_teardown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
