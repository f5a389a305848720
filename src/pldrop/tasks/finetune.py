"""Fine-tune a pretrained model on one task, once per seed: the loop, read top to bottom.

    load task -> open model folder -> tokenize once -> for each seed:
        fresh head (seeded) -> AdamW, linear warm-up and decay -> for each step:
            forward, backward -> clip -> step -> dev evaluation? keep the best state
        -> reload the best state -> score the test splits -> save the model?
    -> results.json, predictions_<split>.tsv (see :mod:`pldrop.tasks.results`)

Without a learning rate (``FinetuneConfig.lr = None``, the default) every seed runs once per rate
of a small grid chosen by the model's width (:mod:`pldrop.tasks.lr`) and the rate with the best
mean dev score is kept, as BERT and the PLD paper did; every rate's dev scores and predictions
are written too. That selection makes the kept dev score doubly optimistic; the recipes' test
split, scored once per rate with the best dev checkpoint, is the honest number.

The recipe is BERT's (Devlin et al. 2019, appendix A.3; https://arxiv.org/abs/1810.04805):
AdamW, linear warm-up over the first 10 % of steps then linear decay to 0, gradient clipping at
1.0, the dev score measured after every epoch (or every ``eval_every`` steps), and the best dev
checkpoint kept. The best checkpoint is chosen by :func:`pldrop.tasks.task_score` (GLUE's
rule), so dev scores are, as in every GLUE dev table, an optimistic estimate; the offline
recipes' held-out test split is scored with that checkpoint and is the honest number.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pldrop.errors import UserError
from pldrop.tasks.base import Example, TaskData
from pldrop.tasks.metrics import compute_metrics, evaluate_splits, task_score


@dataclass
class FinetuneConfig:
    """Hyperparameters of a fine-tuning run; the defaults are BERT's GLUE recipe.

    Args:
        lr: peak learning rate of AdamW; a tuple = a grid of your own; ``None`` (default) =
            the grid :func:`pldrop.tasks.lr.default_lrs` of the model's width. With a grid
            every seed runs at every rate and the best mean dev score is kept.
        batch_size: examples per optimizer step.
        epochs: passes over the training set (ignored when ``max_steps`` is given).
        max_steps: optimizer steps in all; overrides ``epochs``.
        warmup_ratio: fraction of the steps with a linear warm-up.
        weight_decay: AdamW weight decay (not on biases and LayerNorm weights).
        max_length: longest input in tokens (longer ones are truncated; capped at the model's
            position embeddings).
        clip_grad: gradient-norm clipping, 0 = off.
        eval_every: dev evaluation every N steps; ``None`` = after every epoch. Training always
            ends with one.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``…; ``None`` = the GPU when there is one.
        pld: fine-tune with Progressive Layer Dropping (off by default: every block runs).
        pld_theta_bar: θ̄ when ``pld`` is on; γ is 100/T for the run's T steps.
        save_model: also save the best checkpoint (model + tokenizer) into the output folder.
    """

    lr: float | tuple[float, ...] | None = None
    batch_size: int = 32
    epochs: int = 3
    max_steps: int | None = None
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_length: int = 128
    clip_grad: float = 1.0
    eval_every: int | None = None
    device: str | None = None
    pld: bool = False
    pld_theta_bar: float = 0.5
    save_model: bool = False

    def __post_init__(self):
        def bad(flag: str, value, want: str):
            raise UserError(f"--{flag} {value}: expected {want}")

        if isinstance(self.lr, (list, tuple)):
            self.lr = tuple(dict.fromkeys(float(v) for v in self.lr))
        for lr in self.lr if isinstance(self.lr, tuple) else [self.lr]:
            if lr is not None and not (lr > 0 and math.isfinite(lr)):
                bad("lr", lr, "a positive learning rate, e.g. 5e-5")
        if self.batch_size < 1:
            bad("batch-size", self.batch_size, "a positive number of examples")
        if self.epochs < 1:
            bad("epochs", self.epochs, "a positive number of passes")
        if self.max_steps is not None and self.max_steps < 1:
            bad("max-steps", self.max_steps, "a positive number of steps")
        if not 0 <= self.warmup_ratio < 1:
            bad("warmup-ratio", self.warmup_ratio, "a fraction in [0, 1)")
        if self.weight_decay < 0:
            bad("weight-decay", self.weight_decay, "a number >= 0")
        if self.max_length < 8:
            bad("max-length", self.max_length, "at least 8 tokens")
        if self.clip_grad < 0:
            bad("clip-grad", self.clip_grad, "a norm >= 0 (0 = no clipping)")
        if self.eval_every is not None and self.eval_every < 1:
            bad("eval-every", self.eval_every, "a positive number of steps")
        if not 0 < self.pld_theta_bar <= 1:
            bad("pld-theta-bar", self.pld_theta_bar, "θ̄ in (0, 1]")


class Diverged(UserError):
    """The training loss became NaN or infinite (the learning rate is too high)."""


@dataclass
class SeedRun:
    """What one seed's run gives: dev metrics of the best checkpoint and its predictions.

    Args:
        seed: the seed (head initialisation, data order, dropout).
        metrics: dev metrics of the best checkpoint, flat keys (``accuracy_m`` for MNLI).
        score: :func:`pldrop.tasks.task_score` of ``metrics``.
        predictions: ``{split: (N,) class ids or scores}`` for every dev and test split.
        test_metrics: metrics of the test splits (recipes), keys as for dev (``accuracy``).
        best_step, steps, train_time_s: when the best checkpoint was taken, steps run, seconds.
        history: one record per dev evaluation (step, epoch, train loss, lr, score, metrics).
    """

    seed: int
    metrics: dict[str, float]
    score: float
    predictions: dict[str, np.ndarray]
    test_metrics: dict[str, float] = field(default_factory=dict)
    best_step: int = 0
    steps: int = 0
    train_time_s: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


# --- data -----------------------------------------------------------------------------------


def encode(tokenizer, examples: list[Example], max_length: int, keep: tuple[str, ...]) -> list[dict[str, Any]]:
    """Tokenize ``examples`` once: one dict of model inputs (lists) plus ``labels`` each.

    Args:
        keep: the input names the model takes (``token_type_ids`` is dropped for models with a
            single token type, such as pldrop's, where a second segment id would be out of range).
    """
    texts_a = [e.text_a for e in examples]
    pair = any(e.text_b is not None for e in examples)
    texts_b = [e.text_b or "" for e in examples] if pair else None
    enc = tokenizer(texts_a, texts_b, truncation=True, max_length=max_length)
    names = [k for k in enc.keys() if k in keep]
    return [{**{k: enc[k][i] for k in names}, "labels": e.label} for i, e in enumerate(examples)]


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """BERT's convention: no weight decay on biases and LayerNorm weights."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def predict(model, features: list[dict[str, Any]], collate, batch_size: int, device) -> np.ndarray:
    """Class ids ``(N,)`` or regression scores ``(N,)`` for ``features``, in their order.

    Batches are formed by length (less padding); the model is left in the mode it was in.
    """
    was_training = model.training
    model.eval()
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    out = np.zeros(len(features), dtype=np.float64)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = collate([{k: v for k, v in features[i].items() if k != "labels"} for i in idx])
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float()  # (B, C)
        values = logits[:, 0] if logits.shape[-1] == 1 else logits.argmax(-1)
        out[idx] = values.cpu().numpy()
    model.train(was_training)
    return out


# --- one seed -------------------------------------------------------------------------------


def train_seed(src, data: TaskData, features: dict[str, list[dict[str, Any]]], cfg: FinetuneConfig, seed: int,
               progress: bool = False, save_to: Path | None = None) -> SeedRun:
    """Fine-tune ``src`` on ``data`` with ``seed``; see the module docstring for the loop.

    Args:
        src: a :class:`pldrop.tasks.classifier.ModelSource`.
        data: the task.
        features: ``encode``-d examples by split: ``"train"``, each dev split, each test split.
        cfg: hyperparameters.
        seed: seeds the head's initialisation, the data order and dropout.
        progress: show a tqdm bar.
        save_to: save the best checkpoint (model + tokenizer) into this folder.
    """
    from tqdm.auto import tqdm
    from transformers import DataCollatorWithPadding, get_linear_schedule_with_warmup

    from pldrop.tasks.classifier import load_classifier

    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    model = load_classifier(src, data.labels).to(device)
    model.train()
    collate = DataCollatorWithPadding(src.tokenizer, return_tensors="pt")

    train = features["train"]
    per_epoch = math.ceil(len(train) / cfg.batch_size)
    horizon = cfg.max_steps or cfg.epochs * per_epoch
    ctl = None
    if cfg.pld:
        from pldrop.schedule import gamma_for_steps
        from pldrop.surgery import apply_pld

        ctl = apply_pld(model, theta_bar=cfg.pld_theta_bar, gamma=gamma_for_steps(horizon), seed=seed)
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, round(cfg.warmup_ratio * horizon), horizon)
    order_rng = torch.Generator().manual_seed(seed)
    eval_bs = 2 * cfg.batch_size

    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    step, loss_sum, loss_n, train_time = 0, 0.0, 0, 0.0
    bar = tqdm(total=horizon, desc=f"{data.name} seed {seed}", unit="step", disable=not progress, dynamic_ncols=True)

    def evaluate_dev() -> None:
        nonlocal best, loss_sum, loss_n
        preds = {s: predict(model, features[s], collate, eval_bs, device) for s in data.dev}
        metrics = evaluate_splits(data.spec, {s: (preds[s], [f["labels"] for f in features[s]]) for s in data.dev})
        score = task_score(data.spec, metrics)
        history.append({"step": step, "epoch": round(step / per_epoch, 3), "train_loss": loss_sum / max(1, loss_n),
                        "lr": scheduler.get_last_lr()[0], "score": score, **metrics})
        loss_sum, loss_n = 0.0, 0
        if best is None or (not math.isnan(score) and (math.isnan(best["score"]) or score > best["score"])):
            state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            best = {"score": score, "metrics": metrics, "step": step, "predictions": preds, "state": state}
        bar.set_postfix(loss=f"{history[-1]['train_loss']:.3f}", dev=f"{score:.3f}", refresh=False)

    try:
        while step < horizon:
            order = torch.randperm(len(train), generator=order_rng).tolist()
            for start in range(0, len(order), cfg.batch_size):
                t0 = time.perf_counter()
                if ctl is not None:
                    ctl.step(step)
                batch = collate([train[i] for i in order[start:start + cfg.batch_size]])
                batch = {k: v.to(device) for k, v in batch.items()}
                if data.is_regression:
                    batch["labels"] = batch["labels"].float()
                loss = model(**batch).loss
                loss.backward()
                if cfg.clip_grad > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                value = loss.item()
                if not math.isfinite(value):
                    raise Diverged(f"the loss became {value} at step {step} (--lr {cfg.lr:g}); lower --lr")
                step += 1
                loss_sum, loss_n = loss_sum + value, loss_n + 1
                train_time += time.perf_counter() - t0
                bar.update(1)
                end_of_epoch = start + cfg.batch_size >= len(order)
                due = (step % cfg.eval_every == 0) if cfg.eval_every else end_of_epoch
                if due or step >= horizon:
                    evaluate_dev()
                if step >= horizon:
                    break
    finally:
        bar.close()

    assert best is not None
    model.load_state_dict(best["state"])
    predictions = dict(best["predictions"])
    test_metrics: dict[str, float] = {}
    for s in data.test:  # scored like dev; keys get the split's name when there are several
        predictions[s] = predict(model, features[s], collate, eval_bs, device)
        scores = compute_metrics(data.spec, predictions[s], [f["labels"] for f in features[s]])
        test_metrics.update({(k if len(data.test) == 1 else f"{k}_{s}"): v for k, v in scores.items()})
    if save_to is not None:
        if ctl is not None:
            from pldrop.surgery import remove_pld

            remove_pld(model)
        from pldrop.tasks.classifier import _quiet_transformers

        save_to.mkdir(parents=True, exist_ok=True)
        with _quiet_transformers():  # no "Writing model shards" bar
            model.save_pretrained(str(save_to), safe_serialization=True)
        src.tokenizer.save_pretrained(str(save_to))
    return SeedRun(seed, best["metrics"], best["score"], predictions, test_metrics, best["step"], step,
                   train_time, history)


# --- the whole run --------------------------------------------------------------------------


def choose_lr(grid: dict[float, list[SeedRun]], n_seeds: int) -> float:
    """The rate with the best mean dev score over seeds (BERT's and the paper's protocol).

    Rates with every seed done come first; a NaN score counts as the worst; a tie goes to the
    rate listed first.

    >>> def runs(*scores): return [SeedRun(i, {}, s, {}) for i, s in enumerate(scores)]
    >>> choose_lr({1e-4: runs(0.7, 0.8), 5e-4: runs(0.9, 0.8), 2e-3: runs(float("nan"), 1.0)}, 2)
    0.0005
    >>> choose_lr({1e-4: runs(0.7, 0.8), 5e-4: runs(0.99)}, 2)
    0.0001
    """
    def key(rate: float) -> tuple[bool, float]:
        scores = [r.score for r in grid[rate]]
        mean = float(np.mean(scores)) if scores else math.nan
        return len(scores) == n_seeds, -math.inf if math.isnan(mean) else mean

    candidates = [rate for rate, runs in grid.items() if runs]
    if not candidates:
        raise ValueError("no rate has a finished run")
    return max(candidates, key=key)  # max keeps the first of equal keys


def finetune(
    model: str | Path,
    task: str,
    out: str | Path,
    data: str | Path | None = None,
    seeds: list[int] | tuple[int, ...] = (0,),
    config: FinetuneConfig | None = None,
    *,
    text_columns: tuple[str, ...] | list[str] = ("text",),
    label_column: str = "label",
    regression: bool | None = None,
    cache_dir: str | Path | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    task_data: TaskData | None = None,
    log=print,
) -> dict[str, Any]:
    """Fine-tune ``model`` on ``task`` once per seed (and per rate of the default grid when
    ``config.lr`` is ``None``); write results and predictions into ``out``.

    Every input (output folder, task data, model folder and its weights) is checked before
    anything is deleted. With ``overwrite`` the new run is written into a staging folder inside
    ``out`` and swapped in at the end, so a run that fails leaves the old results intact; only
    the files the old ``results.json`` lists are replaced.

    Args:
        model: a model folder (``pldrop pretrain`` run folder, HF folder) or ``hf:NAME``.
        task: a GLUE task, an offline recipe, or your name for your own files.
        out: the output folder; it must not hold results unless ``overwrite``.
        data: where the task's files are (see :func:`pldrop.tasks.load_task`).
        seeds: one run per seed (per rate); results report the mean and sample std over them.
        config: hyperparameters (default :class:`FinetuneConfig`: the learning-rate grid).
        text_columns, label_column, regression: for your own files.
        cache_dir: the pldrop cache (offline recipes).
        overwrite: replace the results already in ``out``.
        progress: tqdm bars (``None``: when stderr is a terminal).
        task_data: the task, already loaded (``pldrop evaluate`` loads each task once).
        log: where notes go (one line each).

    Returns:
        The contents of ``results.json`` (see :mod:`pldrop.tasks.results`).
    """
    from dataclasses import replace

    from pldrop.tasks.classifier import check_weights, model_inputs, open_model
    from pldrop.tasks.lr import RULE, default_lrs, lr_name, model_width
    from pldrop.tasks.registry import load_task
    from pldrop.tasks.results import plan_out, swap_in, write_results

    cfg = config or FinetuneConfig()
    seeds = list(dict.fromkeys(int(s) for s in seeds))
    if not seeds:
        raise UserError("--seeds: give at least one seed")
    out = Path(out)
    check_out_not_model(out, model)
    old = plan_out(out, overwrite)  # checks only: nothing is deleted before every input is checked
    src = open_model(model)  # a wrong --model is refused before the task's data is prepared
    if task_data is None:
        task_data = load_task(task, data, text_columns=text_columns, label_column=label_column,
                              regression=regression, cache_dir=cache_dir)
        for line in task_data.notes:  # they name the task already
            log(line)
    _check_splits(task_data)
    check_weights(src, task_data.labels)
    for line in src.notes:
        log(f"{model}: {line}")
    max_length = min(cfg.max_length, src.max_length)
    if max_length < cfg.max_length:
        log(f"{model}: --max-length {cfg.max_length} is more than the model's {src.max_length} positions; "
            f"using {max_length}")
    searched = cfg.lr is None or isinstance(cfg.lr, tuple)
    rates = list(default_lrs(src.config) if cfg.lr is None else cfg.lr if searched else [cfg.lr])
    if searched:
        log(f"{task}: fine-tuning at lr {', '.join(map(lr_name, rates))} ({len(rates) * len(seeds)} runs"
            f"{', the default grid of width ' + str(model_width(src.config)) if cfg.lr is None else ''}) "
            f"and keeping the best on dev")

    splits = {"train": task_data.train, **task_data.dev, **task_data.test}
    keep = model_inputs(src)
    features = {s: encode(src.tokenizer, ex, max_length, keep) for s, ex in splits.items()}
    show = progress if progress is not None else os.isatty(2)
    settings = {"model": str(model), "task": task, "data": None if data is None else str(data), "seeds": seeds,
                **asdict(cfg), "max_length": max_length,
                "lr_grid": rates if searched else None, "lr_rule": RULE if cfg.lr is None else None}

    stage = out if old is None else out / f".finetune-tmp-{os.getpid()}"
    grid: dict[float, list[SeedRun]] = {rate: [] for rate in rates}
    diverged: dict[float, str] = {}
    try:
        for rate in rates:
            for seed in seeds:
                save_to = None
                if cfg.save_model:
                    name = "model" if len(seeds) == 1 else f"model_seed{seed}"
                    save_to = stage / (f"{name}_lr{lr_name(rate)}" if searched else name)
                try:
                    run = train_seed(src, task_data, features, replace(cfg, lr=rate), seed, progress=show,
                                     save_to=save_to)
                except Diverged as e:
                    if not searched:
                        raise
                    diverged[rate] = str(e)
                    log(f"{task}: lr {lr_name(rate)} diverged ({e}); left out of the choice")
                    break
                grid[rate].append(run)
                results = write_results(stage, task_data, src, settings, grid if searched else grid[rate],
                                        diverged=diverged)
        if not any(grid.values()):
            raise UserError(f"{task}: every learning rate of the grid diverged "
                            f"({', '.join(map(lr_name, rates))}); give a lower --lr")
        if searched:  # the chosen rate's checkpoints become model/; the others are deleted
            results = write_results(stage, task_data, src, settings, grid, diverged=diverged, final=True)
    except BaseException:
        if stage != out:
            import shutil

            shutil.rmtree(stage, ignore_errors=True)
        raise
    if stage != out:
        swap_in(stage, out, old)
    return results


def check_out_not_model(out: Path, model: str | Path) -> None:
    """Refuse an output folder that is the model folder or lies inside it: fine-tuning would write
    into the pretraining run (its results, predictions, ``model/``)."""
    if str(model).startswith("hf:"):
        return
    m, o = Path(model).expanduser().resolve(), Path(out).expanduser().resolve()
    if o == m or m in o.parents:
        raise UserError(f"--out {out} is {'inside ' if o != m else ''}the model folder {model}; fine-tuning "
                        f"writes its results in a folder of their own -- choose another --out")


def _check_splits(data: TaskData) -> None:
    if not data.train:
        raise UserError(f"task {data.name}: the train split has no examples")
    if not data.dev:
        raise UserError(f"task {data.name}: no dev split to choose the best checkpoint on")
    for split, examples in {**data.dev, **data.test}.items():
        if not examples:
            raise UserError(f"task {data.name}: the {split} split has no examples")
