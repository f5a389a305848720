"""The pretraining runs a benchmark asks for: one :class:`RunSpec` each, run once, reused after.

A :class:`Runner` prepares the data once (one tokenizer, one packed corpus, one validation set
with fixed masks, split with seed 0) and trains every spec on it, so arms and seeds differ only
in what the spec says (arm, learning rate, PLD settings, budget, seed: initialisation, data
order, dropout and gates). Each run lives in ``<root>/<spec.key>/`` -- a ``pldrop pretrain`` run
folder -- and a finished one (``summary.json``, same resolved config) is reused, so an
interrupted benchmark continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..arms import DROPPING_MODELS, label

PROTOCOL_KEYS = ("model.arm", "optim.lr", "optim.paper_lrs", "pld", "budget", "seed")  # set per run, not by overrides


@dataclass(frozen=True)
class RunSpec:
    """One pretraining run of a benchmark.

    Args:
        arm: ``baseline`` (Post-LN), ``preln``, ``pld`` (Pre-LN + PLD) or ``postln-pld``.
        lr: peak learning rate.
        seed: initialisation, data order, dropout and PLD gates (the data split is shared).
        theta_bar, rule, fixed: PLD settings (ignored by arms without PLD).
        max_steps, max_minutes, max_samples: the budget, exactly one.
        eval_every: validation cadence for this run (None: the base config's); shorter runs get a
            proportionally shorter one, so every run is validated about as often.
    """

    arm: str
    lr: float
    seed: int = 0
    theta_bar: float = 0.5
    rule: str = "linear"
    fixed: bool = False
    max_steps: int | None = None
    max_minutes: float | None = None
    max_samples: int | None = None
    eval_every: int | None = None

    def __post_init__(self):
        if sum(x is not None for x in (self.max_steps, self.max_minutes, self.max_samples)) != 1:
            raise ValueError(f"{self}: give exactly one budget")

    @property
    def uses_pld(self) -> bool:
        return self.arm in DROPPING_MODELS

    @property
    def key(self) -> str:
        """The run folder's name, e.g. ``pld_lr0.001_tb0.5-linear_min2_s0``."""
        parts = [self.arm, f"lr{self.lr:g}"]
        if self.uses_pld:
            parts.append(f"tb{self.theta_bar:g}-{self.rule}" + ("-fixed" if self.fixed else ""))
        parts += [self.budget_tag] + ([f"ev{self.eval_every}"] if self.eval_every is not None else [])
        return "_".join(parts + [f"s{self.seed}"])

    @property
    def budget_tag(self) -> str:
        if self.max_steps is not None:
            return f"steps{self.max_steps}"
        if self.max_samples is not None:
            return f"samples{self.max_samples}"
        return f"min{self.max_minutes:.4g}"

    def describe(self) -> str:
        """``Pre-LN + PLD, lr 0.001, θ̄=0.5 linear, 2 min, seed 0``."""
        pld = f", θ̄={self.theta_bar:g} {self.rule}{' fixed' if self.fixed else ''}" if self.uses_pld else ""
        budget = (f"{self.max_steps} steps" if self.max_steps is not None else f"{self.max_samples} samples"
                  if self.max_samples is not None else f"{self.max_minutes:.4g} min")
        return f"{label(self.arm)}, lr {self.lr:g}{pld}, {budget}, seed {self.seed}"

    def apply(self, cfg: dict[str, Any]) -> dict[str, Any]:
        """The resolved config dict ``cfg`` with this run's arm, rate, PLD, budget and seed."""
        cfg = json.loads(json.dumps(cfg))  # a deep copy
        cfg["model"]["arm"] = self.arm
        cfg["optim"].update(lr=self.lr, paper_lrs=False)
        cfg["pld"].update(theta_bar=self.theta_bar, rule=self.rule, fixed=self.fixed)
        cfg["budget"].update(max_steps=self.max_steps, max_minutes=self.max_minutes, max_samples=self.max_samples)
        cfg["seed"] = self.seed
        if self.eval_every is not None:
            cfg["eval_every"] = self.eval_every
        return cfg


def spec_from_dict(d: dict[str, Any]) -> RunSpec:
    return RunSpec(**{f.name: d[f.name] for f in dataclasses.fields(RunSpec) if f.name in d})


class Runner:
    """Trains :class:`RunSpec` s on one shared prepared corpus, each into ``root/<key>``.

    Args:
        root: where the run folders go.
        base: the resolved config every run starts from (a ``TrainConfig``); its data section
            decides the corpus and tokenizer.
        progress: progress bars (``None``: when stderr is a terminal).
        log: where one-line notes go.
    """

    def __init__(self, root: Path, base, progress: bool | None = None, log=print):
        self.root = Path(root)
        self.base = base.to_dict()
        self.progress = progress
        self.log = log
        self._data = None

    def config(self, spec: RunSpec):
        from ..train.config import load_config

        return load_config(base=spec.apply(self.base))

    @property
    def data(self):
        """The prepared corpus (tokenizer, packed train and validation sets), made on first use."""
        if self._data is None:
            from ..data.dataset import prepare_data

            d = self.base["data"]
            self._data = prepare_data(d["corpus"], seq_len=d["seq_len"], vocab_size=d["vocab_size"],
                                      lowercase=d["lowercase"], tokenizer_dir=d["tokenizer"],
                                      val_fraction=d["val_fraction"], seed=0, cache_dir=d["cache_dir"],
                                      text_field=d["text_field"], text_column=d["text_column"],
                                      mlm_prob=d["mlm_prob"], progress=self.progress)
        return self._data

    def folder(self, spec: RunSpec) -> Path:
        return self.root / spec.key

    def _reusable(self, spec: RunSpec, cfg, need_weights: bool) -> bool:
        import yaml

        folder = self.folder(spec)
        done = (folder / "summary.json").is_file() or (folder / "diverged.json").is_file()
        if not done or not (folder / "config.yaml").is_file():
            return False
        if yaml.safe_load((folder / "config.yaml").read_text()) != cfg.to_dict():
            self.log(f"{spec.key}: settings changed since it ran; running it again")
            return False
        if need_weights and (folder / "summary.json").is_file() and not (folder / "model.safetensors").is_file():
            self.log(f"{spec.key}: its weights were pruned and are needed; running it again")
            return False
        return True

    def run(self, spec: RunSpec, need_weights: bool = False) -> dict[str, Any]:
        """Train ``spec`` (or reuse its finished folder); returns ``{"key", "spec", "status", ...}``.

        ``status`` is ``"done"`` or ``"diverged"`` (the loss became NaN/inf; ``error`` says where).
        """
        from ..errors import UserError
        from ..train.loop import pretrain

        cfg = self.config(spec)
        folder = self.folder(spec)
        if self._reusable(spec, cfg, need_weights):
            self.log(f"{spec.key}: finished earlier, reused")
        else:
            if folder.exists():
                shutil.rmtree(folder)
            self.log(f"== {spec.describe()}")
            try:
                pretrain(cfg, folder, data=self.data, progress=self.progress)
            except UserError as e:
                if not str(e).startswith("the loss became"):
                    raise
                from ..train.checkpoint import atomic_write_text

                atomic_write_text(folder / "diverged.json", json.dumps({"error": str(e)}))
                self.log(f"{spec.key}: diverged ({e})")
            for sub in ("checkpoints", "tb"):  # nothing resumes mid-run here: keep the folder small
                shutil.rmtree(folder / sub, ignore_errors=True)
        return self._result(spec)

    def _result(self, spec: RunSpec) -> dict[str, Any]:
        folder = self.folder(spec)
        result = {"key": spec.key, "spec": dataclasses.asdict(spec), "describe": spec.describe()}
        if (folder / "diverged.json").is_file():
            result.update(status="diverged", error=json.loads((folder / "diverged.json").read_text())["error"])
        else:
            result["status"] = "done"
        return result

    def run_group(self, specs: list[RunSpec], need_weights: bool = False) -> list[dict[str, Any]]:
        """Train ``specs`` together in lockstep (one process, one optimizer step at a time, the run with
        the least training time first; see :mod:`pldrop.train.lockstep`), reusing finished ones.

        Load on the machine that comes and goes then hits every run of the group alike, and with a
        time budget every run gets the same training time. Returns :meth:`run`'s result per spec.
        """
        from ..train.lockstep import train_lockstep
        from ..train.loop import StopSignal
        from ..train.run import Interrupted, PretrainRun

        runs: dict[str, PretrainRun] = {}
        stop = StopSignal(immediate=False)
        try:
            for spec in specs:
                cfg = self.config(spec)
                if spec.key in runs or self._reusable(spec, cfg, need_weights):
                    continue
                folder = self.folder(spec)
                if folder.exists():
                    shutil.rmtree(folder)
                runs[spec.key] = PretrainRun(cfg, folder, progress=False).setup(self.data)
            if runs:
                self.log(f"== lockstep, {len(runs)} runs: " + "; ".join(s.describe() for s in specs if s.key in runs))
                train_lockstep(runs, should_stop=lambda: stop.signal is not None)
                if stop.signal is not None:
                    raise Interrupted(stop.name, "unfinished runs of this group start again on --resume")
                for key, run in runs.items():
                    if run.diverged is not None:
                        run.close()
                        from ..train.checkpoint import atomic_write_text

                        atomic_write_text(run.out / "diverged.json", json.dumps({"error": run.diverged}))
                        self.log(f"{key}: diverged ({run.diverged})")
                    else:
                        run.finish()
                    for sub in ("checkpoints", "tb"):  # nothing resumes mid-run here: keep the folder small
                        shutil.rmtree(run.out / sub, ignore_errors=True)
        finally:
            stop.restore()
            for run in runs.values():
                run.close()
        for spec in specs:
            if spec.key not in runs:
                self.log(f"{spec.key}: finished earlier, reused")
        return [self._result(spec) for spec in specs]

    def prune_weights(self) -> None:
        """Delete the runs' model weights (the report needs only their metrics)."""
        for p in self.root.glob("*/model.safetensors"):
            p.unlink()
