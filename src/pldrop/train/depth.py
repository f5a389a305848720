"""Depth curves: validation loss, accuracy and inference time of a model cut to K of its L blocks.

:func:`depth_curve` is a function of (model, validation batches, depths, strategy): for every K
from L down to ``min_keep`` it runs the model with only the blocks the strategy keeps
(:func:`pldrop.prune.only_blocks`, no weights copied, no fine-tuning) and records the masked-LM
(or causal-LM) loss and accuracy. :func:`time_depths` measures the forward time per sequence at
each depth, interleaved: every round runs each (model, depth) once in a seeded random order, and
the median over rounds is reported as a ratio to the model's full depth, so a change of machine
load hits all depths alike. :func:`depth_section` is the block ``compare`` stores under ``depth``.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..errors import UserError
from ..prune import block_list, greedy_removal, kept_blocks, only_blocks

Batch = dict[str, torch.Tensor]


def default_keeps(num_layers: int, min_keep: int | None = None) -> list[int]:
    """Depths from L down to ``min_keep`` (default L/2, rounded up).

    >>> default_keeps(12), default_keeps(3), default_keeps(4, 1)
    ([12, 11, 10, 9, 8, 7, 6], [3, 2], [4, 3, 2, 1])
    """
    low = (num_layers + 1) // 2 if min_keep is None else min_keep
    return list(range(num_layers, max(1, low) - 1, -1))


def batch_loss(model: torch.nn.Module, batch: Batch, causal: bool) -> tuple[float, int, int]:
    """(summed token loss, correct predictions, predicted tokens) of one batch.

    Masked LM: the positions whose label is not -100 (the model's own head on those positions only,
    :func:`pldrop.models.masked_lm_loss`, when it has a ``cls`` / ``lm_head``). Causal LM: every
    next token of a real (attention mask 1) position, ``labels`` = ``input_ids`` shifted by one.
    """
    ids, mask = batch["input_ids"], batch.get("attention_mask")
    if causal:
        from ..models import causal_lm_loss

        _, logits, target = causal_lm_loss(model, ids, mask)  # (N, V), (N,)
    else:
        labels = batch["labels"]
        from ..models import masked_lm_loss

        if hasattr(model, "cls") or hasattr(model, "lm_head"):
            _, logits, target = masked_lm_loss(model, ids, mask, labels)
        else:
            sel = labels != -100
            logits, target = model(input_ids=ids, attention_mask=mask).logits[sel], labels[sel]
    if target.numel() == 0:
        return 0.0, 0, 0
    loss = F.cross_entropy(logits.float(), target, reduction="sum")
    return float(loss), int((logits.argmax(-1) == target).sum()), int(target.numel())


@torch.no_grad()
def evaluate_batches(model: torch.nn.Module, batches: Sequence[Batch], causal: bool,
                     device: torch.device | str = "cpu") -> dict[str, float]:
    """Token-weighted mean loss and accuracy over ``batches`` (``val_loss``, ``val_accuracy``, ``val_tokens``)."""
    was = model.training
    model.eval()
    total, correct, count = 0.0, 0, 0
    for batch in batches:
        s, c, n = batch_loss(model, {k: v.to(device) for k, v in batch.items()}, causal)
        total, correct, count = total + s, correct + c, count + n
    model.train(was)
    return {"val_loss": total / max(1, count), "val_accuracy": correct / max(1, count), "val_tokens": count}


def loss_of_blocks(model: torch.nn.Module, batches: Sequence[Batch], causal: bool,
                   device: torch.device | str = "cpu") -> Callable[[list[int]], float]:
    """``cost(kept)``: the validation loss of ``model`` run with only the ``kept`` blocks (for ``greedy``)."""
    def cost(kept: list[int]) -> float:
        with only_blocks(model, kept):
            return evaluate_batches(model, batches, causal, device)["val_loss"]

    return cost


def kept_per_depth(model: torch.nn.Module, keeps: Sequence[int], strategy: str, *, batches: Sequence[Batch] = (),
                   causal: bool = False, probs: Sequence[float] | None = None,
                   device: torch.device | str = "cpu") -> dict[int, list[int]]:
    """The blocks kept at each depth. ``greedy`` follows one removal path from L down (nested sets),
    choosing on ``batches``; the others choose each depth on its own."""
    _, blocks = block_list(model)
    L = len(blocks)
    if strategy == "greedy" and any(k < L for k in keeps):
        if not batches:
            raise UserError("strategy='greedy' needs validation batches to choose blocks by")
        path = greedy_removal(L, loss_of_blocks(model, batches, causal, device), min(keeps))
        by_size = {len(k): k for k, _ in path}
        return {k: list(range(L)) if k == L else by_size[k] for k in keeps}
    return {k: kept_blocks(strategy, L, k, probs=probs) for k in keeps}


@torch.no_grad()
def time_depths(models: Mapping[str, tuple[torch.nn.Module, dict[int, list[int]], Batch]], *, rounds: int = 5,
                seed: int = 0, causal: Mapping[str, bool] | None = None,
                device: torch.device | str = "cpu") -> dict[str, dict[int, float]]:
    """Median seconds per sequence of one forward at each depth, interleaved.

    Args:
        models: name -> (model, {depth: kept blocks}, the batch its forwards run; its sequences
            count for "per sequence").
        rounds: each round runs every (model, depth) once, in an order shuffled with ``seed`` and
            the round number; one untimed warm-up forward each comes first.
        causal: name -> whether the model is a causal LM (``use_cache=False`` then).

    Returns:
        name -> {depth: median seconds per sequence}.
    """
    device = torch.device(device)
    inputs = {name: {k: v.to(device) for k, v in b.items() if k in ("input_ids", "attention_mask")}
              for name, (_, _, b) in models.items()}
    pairs = [(name, k) for name, (_, kept, _) in models.items() for k in kept]

    def forward(name: str, k: int) -> float:
        model, kept, _ = models[name]
        extra = {"use_cache": False} if causal and causal.get(name) else {}
        with only_blocks(model, kept[k]):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            model(**inputs[name], **extra)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return (time.perf_counter() - t0) / inputs[name]["input_ids"].shape[0]

    for m, _, _ in models.values():
        m.eval()
    for name, k in pairs:  # warm-up: allocator, kernels, caches
        forward(name, k)
    times: dict[tuple[str, int], list[float]] = {p: [] for p in pairs}
    for r in range(rounds):
        order = list(pairs)
        random.Random(f"{seed}-{r}").shuffle(order)
        for name, k in order:
            times[(name, k)].append(forward(name, k))
    return {name: {k: statistics.median(times[(name, k)]) for k in kept} for name, (_, kept, _) in models.items()}


def depth_curve(model: torch.nn.Module, batches: Sequence[Batch], *, keeps: Sequence[int] | None = None,
                strategy: str = "top", causal: bool = False, probs: Sequence[float] | None = None,
                device: torch.device | str = "cpu") -> dict[str, Any]:
    """Validation loss and accuracy of ``model`` at each depth (no timing; see :func:`depth_section`).

    Args:
        model: an HF masked-LM or causal-LM (PLD not applied).
        batches: validation batches (``input_ids``, ``attention_mask``; ``labels`` for a masked LM).
        keeps: depths to evaluate (default :func:`default_keeps`: L down to L/2).
        strategy: ``top``, ``every-other``, ``keep-prob`` or ``greedy`` (see :mod:`pldrop.prune`).
        causal: next-token loss instead of masked-token loss.
        probs: keep probabilities for ``keep-prob`` (default the linear rule).

    Returns:
        ``{"num_layers", "strategy", "objective", "points": [{"keep", "kept", "val_loss",
        "val_accuracy", "val_tokens", "accuracy_kept"}, ...]}``, depths in descending order;
        ``accuracy_kept`` is the accuracy as a share of the full-depth accuracy.
    """
    _, blocks = block_list(model)
    L = len(blocks)
    keeps = sorted(set(default_keeps(L) if keeps is None else keeps) | {L}, reverse=True)
    kept = kept_per_depth(model, keeps, strategy, batches=batches, causal=causal, probs=probs, device=device)
    points = []
    for k in keeps:
        with only_blocks(model, kept[k]):
            r = evaluate_batches(model, batches, causal, device)
        points.append({"keep": k, "kept": kept[k], **r})
    full = points[0]["val_accuracy"]
    for p in points:
        p["accuracy_kept"] = p["val_accuracy"] / full if full > 0 else None
    return {"num_layers": L, "strategy": strategy, "objective": "causal-lm" if causal else "masked-lm",
            "points": points}


def depth_section(models: Mapping[str, torch.nn.Module], batches: Mapping[str, Sequence[Batch]] | Sequence[Batch], *,
                  strategy: str = "top", min_keep: int | None = None, rounds: int = 5, seed: int = 0,
                  causal: Mapping[str, bool] | bool = False, probs: Mapping[str, Sequence[float]] | None = None,
                  device: torch.device | str = "cpu") -> dict[str, Any]:
    """The depth curves of several models (the arms of a comparison), timed together.

    Args:
        models: name -> model.
        batches: the validation batches, one list for all or name -> list.
        strategy: how blocks are chosen at each depth.
        min_keep: the lowest depth (default L/2 of each model).
        rounds: timing rounds (0: no timing).
        seed: seeds the order of the timed forwards.
        causal: one flag for all, or name -> flag.
        probs: name -> keep probabilities for ``keep-prob``.

    Returns:
        ``{"strategy", "min_keep", "timing": {"rounds", "seed", "device", "seqs"}, "models": {name:
        depth_curve(...) with "time_per_seq_s" and "time_ratio" in each point}}`` -- the block
        ``pldrop compare`` stores under ``depth`` in ``results.json``.
    """
    per = batches if isinstance(batches, Mapping) else {name: batches for name in models}
    flags = causal if isinstance(causal, Mapping) else {name: bool(causal) for name in models}
    curves = {}
    for name, model in models.items():
        _, blocks = block_list(model)
        curves[name] = depth_curve(model, per[name], keeps=default_keeps(len(blocks), min_keep), strategy=strategy,
                                   causal=flags[name], probs=(probs or {}).get(name), device=device)
    timing: dict[str, Any] = {"rounds": rounds, "seed": seed, "device": str(device), "seqs": 0}
    if rounds > 0:
        seqs = min(per[name][0]["input_ids"].shape[0] for name in models)  # the same count for every model
        timing["seqs"] = seqs
        timed = time_depths({n: (models[n], {p["keep"]: p["kept"] for p in curves[n]["points"]},
                                 {k: v[:seqs] for k, v in per[n][0].items()}) for n in models},
                            rounds=rounds, seed=seed, causal=flags, device=device)
        for name, curve in curves.items():
            full = timed[name][curve["num_layers"]]
            for p in curve["points"]:
                p["time_per_seq_s"] = timed[name][p["keep"]]
                p["time_ratio"] = timed[name][p["keep"]] / full if full > 0 else None
    return {"strategy": strategy, "min_keep": min_keep, "timing": timing, "models": curves}


POINT_FIGURES = ("val_loss", "val_accuracy", "val_tokens", "accuracy_kept", "time_per_seq_s", "time_ratio")


def mean_curve(curves: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The pointwise mean of one arm's depth curves over its seeds (the same depths and blocks kept).

    A figure that is missing or None in any seed is None in the mean; ``seeds`` counts the curves.

    >>> a = {"num_layers": 2, "strategy": "top", "objective": "masked-lm", "points": [
    ...     {"keep": 2, "kept": [0, 1], "val_loss": 2.0, "val_accuracy": 0.5, "accuracy_kept": 1.0},
    ...     {"keep": 1, "kept": [0], "val_loss": 3.0, "val_accuracy": 0.4, "accuracy_kept": 0.8}]}
    >>> b = {**a, "points": [{**a["points"][0], "val_loss": 4.0}, {**a["points"][1], "accuracy_kept": None}]}
    >>> m = mean_curve([a, b])
    >>> m["seeds"], m["points"][0]["val_loss"], m["points"][1]["accuracy_kept"], m["points"][1]["kept"]
    (2, 3.0, None, [0])
    """
    first = curves[0]
    if any([(p["keep"], p["kept"]) for p in c["points"]] != [(p["keep"], p["kept"]) for p in first["points"]]
           for c in curves):
        raise ValueError("the seeds' depth curves keep different blocks; their mean is not one curve")
    points = []
    for i, p in enumerate(first["points"]):
        q = {"keep": p["keep"], "kept": p["kept"]}
        for key in POINT_FIGURES:
            vals = [c["points"][i].get(key) for c in curves]
            if key in p:
                q[key] = None if any(v is None for v in vals) else vals[0] if len(set(vals)) == 1 \
                    else sum(vals) / len(vals)
        points.append(q)
    return {"num_layers": first["num_layers"], "strategy": first["strategy"], "objective": first["objective"],
            "seeds": len(curves), "points": points}


# -- validation data for a model folder --------------------------------------------------------------


def validation_for(tm, corpus: Sequence[str] | None = None, *, max_seqs: int | None = None,
                   batch_size: int | None = None, cache_dir: str | None = None) -> tuple[list[Batch], str]:
    """Validation batches for a loaded model folder (:class:`~pldrop.train.trained.TrainedModel`).

    A ``pldrop pretrain`` run uses its own tokenizer and recovers the validation split it was
    trained with (corpus, seed, fraction, sequence length, masks: ``config.yaml``; the token cache
    makes this cheap) -- or the same split settings on ``corpus`` when given. Any other folder needs
    ``corpus``: its held-out documents (seeded hash split, seed 0, 5 %) with the folder's tokenizer;
    masked LMs get pldrop's fixed validation masks, causal LMs the packed token stream.

    Returns:
        (batches, a sentence saying what they are).
    """
    from ..data.batches import eval_batches

    run = tm.run or {}
    d = run.get("data") if isinstance(run.get("data"), dict) else {}
    o = run.get("optim") if isinstance(run.get("optim"), dict) else {}
    sources = list(corpus) if corpus else list(d.get("corpus") or [])
    name = str(tm.path)
    if not sources:
        raise UserError(f"{name} is not a pldrop pretrain run folder, so its validation data is not known: "
                        "give --corpus")
    if not tm.has_tokenizer:
        raise UserError(f"{name} has no tokenizer (tokenizer.json / tokenizer_config.json); depth curves need one")
    seed = run.get("seed", 0) if isinstance(run.get("seed", 0), int) else 0
    fraction = d.get("val_fraction", 0.05)
    limit = _position_limit(tm.model.config)
    seq_len = d.get("seq_len") or min(128, limit or 128)
    max_seqs = max_seqs if max_seqs is not None else (d.get("val_max_seqs") or 256)
    batch_size = batch_size or o.get("batch_size") or 32
    where = "the run's validation split" if not corpus and d.get("corpus") else "the validation split"
    about = f"{where} of {' '.join(sources)} (seed {seed}, {fraction:g} of documents, {seq_len} tokens per sequence)"
    if tm.causal and not run:  # a causal LM pldrop did not train: its tokenizer, packed as pldrop packs
        rows = _causal_rows(tm.path, sources, seed, fraction, seq_len, max_seqs, d, cache_dir)
        batches = [_causal_batch(rows[i:i + batch_size]) for i in range(0, len(rows), batch_size)]
        return batches, about
    from ..data.dataset import prepare_data

    try:  # a pldrop run: the run's own data preparation (tokenizer, packing, token cache) for its objective
        data = prepare_data(sources, seq_len=seq_len, tokenizer_dir=tm.path, val_fraction=fraction, seed=seed,
                            cache_dir=cache_dir or d.get("cache_dir"), text_field=d.get("text_field", "text"),
                            text_column=d.get("text_column", "text"), mlm_prob=d.get("mlm_prob", 0.15),
                            progress=False, causal=tm.causal)
    except UserError as e:
        hint = "; give --corpus to evaluate on another corpus" if not corpus else ""
        raise UserError(f"{name}: {e}{hint}") from None
    n = len(data.valid) if not max_seqs else min(max_seqs, len(data.valid))
    if n == 0:
        raise UserError(f"{name}: {' '.join(sources)} gave no validation sequences; give a larger corpus")
    from torch.utils.data import Subset

    return list(eval_batches(Subset(data.valid, range(n)), batch_size)), about


def _position_limit(config) -> int | None:
    from ..tasks.classifier import _position_limit as limit

    n = limit(config)
    return n if n is not None else getattr(config, "n_positions", None)


def _causal_rows(folder, sources, seed, fraction, seq_len, max_seqs, d, cache_dir) -> list[list[int]]:
    from transformers import AutoTokenizer

    from ..data.corpora import is_validation, load_documents

    from ..data.packing import pack_causal
    from ..data.tokenizer import end_token_id

    tok = AutoTokenizer.from_pretrained(str(folder))
    eos = end_token_id(tok)
    if eos is None:
        raise UserError(f"{folder}: its tokenizer has no eos_token (nor sep_token) to end each document")
    docs = (tok(doc, add_special_tokens=False)["input_ids"]
            for doc in load_documents(sources, text_field=d.get("text_field", "text"),
                                      text_column=d.get("text_column", "text"), cache_dir=cache_dir)
            if is_validation(doc, seed, fraction))
    rows: list[list[int]] = []
    for row in pack_causal(docs, seq_len, eos):  # documents EOS-separated, as prepare_data(causal=True) packs
        if len(row) == seq_len or (not rows and len(row) > 1):  # a partial row only when it is all there is
            rows.append(row)
        if max_seqs and len(rows) >= max_seqs:
            break
    if not rows:
        raise UserError(f"{folder}: {' '.join(sources)} gave no validation sequences; give a larger corpus")
    return rows


def _causal_batch(rows: list[list[int]]) -> Batch:
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    return {"input_ids": ids, "attention_mask": mask}
