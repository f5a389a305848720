"""torchrun worker: transformers.Trainer (which builds DDP itself) + PLDCallback on 2 CPU ranks.

    torchrun --nproc_per_node=2 tests/distributed/trainer_worker.py OUT_DIR

Rank 0 writes OUT_DIR/trainer_result.json: the log history, whether gates and final parameters
agree on every rank, and whether each block skipped at a step came through that step unchanged.
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import transformers

import pldrop
from _tiny import flat_params, global_batch, tiny_model
from pldrop.integrations import PLDCallback
from pldrop.train.distributed import dist_teardown, exit_after_teardown

THETA_BAR, GAMMA, STEPS = 0.5, 0.3, 8


def main(out: Path) -> None:
    model = tiny_model()
    ctl = pldrop.apply_pld(model, theta_bar=THETA_BAR, gamma=GAMMA, seed=1)
    b = global_batch(0, size=64)
    rows = [{k: v[i] for k, v in b.items()} for i in range(64)]
    gates, untouched = [], []

    class Spy(transformers.TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kw):
            gates.append(list(ctl.last_kept))
            self.before = {i: [p.detach().clone() for p in ctl.blocks[i].parameters()]
                           for i, k in enumerate(ctl.last_kept) if not k}
            self.grad_none = all(p.grad is None for i in self.before for p in ctl.blocks[i].parameters())

        def on_optimizer_step(self, args, state, control, **kw):
            for i, ps in self.before.items():
                untouched.append(self.grad_none and all(torch.equal(a, p) for a, p in zip(ps, ctl.blocks[i].parameters())))

    args = transformers.TrainingArguments(
        output_dir=str(out / "trainer"), max_steps=STEPS, per_device_train_batch_size=2, learning_rate=1e-3,
        weight_decay=0.1, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=0,
        disable_tqdm=True, ddp_backend="gloo", ddp_find_unused_parameters=True)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=rows, callbacks=[PLDCallback(), Spy()])
    trainer.train()

    world, rank = dist.get_world_size(), dist.get_rank()
    all_gates = [None] * world
    dist.all_gather_object(all_gates, gates)
    flat = flat_params(model)
    all_flat = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(all_flat, flat)
    if rank == 0:
        res = {"world": world, "wrapped": type(trainer.model_wrapped).__name__,
               "gates_equal": all(g == all_gates[0] for g in all_gates), "gates": gates,
               "params_equal": all(torch.equal(f, all_flat[0]) for f in all_flat),
               "untouched": untouched, "log_history": trainer.state.log_history}
        (out / "trainer_result.json").write_text(json.dumps(res))
    dist_teardown()  # Trainer leaves the group up; exiting with it is the SIGABRT race (docs/distributed.md)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    exit_after_teardown()  # no interpreter finalization with gloo threads alive (docs/distributed.md)
