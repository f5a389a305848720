"""The pretraining loop: read it top to bottom.

    setup -> data -> model (+ PLD) -> optimizer -> resume? -> for each step:
        θ(t), lr(t) -> micro-batches: forward, backward -> clip -> AdamW -> log -> eval? -> save?

Runs as one process or under ``torchrun`` (it reads RANK / WORLD_SIZE from the environment):
DDP over gloo on CPU or nccl on GPU, data sharded by rank, only rank 0 writes files.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import shutil
import signal
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..models import MaskedLMLoss, build_model, train_flops
from ..schedule import gamma_for_steps
from ..surgery import apply_pld
from .checkpoint import atomic_write_text, latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig, default_lr, dump_config
from .distributed import any_rank, dist_setup

HORIZON_WINDOW = 10  # time budgets: the horizon is re-estimated each step from this many recent steps


# --- small pure helpers ----------------------------------------------------------------------


def lr_at(step: int, peak: float, horizon: int, schedule: str, warmup_ratio: float,
          decay_rate: float = 0.99, decay_every: int = 10) -> float:
    """Learning rate at ``step``: linear warm-up, then linear decay to 0 at ``horizon``, the
    paper's exponential decay (``decay_rate`` every ``decay_every`` steps), or constant.

    >>> [round(lr_at(s, 1.0, 100, "linear", 0.1), 3) for s in (0, 5, 10, 55, 100)]
    [0.1, 0.6, 1.0, 0.5, 0.0]
    >>> round(lr_at(30, 1.0, 100, "exp", 0.1, 0.5, 10), 3)
    0.25
    """
    warmup = max(1, round(warmup_ratio * horizon)) if warmup_ratio > 0 else 0
    if step < warmup:
        return peak * (step + 1) / warmup
    if schedule == "constant":
        return peak
    if schedule == "exp":
        return peak * decay_rate ** ((step - warmup) / decay_every)
    return peak * max(0.0, (horizon - step) / max(1, horizon - warmup))


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """BERT's convention: no weight decay on biases and LayerNorm weights."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class _Stop:
    """Turns SIGTERM / SIGINT into a flag the loop checks after each step."""

    def __init__(self):
        self.signal: int | None = None
        self._old = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass

    def _handle(self, signum, frame):
        if self.signal is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signal = signum

    def restore(self):
        for sig, old in self._old.items():
            signal.signal(sig, old)


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset, batch_size: int, max_seqs: int, bf16: bool, device) -> dict[str, float]:
    """Masked-token loss and accuracy over (the first ``max_seqs`` of) the validation set."""
    from ..data.batches import collate

    was_training = model.training
    model.eval()
    loss_fn = MaskedLMLoss(model)
    n = len(dataset) if not max_seqs else min(max_seqs, len(dataset))
    total_loss, correct, count = 0.0, 0, 0
    for start in range(0, n, batch_size):
        batch = collate([dataset[i] for i in range(start, min(n, start + batch_size))])
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            loss, c, m = loss_fn(batch["input_ids"], batch["attention_mask"], batch["labels"])
        total_loss += loss.item() * m
        correct += int(c)
        count += m
    model.train(was_training)
    return {"val_loss": total_loss / max(1, count), "val_accuracy": correct / max(1, count), "val_tokens": count}


# --- the run folder ---------------------------------------------------------------------------

IDENTITY_KEYS = ("model", "data.seq_len", "data.corpus", "data.lowercase", "data.vocab_size", "seed")


def _get(d: dict, dotted: str):
    for k in dotted.split("."):
        d = d[k]
    return d


def check_run_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to touch an existing run folder unless asked; refuse --resume without a checkpoint."""
    if resume and overwrite:
        raise UserError("--resume and --overwrite exclude each other")
    exists = out.exists() and any(out.iterdir())
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {str(out)!r} is a file, not a folder")
    if resume:
        if not exists or latest_checkpoint(out / "checkpoints") is None:
            raise UserError(f"--resume: {str(out)!r} holds no checkpoint to resume from")
    elif exists and not overwrite:
        raise UserError(f"run folder {str(out)!r} already exists; pass --resume to continue it or --overwrite to replace it")


def check_resume_compatible(out: Path, cfg: TrainConfig) -> None:
    """A resumed run must be the same model, tokenizer and data as the saved one."""
    import yaml

    saved = yaml.safe_load((out / "config.yaml").read_text())
    now = cfg.to_dict()
    for key in IDENTITY_KEYS:
        if _get(saved, key) != _get(now, key):
            raise UserError(
                f"--resume: {str(out)!r} was trained with {key}={_get(saved, key)!r}, not {_get(now, key)!r}; "
                "use another --out for a different model or data"
            )


# --- the loop ---------------------------------------------------------------------------------


def pretrain(cfg: TrainConfig, out: str | Path, resume: bool = False, overwrite: bool = False,
             progress: bool | None = None, data=None) -> dict[str, Any]:
    """Pretrain one arm; returns a summary (also written to ``<out>/summary.json``).

    Args:
        cfg: the resolved configuration.
        out: the run folder.
        resume: continue from the run folder's latest checkpoint.
        overwrite: replace an existing run folder.
        progress: show a progress bar (None: when stderr is a terminal).
        data: already prepared data (``pldrop compare`` shares one between its arms).
    """
    from torch.utils.tensorboard import SummaryWriter
    from tqdm.auto import tqdm

    from ..data.batches import TrainBatches
    from ..data.dataset import prepare_data

    out = Path(out)
    rank, world, device = dist_setup()
    main_proc = rank == 0
    check_run_folder(out, resume, overwrite)
    if resume:
        check_resume_compatible(out, cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    # data: tokenizer, packed sequences (cached), fixed validation masks
    d = cfg.data
    tokenizer_dir = str(out) if resume else d.tokenizer
    if resume and d.tokenizer is not None:
        from ..data.tokenizer import load_tokenizer, tokenizer_fingerprint

        if tokenizer_fingerprint(load_tokenizer(d.tokenizer)) != tokenizer_fingerprint(load_tokenizer(out)):
            raise UserError(f"--resume: {str(out)!r} was trained with another tokenizer than {d.tokenizer!r}; "
                            "use another --out for a different tokenizer")
    if data is None:
        # rank 0 tokenizes and caches first, the others then read the cache; a group with a long
        # timeout, as tokenizing a large corpus can outlast the 60 s that catches a dead rank
        prep = torch.distributed.new_group(backend="gloo", timeout=datetime.timedelta(hours=2)) if world > 1 else None
        if world > 1 and not main_proc:
            torch.distributed.barrier(group=prep)
        data = prepare_data(d.corpus, seq_len=d.seq_len, vocab_size=d.vocab_size, lowercase=d.lowercase,
                            tokenizer_dir=tokenizer_dir, val_fraction=d.val_fraction, seed=cfg.seed,
                            cache_dir=d.cache_dir, text_field=d.text_field, text_column=d.text_column,
                            mlm_prob=d.mlm_prob, progress=progress)
        if world > 1 and main_proc:
            torch.distributed.barrier(group=prep)
    o = cfg.optim
    batches = TrainBatches(data.train, o.batch_size, seed=cfg.seed, rank=rank, world_size=world)
    if len(data.valid) == 0:
        raise UserError("the corpus gave no validation sequences; give more documents or raise data.val_fraction")

    # model (+ PLD); a DeepSpeed config's progressive_layer_drop block sets θ̄ and γ
    m = cfg.model
    if cfg.deepspeed:
        from ..integrations.deepspeed import from_deepspeed_config

        ds_pld = from_deepspeed_config(cfg.deepspeed, engine_uses_config=False)
        if ds_pld is not None:
            if not m.uses_pld:
                raise UserError(f"the DeepSpeed config enables progressive_layer_drop, but arm {m.arm!r} has no PLD; "
                                "use --arm pld (or postln-pld), or disable it in the config")
            cfg.pld.theta_bar, cfg.pld.gamma = ds_pld["theta_bar"], ds_pld["gamma"]
    drop = {"hidden_dropout_prob": m.dropout, "attention_probs_dropout_prob": m.dropout}
    model = build_model(m.arm, len(data.tokenizer), m.preset, m.config_file, d.seq_len, cfg.seed, **drop).to(device)
    model.train()
    ctl = None
    if m.uses_pld:
        ctl = apply_pld(model, theta_bar=cfg.pld.theta_bar, gamma=0.0, seed=cfg.seed, rule=cfg.pld.rule,
                        rescale=cfg.pld.rescale)
    loss_module = MaskedLMLoss(model)
    if world > 1 and not cfg.deepspeed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        # a skipped block's parameters get no gradient: DDP must look for unused parameters
        loss_module = DDP(loss_module, find_unused_parameters=ctl is not None)
    peak_lr = o.lr if o.lr is not None else default_lr(m.arm, o.paper_lrs)
    optimizer = torch.optim.AdamW(_param_groups(model, o.weight_decay), lr=peak_lr, betas=(o.beta1, o.beta2),
                                  eps=o.eps)
    engine = None
    if cfg.deepspeed:  # DeepSpeed wraps the loss module and the optimizer (ZeRO), clips, and reduces
        from ..integrations.deepspeed import engine_for_pretraining
        from ..integrations.deepspeed import release_skipped_grads as ds_release

        engine = loss_module = engine_for_pretraining(loss_module, optimizer, cfg.deepspeed, micro_batch=o.batch_size,
                                                      grad_accum=o.grad_accum, world=world, clip_grad=o.clip_grad)
        optimizer = engine.optimizer

    # budget and horizon (steps the lr schedule and γ = 100/T assume)
    b = cfg.budget
    global_batch = o.batch_size * o.grad_accum * world
    horizon = b.horizon_steps or (b.max_steps or (math.ceil(b.max_samples / global_batch) if b.max_samples else None))
    step, samples, train_time, flops = 0, 0, 0.0, 0.0
    horizon_estimated = horizon is None  # a time budget: re-estimated every step (see below)

    if resume:
        ckpt = latest_checkpoint(out / "checkpoints")
        if engine is not None:
            raise UserError("--resume of a --deepspeed run is not supported yet (ZeRO optimizer state is not "
                            "saved as plain tensors); start a new run")
        state = load_checkpoint(ckpt, model, optimizer)
        step, samples, train_time, flops = state["step"], state["samples"], state["train_time"], state["flops"]
        horizon = state["horizon"]
        if ctl is not None and state.get("pld"):
            ctl.load_state_dict(state["pld"])
    elif main_proc:
        if overwrite and out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", dump_config(cfg))
        data.tokenizer.save_pretrained(str(out))
        (out / "CREDITS.md").write_text(data.credits or "", encoding="utf-8")
    if main_proc:
        pld_info = {"enabled": ctl is not None, "arm": m.arm, "theta_bar": cfg.pld.theta_bar,
                    "gamma": None, "rule": cfg.pld.rule, "rescale": cfg.pld.rescale, "fixed": cfg.pld.fixed,
                    "paper": "https://arxiv.org/abs/2010.13369"}

    def set_horizon(h: int) -> None:
        nonlocal horizon
        horizon = max(1, int(h))
        if ctl is not None:
            ctl.gamma = cfg.pld.gamma if cfg.pld.gamma is not None else gamma_for_steps(horizon)

    def write_pld_info() -> None:
        if main_proc:
            pld_info["gamma"] = ctl.gamma if ctl is not None else None
            pld_info["horizon_steps"] = horizon
            atomic_write_text(out / "pldrop.json", json.dumps(pld_info, indent=1))

    set_horizon(horizon or 10_000)  # time budgets: provisional until the first steps are timed
    write_pld_info()

    if resume and main_proc:
        _truncate_metrics(out / "metrics.jsonl", step)
    writer = SummaryWriter(str(out / "tb")) if main_proc else None
    metrics = open(out / "metrics.jsonl", "a", encoding="utf-8") if main_proc else None
    stop = _Stop()
    budget_s = b.max_minutes * 60 if b.max_minutes else None
    bar_total = b.max_steps or b.max_samples or budget_s
    bar_unit = "step" if b.max_steps else ("sample" if b.max_samples else "s")
    show = progress if progress is not None else os.isatty(2)
    bar = tqdm(total=bar_total, initial=min(bar_total, {"step": step, "sample": samples, "s": train_time}[bar_unit]),
               unit=bar_unit, desc=f"{m.arm}", disable=not (main_proc and show), dynamic_ncols=True)
    step_times: list[float] = []
    start_wall = time.time()
    last_eval: dict[str, float] = {}
    summary: dict[str, Any] = {}

    def done() -> bool:
        if b.max_steps is not None:
            return step >= b.max_steps
        if b.max_samples is not None:
            return samples >= b.max_samples
        return any_rank(train_time >= budget_s, world, device)

    def save() -> None:
        if not main_proc:
            return
        state = {"step": step, "samples": samples, "train_time": train_time, "flops": flops, "horizon": horizon,
                 "pld": ctl.state_dict() if ctl is not None else None, "arm": m.arm}
        # under DeepSpeed only the weights are kept (its optimizer state holds Python objects)
        save_checkpoint(out / "checkpoints", model, optimizer if engine is None else _NoState(), state)

    try:
        while not done():
            t0 = time.perf_counter()
            # θ(t) and lr(t) for this step
            if ctl is not None:
                ctl.step(step)
                if cfg.pld.fixed:  # ablation: θ held at θ̄ from the start
                    ctl.hold(cfg.pld.theta_bar)
            lr = lr_at(step, peak_lr, horizon, o.schedule, o.warmup_ratio, o.exp_decay_rate, o.exp_decay_every)
            for g in optimizer.param_groups:
                g["lr"] = lr

            # forward and backward over the micro-batches of this step
            loss_sum, correct, masked, blocks_run = 0.0, 0, 0, 0.0
            for micro in range(o.grad_accum):
                batch = batches.batch(step * o.grad_accum + micro)
                batch = {k: v.to(device) for k, v in batch.items()}
                with torch.autocast(device.type, torch.bfloat16, enabled=o.bf16):
                    loss, c, n = loss_module(batch["input_ids"], batch["attention_mask"], batch["labels"])
                loss_sum += loss.item() / o.grad_accum
                if engine is not None:  # DeepSpeed scales by 1/accumulation and steps at the boundary
                    engine.backward(loss)
                    if micro == o.grad_accum - 1:
                        _check_finite(loss_sum, step, lr, out)
                        if ctl is not None:
                            ds_release(ctl, engine)
                    engine.step()
                else:
                    (loss / o.grad_accum).backward()
                correct, masked = correct + int(c), masked + n
                kept_now = sum(ctl.last_kept) if ctl is not None and ctl.last_kept is not None else _num_blocks(model)
                blocks_run += kept_now / o.grad_accum
                flops += train_flops(model.config, batch["input_ids"].shape[0], d.seq_len, n, kept_now) * world
            if engine is None:
                _check_finite(loss_sum, step, lr, out)
                if ctl is not None:
                    ctl.release_skipped_grads()  # DDP fills zeros for skipped blocks: no update for them
                if o.clip_grad > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), o.clip_grad)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            step += 1
            samples += global_batch
            dt = time.perf_counter() - t0
            train_time += dt
            step_times.append(dt)

            # time budgets: horizon = steps so far + remaining time / recent step time, so the lr
            # decay and θ(t) (γ = 100/T) follow the fraction of the budget spent; the very first
            # step (allocator and thread-pool warm-up) is left out of the estimate
            if horizon_estimated:
                recent = step_times[1:][-HORIZON_WINDOW:] or step_times
                set_horizon(step + round(max(0.0, budget_s - train_time) / statistics.median(recent)) + 1)

            # log
            record = {"step": step, "loss": loss_sum, "lr": lr, "samples": samples,
                      "step_time": dt, "samples_per_s": global_batch / dt, "wall": train_time,
                      "elapsed": time.time() - start_wall, "flops": flops, "mlm_accuracy": correct / max(1, masked),
                      "blocks_run": blocks_run, "theta": ctl.theta if ctl is not None else 1.0,
                      "horizon": horizon}
            if ctl is not None:
                record["expected_kept"] = ctl.expected_kept
            finished = done()
            if step % cfg.eval_every == 0 or finished:
                if main_proc:
                    last_eval = evaluate(model, data.valid, o.batch_size, d.val_max_seqs, o.bf16, device)
                    record.update(last_eval)
                if world > 1:
                    torch.distributed.barrier()
            if main_proc and (step % cfg.log_every == 0 or "val_loss" in record or finished):
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
                for k, v in record.items():
                    if isinstance(v, (int, float)) and k != "step":
                        writer.add_scalar(f"train/{k}" if not k.startswith("val_") else f"valid/{k[4:]}", v, step)
            bar.set_postfix(loss=f"{loss_sum:.3f}", theta=f"{record['theta']:.3f}",
                            **({"val": f"{last_eval['val_loss']:.3f}"} if last_eval else {}), refresh=False)
            bar.update({"step": 1, "sample": global_batch, "s": dt}[bar_unit])

            if finished or (cfg.save_every and step % cfg.save_every == 0):
                save()
            if any_rank(stop.signal is not None, world, device):
                save()
                name = "SIGTERM" if stop.signal == signal.SIGTERM else "SIGINT"
                raise _Interrupted(name, step, out)
    finally:
        bar.close()
        stop.restore()
        if metrics is not None:
            metrics.close()
        if writer is not None:
            writer.close()

    # the final model, loadable with AutoModelForMaskedLM
    write_pld_info()
    if main_proc:
        model.save_pretrained(str(out), safe_serialization=True)
        summary = {"arm": m.arm, "steps": step, "samples": samples, "train_time_s": train_time, "flops": flops,
                   "peak_lr": peak_lr, "horizon": horizon, **last_eval}
        if ctl is not None:
            summary["gamma"] = ctl.gamma
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    if world > 1:
        torch.distributed.barrier()
    return summary


class _NoState:
    def state_dict(self) -> dict:
        return {}


def _check_finite(loss: float, step: int, lr: float, out: Path) -> None:
    if not math.isfinite(loss):
        raise UserError(
            f"the loss became {loss} at step {step} (lr {lr:.3g}); training stopped, the last good "
            f"checkpoint in {str(out / 'checkpoints')!r} is intact -- lower optim.lr or enable clipping"
        )


class _Interrupted(Exception):
    def __init__(self, name: str, step: int, out: Path):
        super().__init__(f"{name} at step {step}: checkpoint saved; continue with --resume --out {out}")
        self.exit_code = 143 if name == "SIGTERM" else 130


def _num_blocks(model) -> int:
    return int(model.config.num_hidden_layers)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop lines logged after the checkpoint we resume from (they will be logged again)."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
    atomic_write_text(path, "".join(ln + "\n" for ln in keep))
