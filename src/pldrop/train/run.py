"""One pretraining run as an object that advances one optimizer step at a time.

    run = PretrainRun(cfg, out)
    run.setup(data)            # prepare data -> build model (+ PLD) -> build optimizer -> start or resume
    while not run.done:
        run.step()             # θ(t), lr(t) -> micro-batches: forward, backward -> clip -> AdamW -> log -> eval? -> save?
    summary = run.finish()     # final validation, save_pretrained, summary.json

``pldrop pretrain`` is that loop over one run (:func:`pldrop.train.loop.pretrain`); ``pldrop compare``
is the same loop over several runs in lockstep (:mod:`pldrop.train.lockstep`). Each run owns its
model, optimizer, data order, PLD gates and torch RNG stream, so interleaving runs in one process
changes nothing in any of them.

Under ``torchrun`` (RANK / WORLD_SIZE in the environment): DDP over gloo on CPU or nccl on GPU
(FSDP2 with ``fsdp``, the DeepSpeed engine with ``deepspeed``); data sharded by rank; only rank 0
writes files.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..models import build_model, loss_module, train_flops
from ..schedule import gamma_for_steps
from ..surgery import apply_pld
from .checkpoint import atomic_write_text, latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig, default_lr, dump_config
from .distributed import any_rank, dist_setup, max_over_ranks
from .evaluation import evaluate
from .optim import horizon_for, lr_at, lr_at_fraction, param_groups
from .rundir import recording
from .runfiles import (
    _get, _mark, _now, _read_json, _truncate_metrics, config_changes, finished_summary, finite_or_none,
)

HORIZON_WINDOW = 30  # time budgets: the horizon (a record, not the lr's clock) is re-estimated each step from the median of this many recent steps
IDENTITY_KEYS = ("model.arm", "model.preset", "model.config_file", "data.seq_len", "data.corpus",
                 "data.lowercase", "data.vocab_size", "seed")


class Interrupted(Exception):
    """SIGTERM / SIGINT: the run saved what it could; ``exit_code`` is 143 or 130."""

    def __init__(self, name: str, message: str):
        super().__init__(f"{name}: {message}")
        self.name = name
        self.exit_code = 143 if name == "SIGTERM" else 130


class Diverged(UserError):
    """The loss became NaN or infinite (the message says at which step and what was kept)."""


class _NoState:
    def state_dict(self) -> dict:
        return {}


class _Frozen:
    """Something with ``state_dict()`` returning a given dict (FSDP: the gathered full weights)."""

    def __init__(self, sd: dict):
        self._sd = sd

    def state_dict(self) -> dict:
        return self._sd


def _full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded weights of an FSDP2 model on the CPU (every rank must call it)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _full_train_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """The unsharded weights and optimizer state of an FSDP2 model, on rank 0's CPU (a collective:
    every rank calls it; the optimizer state is keyed by parameter name)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _restore_sharded(model: torch.nn.Module, optimizer: torch.optim.Optimizer):
    """A ``restore`` for :func:`load_checkpoint` under FSDP2: every rank reads the full state from the
    checkpoint and keeps its own shard of the weights and the optimizer state."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    def restore(weights: dict, opt_state: dict) -> None:
        set_state_dict(model, optimizer, model_state_dict=weights, optim_state_dict=opt_state,
                       options=StateDictOptions(full_state_dict=True, strict=True))

    return restore


# --- the run ----------------------------------------------------------------------------------


def train_size(meta: dict) -> dict[str, Any]:
    """What one pass over the training data is, from the packed data's ``meta.json``: ``train_seqs``
    (packed rows; an epoch is that many samples) and ``train_text_tokens`` (the documents' own
    tokens, without [CLS]/[SEP]/[PAD]); None where the meta does not say.

    >>> train_size({"seq_len": 64, "splits": {"train": {"n_seqs": 10, "n_tokens": 600}}})
    {'train_seqs': 10, 'train_text_tokens': 600}
    """
    train = (meta.get("splits") or {}).get("train") or {}
    return {"train_seqs": train.get("n_seqs"), "train_text_tokens": train.get("n_tokens")}


EVAL_POINTS = 10  # validations per run at least (where the budget has that many steps) unless eval_every is set


def auto_eval_every(steps: float, points: int = EVAL_POINTS) -> int:
    """The validation interval that gives a run of ``steps`` optimizer steps at least ``points``
    validations (every step when it has fewer steps than that).

    >>> auto_eval_every(1000), auto_eval_every(95), auto_eval_every(4), auto_eval_every(0.5)
    (100, 9, 1, 1)
    """
    return max(1, int(steps // points))


def decide_eval_every(runs: list["PretrainRun"], points: int = EVAL_POINTS) -> None:
    """Time budgets without eval_every: once every run in ``runs`` (the arms of a lockstep compare, or one
    run alone) has used 1/(2·points) of its time budget, every run gets the same interval, from the step
    count of the run that will take the fewest steps (extrapolated from its steps so far), so that run
    validates about ``points`` times and all validate at the same sample counts (the multiples of the
    interval past the furthest run's step at that moment). Until then none does (but at its end)."""
    pending = [r for r in runs if r.eval_every is None]
    fractions = [r.time_fraction() for r in pending]
    if not pending or min(fractions) < 1 / (2 * points):
        return
    k = auto_eval_every(min(r.step_count / f for r, f in zip(pending, fractions)), points)
    start = max(r.step_count for r in pending)  # no arm validates at a multiple of k another has passed
    for r in pending:
        r.eval_every, r.eval_start = k, start


def progress_bar(total: float, unit: str, desc: str, show: bool | None):
    """A tqdm bar in ``unit`` (``step``, ``sample``, or ``s``: training seconds, shown in minutes with one
    decimal), drawn only when ``show`` (None: when stderr is a terminal)."""
    from tqdm.auto import tqdm

    show = sys.stderr.isatty() if show is None else show
    if unit != "s":
        return tqdm(total=total, unit=unit, desc=desc, disable=not show, dynamic_ncols=True)
    return tqdm(total=total, unit_scale=1 / 60, desc=desc, disable=not show, dynamic_ncols=True,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} min of training "
                           "[{elapsed}<{remaining}{postfix}]")


class PretrainRun:
    """One arm of pretraining in a run folder, advanced by :meth:`step`.

    Args:
        cfg: the resolved configuration.
        out: the run folder (created by :meth:`start_or_resume`; must not exist unless ``resume``).
        resume: continue from the folder's latest checkpoint (a folder without one starts at step 0).
        progress: show a progress bar (None: when stderr is a terminal).
        allow_data_change: on resume, accept a corpus whose fingerprint changed (recorded).
        command: the command line, recorded in the run folder.
    """

    def __init__(self, cfg: TrainConfig, out: str | Path, *, resume: bool = False, progress: bool | None = None,
                 allow_data_change: bool = False, command: str | None = None):
        self.cfg, self.out, self.resume = cfg, Path(out), resume
        self.allow_data_change, self.command = allow_data_change, command
        self.rank, self.world, self.device = dist_setup()
        self.main = self.rank == 0
        self.show_progress = progress if progress is not None else os.isatty(2)
        self.step_count, self.samples, self.train_time, self.flops = 0, 0, 0.0, 0.0
        self.warmup_steps = 0  # time budgets: steps taken in the warm-up (the exp schedule decays from its end)
        self.last_eval: dict[str, float] = {}
        self.step_times: list[float] = []
        self.rng_state: torch.Tensor | None = None
        self.metrics_file = self.writer = self.bar = None
        self.eval_every: int | None = cfg.eval_every  # None: decided from the budget (start_or_resume, step)
        self.eval_start = 0  # validate at the multiples of eval_every above this step
        self.eval_group: list[PretrainRun] = [self]  # runs that validate at the same steps (lockstep: all arms)
        self.diverged: str | None = None  # lockstep: the message of a run that diverged (it stops, the others go on)
        self.data_change_flag = True  # the command takes --allow-data-change (compare does not: its messages say so)

    # -- phase 1: data ---------------------------------------------------------------------------

    def prepare_data(self, data=None) -> None:
        """Tokenizer, packed sequences (cached), fixed validation masks; ``data`` shares one between runs."""
        from ..data.batches import TrainBatches
        from ..data.dataset import prepare_data

        cfg, d = self.cfg, self.cfg.data
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if self.resume and d.tokenizer is not None and (self.out / "tokenizer.json").is_file():
            from ..data.tokenizer import load_tokenizer, tokenizer_fingerprint

            causal = cfg.model.causal
            if tokenizer_fingerprint(load_tokenizer(d.tokenizer, causal=causal)) != \
                    tokenizer_fingerprint(load_tokenizer(self.out, causal=causal)):
                raise UserError(f"--resume: {str(self.out)!r} was trained with another tokenizer than "
                                f"{d.tokenizer!r}; use another --out for a different tokenizer")
        if data is None:
            tokenizer_dir = str(self.out) if self.resume and (self.out / "tokenizer.json").is_file() else d.tokenizer
            # rank 0 tokenizes and caches first, the others then read the cache; a group with a long
            # timeout, as tokenizing a large corpus can outlast the 60 s that catches a dead rank
            prep = (torch.distributed.new_group(backend="gloo", timeout=datetime.timedelta(hours=2))
                    if self.world > 1 else None)
            if self.world > 1 and not self.main:
                torch.distributed.barrier(group=prep)
            data = prepare_data(d.corpus, seq_len=d.seq_len, vocab_size=d.vocab_size, lowercase=d.lowercase,
                                tokenizer_dir=tokenizer_dir, val_fraction=d.val_fraction, seed=cfg.seed,
                                cache_dir=d.cache_dir, text_field=d.text_field, text_column=d.text_column,
                                mlm_prob=d.mlm_prob, progress=self.show_progress, causal=cfg.model.causal)
            if self.world > 1 and self.main:
                torch.distributed.barrier(group=prep)
        if len(data.valid) == 0:
            raise UserError("the corpus gave no validation sequences; give more documents or raise data.val_fraction")
        self.data = data
        o = cfg.optim
        self.batches = TrainBatches(data.train, o.batch_size, seed=cfg.seed, rank=self.rank, world_size=self.world)
        self.global_batch = o.batch_size * o.grad_accum * self.world

    # -- phase 2: model and PLD ------------------------------------------------------------------

    def build_model(self) -> None:
        """The arm's HF model (Post-LN BERT or Pre-LN RoBERTa), PLD surgery, precision, compile, DDP/FSDP."""
        cfg, m, d = self.cfg, self.cfg.model, self.cfg.data
        if cfg.deepspeed:  # a DeepSpeed config's progressive_layer_drop block sets θ̄ and γ
            from ..integrations.deepspeed import from_deepspeed_config

            ds_pld = from_deepspeed_config(cfg.deepspeed, engine_uses_config=False)
            if ds_pld is not None:
                if not m.uses_pld:
                    raise UserError(f"the DeepSpeed config enables progressive_layer_drop, but arm {m.arm!r} has "
                                    "no PLD; use --arm pld (or postln-pld), or disable it in the config")
                if cfg.pld.schedule != "pld":
                    raise UserError(f"the DeepSpeed config's progressive_layer_drop block is the pld schedule, not "
                                    f"pld.schedule={cfg.pld.schedule}; disable the block (and set pld.theta_bar) to "
                                    "use another schedule")
                cfg.pld.theta_bar, cfg.pld.gamma = ds_pld["theta_bar"], ds_pld["gamma"]
        drop = {"hidden_dropout_prob": m.dropout, "attention_probs_dropout_prob": m.dropout}
        if m.causal:  # the start, end-of-document and padding tokens of the packed rows (doc EOS doc EOS ... PAD)
            from ..data.dataset import pad_id
            from ..data.tokenizer import end_token_id

            tok, eos = self.data.tokenizer, end_token_id(self.data.tokenizer)
            bos = tok.bos_token_id if tok.bos_token_id is not None else tok.cls_token_id
            drop.update(bos_token_id=bos if bos is not None else eos, eos_token_id=eos, pad_token_id=pad_id(tok))
        self.model = build_model(m.arm, len(self.data.tokenizer), m.preset, m.config_file, d.seq_len, cfg.seed,
                                 **drop).to(self.device)
        self.model.train()
        self.rng_state = torch.get_rng_state()  # this run's own stream from here on (dropout, ...)
        self.num_layers = int(self.model.config.num_hidden_layers)
        self.ctl = None
        if m.uses_pld:
            # the run's length (total_steps) and γ follow in set_horizon, once the budget is known
            self.ctl = apply_pld(self.model, theta_bar=cfg.pld.theta_bar, gamma=0.0, seed=cfg.seed, rule=cfg.pld.rule,
                                 rescale=cfg.pld.rescale, schedule=cfg.pld.schedule, cooldown=cfg.pld.cooldown)
        self.bf16 = self._resolve_precision()
        if m.compile:
            from ..compile import compile_blocks

            compile_blocks(self.model)
        self.loss_module = loss_module(self.model, m.causal)
        if cfg.fsdp:  # FSDP2: one shard group per block and the root; a block dropped on every rank costs no comms
            if self.world < 2:
                raise UserError("--fsdp shards the model over processes: launch with torchrun --nproc_per_node=N (N >= 2)")
            # the root is the loss module: its forward (not the HF model's) runs the embeddings and the head
            if self.ctl is not None:
                from ..integrations.fsdp import shard_with_pld

                shard_with_pld(self.loss_module, self.ctl)
            else:
                from torch.distributed.fsdp import fully_shard

                base = self.model.base_model
                for block in (base.layers if m.causal else base.encoder.layer):
                    fully_shard(block)
                fully_shard(self.loss_module)
        elif self.world > 1 and not cfg.deepspeed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            # a skipped block's parameters get no gradient: DDP must look for unused parameters
            self.loss_module = DDP(self.loss_module, find_unused_parameters=self.ctl is not None)

    def _resolve_precision(self) -> bool:
        o = self.cfg.optim
        if o.precision == "fp32":
            return False
        try:
            from ..precision import resolve_precision
        except ImportError:  # pragma: no cover - precision module absent: bf16 only when asked for
            return o.precision == "bf16"
        return resolve_precision(o.precision, self.device, int(self.model.config.hidden_size)) == "bf16"

    # -- phase 3: optimizer ------------------------------------------------------------------------

    def build_optimizer(self) -> None:
        """AdamW (decoupled weight decay, none on biases and norms); DeepSpeed wraps it when asked."""
        cfg, o, m = self.cfg, self.cfg.optim, self.cfg.model
        self.peak_lr = o.lr if o.lr is not None else default_lr(m.arm, o.paper_lrs)
        self.optimizer = torch.optim.AdamW(param_groups(self.model, o.weight_decay), lr=self.peak_lr,
                                           betas=(o.beta1, o.beta2), eps=o.eps)
        self.engine = None
        if cfg.deepspeed:  # DeepSpeed wraps the loss module and the optimizer (ZeRO), clips, and reduces
            from ..integrations.deepspeed import engine_for_pretraining

            self.engine = self.loss_module = engine_for_pretraining(
                self.loss_module, self.optimizer, cfg.deepspeed, micro_batch=o.batch_size, grad_accum=o.grad_accum,
                world=self.world, clip_grad=o.clip_grad)
            self.optimizer = self.engine.optimizer

    # -- phase 4: start or resume --------------------------------------------------------------

    def start_or_resume(self) -> None:
        """A new run writes its folder; a resumed one loads its checkpoint and says what changed."""
        b = self.cfg.budget
        self.horizon_estimated = horizon_for(b, self.global_batch) is None  # a time budget
        self.pld_info = {"enabled": self.ctl is not None, "arm": self.cfg.model.arm,
                         "theta_bar": self.cfg.pld.theta_bar, "gamma": None, "rule": self.cfg.pld.rule,
                         "rescale": self.cfg.pld.rescale, "fixed": self.cfg.pld.fixed,
                         "schedule": self.cfg.pld.schedule, "cooldown": self.cfg.pld.cooldown,
                         "clock": "fraction of the time budget" if self.horizon_estimated else "steps", "precision":
                         "bf16" if self.bf16 else "fp32", "corpus_fingerprint": self.data.meta.get("corpus_fingerprint"),
                         "paper": "https://arxiv.org/abs/2010.13369", "resumes": [], **train_size(self.data.meta)}
        if self.eval_every is None and (b.max_steps or b.max_samples):
            self.eval_every = auto_eval_every(b.max_steps or math.ceil(b.max_samples / self.global_batch))
        if self.resume:
            self._resume()
        elif self.main:
            try:
                self.out.mkdir(parents=True)
            except FileExistsError:
                if any(p.name != ".pldrop.lock" for p in self.out.iterdir()):  # empty but for our lock
                    raise UserError(f"run folder {str(self.out)!r} was created by another process meanwhile") from None
            _mark(self.out, self.command)
            atomic_write_text(self.out / "config.yaml", dump_config(self.cfg))
            with recording(self.out):
                self.data.tokenizer.save_pretrained(str(self.out))
            atomic_write_text(self.out / "CREDITS.md", self.data.credits or "")
        self.set_horizon(horizon_for(b, self.global_batch) or getattr(self, "horizon", None) or 10_000)
        self.write_pld_info()
        if self.main:
            from torch.utils.tensorboard import SummaryWriter

            if self.resume:
                _truncate_metrics(self.out / "metrics.jsonl", self.step_count)
            with recording(self.out / "tb", append=True) as self.event_files:  # appended to from here on
                self.writer = SummaryWriter(str(self.out / "tb"))
            self.metrics_file = open(self.out / "metrics.jsonl", "a", encoding="utf-8")
            self.record_logs()
            total, unit = self._bar_total()
            self.bar = progress_bar(total, unit, self.cfg.model.arm, self.show_progress)
            self.bar.update(min(total, self._bar_value(unit)))

    def check_resumable(self) -> tuple[dict[str, list], dict]:
        """``--resume``: the folder must hold this run (``IDENTITY_KEYS``) on the same corpus (unless
        ``allow_data_change``); returns what changed and the saved ``pldrop.json``. Reads only."""
        import yaml

        info = _read_json(self.out / "pldrop.json") if (self.out / "pldrop.json").is_file() else {}
        saved_fp, now_fp = info.get("corpus_fingerprint"), self.data.meta.get("corpus_fingerprint")
        change = {}
        if saved_fp and now_fp and saved_fp != now_fp:
            if not self.allow_data_change:
                how = ("pass --allow-data-change to continue on the new text" if self.data_change_flag
                       else "put the old text back, or train the new one in another --out")
                raise UserError(f"--resume: the corpus changed since {str(self.out)!r} was trained (fingerprint "
                                f"{saved_fp[:12]} -> {now_fp[:12]}); {how}")
            change["corpus_fingerprint"] = [saved_fp, now_fp]
        try:
            saved_cfg = yaml.safe_load((self.out / "config.yaml").read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as e:
            raise UserError(f"--resume: {str(self.out / 'config.yaml')!r} is damaged ({str(e).splitlines()[0]})") from None
        for key in IDENTITY_KEYS:
            if isinstance(saved_cfg, dict) and _get(saved_cfg, key) != _get(self.cfg.to_dict(), key):
                raise UserError(f"--resume: {str(self.out)!r} was trained with {key}={_get(saved_cfg, key)!r}, not "
                                f"{_get(self.cfg.to_dict(), key)!r}; use another --out for a different model or data")
        change.update(config_changes(saved_cfg if isinstance(saved_cfg, dict) else {}, self.cfg.to_dict()))
        return change, info

    def spent_before(self) -> dict[str, Any] | None:
        """``--resume``: the saved summary if this run finished with its budget (a new one at or below
        the steps done) already spent, else None. Then there is nothing to train, and
        :meth:`start_or_resume` would only rewrite the folder: callers check :meth:`check_resumable`
        and stop."""
        return finished_summary(self.out, self.cfg.budget) if self.resume else None

    def _resume(self) -> None:
        ckpt = latest_checkpoint(self.out / "checkpoints")
        if self.engine is not None and ckpt is not None:
            raise UserError("--resume of a --deepspeed run is not supported yet (its checkpoints hold the weights, not "
                            "the engine's optimizer state); start a new run")
        change, info = self.check_resumable()
        self.pld_info["resumes"] = list(info.get("resumes", []))
        if ckpt is not None:
            with self.own_rng():
                restore = _restore_sharded(self.model, self.optimizer) if self.cfg.fsdp else None
                state = load_checkpoint(ckpt, self.model, self.optimizer, restore)  # FSDP: every rank reads it
                self.rng_state = torch.get_rng_state()
            self.step_count, self.samples = int(state["step"]), int(state["samples"])
            self.train_time, self.flops = float(state["train_time"]), float(state["flops"])
            self.horizon = int(state["horizon"])
            self.step_times = list(state.get("step_times", []))
            self.warmup_steps = int(state.get("warmup_steps", 0))
            self.last_eval = dict(state.get("last_eval") or {})
            if self.eval_every is None and state.get("eval_every"):  # a time budget's interval, decided before
                self.eval_every, self.eval_start = int(state["eval_every"]), int(state.get("eval_start", 0))
            if self.ctl is not None and state.get("pld"):
                self.ctl.load_state_dict(state["pld"])
                # the resolved config (a change is recorded below) says which schedule the next steps follow
                self.ctl.schedule, self.ctl.cooldown = self.cfg.pld.schedule, self.cfg.pld.cooldown
        else:
            print(f"pldrop: {str(self.out)!r} holds no checkpoint yet (interrupted before its first save): "
                  "starting it again from step 0", file=sys.stderr)
        new_h = horizon_for(self.cfg.budget, self.global_batch)
        if ckpt is not None and new_h is not None and new_h != self.horizon:
            print(f"pldrop: resuming at step {self.step_count} with a horizon of {new_h} steps (was {self.horizon}): "
                  f"the lr decay and θ(t) follow the new horizon from here on", file=sys.stderr)
            change["horizon_steps"] = [self.horizon, new_h]
        if change and self.main:
            self.pld_info["resumes"].append({"at_step": self.step_count, "time": _now(), "changed": change})
            atomic_write_text(self.out / "config.yaml", dump_config(self.cfg))

    def setup(self, data=None) -> "PretrainRun":
        """All phases before the first step."""
        self.prepare_data(data)
        self.build_model()
        self.build_optimizer()
        self.start_or_resume()
        return self

    # -- the step --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def own_rng(self):
        """Run with this run's torch RNG stream, so runs interleaved in one process stay independent."""
        outer = torch.get_rng_state()
        if self.rng_state is not None:
            torch.set_rng_state(self.rng_state)
        try:
            yield
        finally:
            self.rng_state = torch.get_rng_state()
            torch.set_rng_state(outer)

    def set_horizon(self, h: int) -> None:
        self.horizon = max(1, int(h))
        if self.ctl is not None:
            self.ctl.gamma = self.cfg.pld.gamma if self.cfg.pld.gamma is not None else gamma_for_steps(self.horizon)
            self.ctl.total_steps = self.horizon  # the step clock's run length (cooldown, constant, anneal)

    def budget_fraction(self) -> float | None:
        """Under a time budget (without budget.horizon_steps): training time / budget, the clock of the
        learning rate and θ; it only grows, so neither rises again when the load on the machine changes.
        None for a step or sample budget (their clock is the step). Under torchrun every rank takes the
        slowest rank's training time, so all set the same lr and θ (and draw the same gates)."""
        if not self.horizon_estimated:
            return None
        return self.time_fraction()

    def time_fraction(self) -> float:
        """Training time / the time budget (the slowest rank's under torchrun), at most 1."""
        return min(1.0, max_over_ranks(self.train_time, self.world, self.device) / (self.cfg.budget.max_minutes * 60))

    @property
    def done(self) -> bool:
        b = self.cfg.budget
        if self.diverged is not None:
            return True
        if b.max_steps is not None:
            return self.step_count >= b.max_steps
        if b.max_samples is not None:
            return self.samples >= b.max_samples
        return any_rank(self.train_time >= b.max_minutes * 60, self.world, self.device)

    def step(self) -> dict[str, Any]:
        """One optimizer step (all micro-batches), then logging, validation and a checkpoint when due."""
        with self.own_rng():
            record = self._train_step()
        if self.eval_every is None:  # a time budget: the interval is set once 1/20 of it is used
            decide_eval_every(self.eval_group)
        due = self.eval_every is not None and self.step_count % self.eval_every == 0 and self.step_count > self.eval_start
        if due or self.done:
            record.update(self.evaluate())
            if self.done:  # the word-order probe, once, on the final model
                record.update(self.evaluate(shuffled=True))
        self._log(record)
        if self.done or (self.cfg.save_every and self.step_count % self.cfg.save_every == 0):
            self.save()
        return record

    def _train_step(self) -> dict[str, Any]:
        cfg, o, d = self.cfg, self.cfg.optim, self.cfg.data
        ctl, step = self.ctl, self.step_count
        t0 = time.perf_counter()
        frac = self.budget_fraction()  # None: the step is the clock
        if ctl is not None:  # θ for this step; an explicit γ is per step, so θ(t) then follows the step
            ctl.step(step, progress=frac if cfg.pld.gamma is None else None)
            if cfg.pld.fixed:  # ablation: θ held at θ̄ from the start
                ctl.hold(cfg.pld.theta_bar)
        if frac is None:
            lr = lr_at(step, self.peak_lr, self.horizon, o.schedule, o.warmup_ratio, o.exp_decay_rate,
                       o.exp_decay_every)
        else:
            lr = lr_at_fraction(frac, self.peak_lr, o.schedule, o.warmup_ratio, o.exp_decay_rate, o.exp_decay_every,
                                step - self.warmup_steps)
            self.warmup_steps += int(frac < o.warmup_ratio)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        loss_sum, correct, masked, blocks_run = 0.0, 0, 0, 0.0
        for micro in range(o.grad_accum):
            batch = self.batches.batch(step * o.grad_accum + micro)
            batch = {k: v.to(self.device) for k, v in batch.items()}  # (B, T) each
            with torch.autocast(self.device.type, torch.bfloat16, enabled=self.bf16):
                loss, c, n = self.loss_module(batch["input_ids"], batch["attention_mask"], batch["labels"])
            loss_sum += loss.item() / o.grad_accum
            if self.engine is not None:  # DeepSpeed scales by 1/accumulation and steps at the boundary
                self.engine.backward(loss)
                if micro == o.grad_accum - 1:
                    self._check_finite(loss_sum, lr)
                    if ctl is not None:
                        from ..integrations.deepspeed import release_skipped_grads as ds_release

                        ds_release(ctl, self.engine)
                self.engine.step()
            else:
                (loss / o.grad_accum).backward()
            correct, masked = correct + int(c), masked + n
            kept = sum(ctl.last_kept) if ctl is not None and ctl.last_kept is not None else self.num_layers
            blocks_run += kept / o.grad_accum
            self.flops += train_flops(self.model.config, batch["input_ids"].shape[0], d.seq_len, n, kept) * self.world
        if self.engine is None:
            self._check_finite(loss_sum, lr)
            if ctl is not None:
                ctl.release_skipped_grads()  # DDP fills zeros for skipped blocks: no update for them
            if o.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), o.clip_grad)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.step_count += 1
        self.samples += self.global_batch
        dt = time.perf_counter() - t0
        self.train_time += dt
        self.step_times.append(dt)
        # time budgets: horizon = steps so far + remaining time / recent step time, a record of the steps
        # the run will take (the lr and θ follow the fraction of the budget used, not this estimate);
        # the first step (allocator and thread-pool warm-up) is left out of the estimate
        if self.horizon_estimated:
            recent = self.step_times[1:][-HORIZON_WINDOW:] or self.step_times
            left = max(0.0, self.cfg.budget.max_minutes * 60 - self.train_time)
            self.set_horizon(self.step_count + round(left / statistics.median(recent)) + 1)
        record = {"step": self.step_count, "loss": loss_sum, "lr": lr, "samples": self.samples, "step_time": dt,
                  "samples_per_s": self.global_batch / dt, "wall": self.train_time, "flops": self.flops,
                  "next_token_accuracy" if self.cfg.model.causal else "mlm_accuracy": correct / max(1, masked),
                  "blocks_run": blocks_run,
                  "theta": ctl.theta if ctl is not None else 1.0, "horizon": self.horizon}
        if frac is not None:
            record["budget_fraction"] = frac  # where this step started: the lr's and θ's clock
        if ctl is not None:
            record["expected_kept"] = ctl.expected_kept
        return record

    def _check_finite(self, loss: float, lr: float) -> None:
        if math.isfinite(loss):
            return
        ckpt = latest_checkpoint(self.out / "checkpoints") if self.main else None
        where = (f"the last good checkpoint ({ckpt.name}) is intact and --resume continues from it"
                 if ckpt is not None else "no checkpoint was written yet")
        raise Diverged(f"the loss became {loss} at step {self.step_count + 1} (lr {lr:.3g}); training stopped, "
                        f"{where} -- lower optim.lr or enable clipping (optim.clip_grad)")

    def evaluate(self, shuffled: bool = False) -> dict[str, float]:
        """Validation on rank 0 (the others wait; under FSDP every rank runs it, as a forward gathers).

        ``shuffled``: the word-order probe (:func:`~pldrop.train.evaluation.shuffle_order`) instead."""
        result: dict[str, float] = {}
        if self.main or self.cfg.fsdp:
            result = evaluate(self.model, self.data.valid, self.cfg.optim.batch_size, self.cfg.data.val_max_seqs,
                              self.bf16, self.device, loss_fn=self.loss_module if self.cfg.fsdp else None,
                              shuffled=shuffled, causal=self.cfg.model.causal)
            self.last_eval = {**(self.last_eval if shuffled else {}), **result}
        if self.world > 1:
            torch.distributed.barrier()
        return dict(result) if self.main else {}

    def _log(self, record: dict[str, Any]) -> None:
        if not self.main:
            return
        if self.step_count % self.cfg.log_every == 0 or "val_loss" in record or self.done:
            self.metrics_file.write(json.dumps(finite_or_none(record)) + "\n")
            self.metrics_file.flush()
            for k, v in record.items():
                if isinstance(v, (int, float)) and math.isfinite(v) and k != "step":
                    self.writer.add_scalar(f"train/{k}" if not k.startswith("val_") else f"valid/{k[4:]}", v,
                                           self.step_count)
        if self.bar is not None:
            extra = {"val": f"{self.last_eval['val_loss']:.3f}"} if self.last_eval else {}
            self.bar.set_postfix(loss=f"{record['loss']:.3f}", theta=f"{record['theta']:.3f}", **extra, refresh=False)
            _, unit = self._bar_total()
            step = {"step": 1, "sample": self.global_batch, "s": record["step_time"]}[unit]
            self.bar.update(min(step, self.bar.total - self.bar.n))  # the budget's last step overshoots it

    def _bar_total(self) -> tuple[float, str]:
        b = self.cfg.budget
        if b.max_steps:
            return b.max_steps, "step"
        if b.max_samples:
            return b.max_samples, "sample"
        return b.max_minutes * 60, "s"

    def _bar_value(self, unit: str) -> float:
        return {"step": self.step_count, "sample": self.samples, "s": self.train_time}[unit]

    # -- saving ----------------------------------------------------------------------------------

    def save(self) -> None:
        """An atomic checkpoint (rank 0); under DeepSpeed only the weights (its state holds Python objects)."""
        model, optimizer = self.model, self.optimizer
        if self.cfg.fsdp:  # gather full weights and optimizer state (a collective); rank 0 writes them
            weights, opt_state = _full_train_state(self.model, self.optimizer)
            model, optimizer = _Frozen(weights), _Frozen(opt_state)
        if not self.main:
            return
        state = {"step": self.step_count, "samples": self.samples, "train_time": self.train_time,
                 "flops": self.flops, "horizon": self.horizon, "arm": self.cfg.model.arm,
                 "pld": self.ctl.state_dict() if self.ctl is not None else None,
                 "step_times": self.step_times[-HORIZON_WINDOW - 1:], "last_eval": finite_or_none(self.last_eval),
                 "warmup_steps": self.warmup_steps, "eval_every": self.eval_every,
                 "eval_start": self.eval_start}
        from .rundir import collect_stale_tmp

        root = self.out / "checkpoints"
        collect_stale_tmp(root)  # half-written checkpoints of killed processes
        try:
            with self.own_rng():  # the checkpoint stores this run's RNG stream
                weights_only = self.engine is not None  # DeepSpeed's state holds Python objects: not resumable (yet)
                save_checkpoint(root, model, _NoState() if weights_only else optimizer, state)
        except OSError as e:
            collect_stale_tmp(root, pattern=re.compile(r"\.tmp-(\d+)"), include_self=True)
            last = latest_checkpoint(root)
            kept = f"the last good checkpoint ({last.name}) is intact" if last else "no earlier checkpoint exists"
            raise UserError(f"cannot write a checkpoint in {str(root)!r} ({e.strerror or e}); {kept} -- free some "
                            "space and continue with --resume") from None
        self.record_logs()

    def record_logs(self) -> None:
        """Record metrics.jsonl and the TensorBoard events as written so far (files pldrop appends to:
        at a checkpoint and at the end, not every step, as recording reads them)."""
        if self.metrics_file is None:
            return
        from .rundir import record

        self.metrics_file.flush()
        record(self.out / "metrics.jsonl", append=True)
        if self.writer is not None:
            self.writer.flush()
            for event_file in getattr(self, "event_files", ()):
                if event_file.is_file():
                    record(event_file, append=True)

    def write_pld_info(self) -> None:
        if self.main:
            self.pld_info["gamma"] = self.ctl.gamma if self.ctl is not None else None
            self.pld_info["horizon_steps"] = self.horizon
            atomic_write_text(self.out / "pldrop.json", json.dumps(self.pld_info, indent=1))

    def interrupt(self, name: str) -> Interrupted:
        """Save a checkpoint (if a step was taken) and say how to continue."""
        if self.step_count > 0:
            self.save()
            msg = f"stopped at step {self.step_count}: checkpoint saved; continue with --resume --out {self.out}"
        else:
            msg = f"stopped before the first step; --resume --out {self.out} starts it from step 0"
        return Interrupted(name, msg)

    def finish(self) -> dict[str, Any]:
        """Final model (loadable with AutoModelForMaskedLM) and ``summary.json``; returns the summary."""
        self.close()
        self.write_pld_info()
        summary: dict[str, Any] = {}
        full = {}
        if self.cfg.fsdp:  # a collective: every rank; tied copies (the MLM decoder) left out as HF does
            sd = _full_state_dict(self.model)
            tied = getattr(self.model, "all_tied_weights_keys", None) or {}
            full = {"state_dict": {k: v for k, v in sd.items() if k not in tied}}
        if self.main:
            from transformers.utils import logging as hf_logging

            if not self.show_progress:
                hf_logging.disable_progress_bar()
            self.save_model(full)
            summary = {"arm": self.cfg.model.arm, "steps": self.step_count, "samples": self.samples,
                       "train_time_s": self.train_time, "flops": self.flops, "peak_lr": self.peak_lr,
                       "horizon": self.horizon, "precision": "bf16" if self.bf16 else "fp32", **self.last_eval}
            if self.ctl is not None:
                summary["gamma"] = self.ctl.gamma
                summary["schedule"] = self.ctl.schedule
            if self.diverged is not None:  # lockstep: it stopped short of its budget, and the summary says why
                summary["diverged"] = self.diverged
            atomic_write_text(self.out / "summary.json", json.dumps(finite_or_none(summary), indent=1, allow_nan=False))
        if self.world > 1:
            torch.distributed.barrier()
        return summary

    def save_model(self, full: dict) -> None:
        """The final model (``save_pretrained``); a failed write (a full disk: transformers and safetensors
        raise SafetensorError or RuntimeError, not OSError) removes the torn weights file and ends in one
        line: the checkpoint of the last step is intact, so ``--resume`` finishes the run."""
        from safetensors import SafetensorError

        from .checkpoint import write_error

        try:
            with recording(self.out):
                self.model.save_pretrained(str(self.out), safe_serialization=True, **full)
        except (OSError, RuntimeError, SafetensorError) as e:
            err = e if isinstance(e, OSError) else write_error(e, self.out)
            for torn in self.out.iterdir():  # this save's weight files, half written
                if re.fullmatch(r"model(-\d+-of-\d+)?\.safetensors(\.index\.json)?", torn.name):
                    torn.unlink(missing_ok=True)
            last = latest_checkpoint(self.out / "checkpoints")
            kept = (f"the checkpoint of step {self.step_count} ({last.name}) is intact -- free some space and "
                    f"finish the run with --resume --out {self.out}") if last else "no checkpoint exists"
            raise UserError(f"cannot write the final model in {str(self.out)!r} ({err.strerror or err}); "
                            f"{kept}") from None

    def close(self) -> None:
        logs = self.metrics_file is not None
        for name in ("bar", "metrics_file", "writer"):
            obj = getattr(self, name)
            if obj is not None:
                obj.close()
                setattr(self, name, None)
        if logs:  # closed: from here on any change to them is someone else's (a resume records them again)
            from .rundir import record

            for path in [self.out / "metrics.jsonl", *getattr(self, "event_files", ())]:
                if path.is_file():
                    record(path)
