"""torchrun worker: the racy end of a run, then ``dist_teardown()`` (or only destroy_process_group).

    torchrun --nproc_per_node=2 tests/distributed/teardown_worker.py OUT_DIR [teardown|destroy-only]

Rank 1 is slow (it sleeps, as a rank descheduled on a busy machine does) before the last
collective; each rank starts that all-reduce asynchronously and goes straight to the teardown, so
rank 0 reaches it with its own work still in flight. Each rank writes OUT_DIR/rank<R>.json: when
its teardown returned, when rank 1's all-reduce was issued, and whether this rank's work had
completed by the time the teardown returned.
"""

import json
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from pldrop.train.distributed import dist_setup, dist_teardown, exit_after_teardown

SLOW = 2.0  # seconds rank 1 lags behind


def main(out: Path, mode: str) -> None:
    rank, world, _ = dist_setup()
    net = DDP(torch.nn.Linear(4, 4))  # DDP keeps the gloo group alive past destroy_process_group
    net(torch.ones(2, 4)).sum().backward()
    if rank == 1:
        time.sleep(SLOW)
    issued = time.time()
    work = dist.all_reduce(torch.ones(1000), async_op=True)
    if mode == "teardown":
        dist_teardown()
    else:
        dist.destroy_process_group()
    done = time.time()
    (out / f"rank{rank}.json").write_text(json.dumps({"issued": issued, "teardown_done": done,
                                                      "work_completed": work.is_completed()}))


if __name__ == "__main__":
    mode = sys.argv[2] if len(sys.argv) > 2 else "teardown"
    main(Path(sys.argv[1]), mode)
    if mode == "teardown":
        exit_after_teardown()
