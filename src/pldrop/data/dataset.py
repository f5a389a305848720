"""Tokenize a corpus once, pack it, cache it on disk, and hand out training/validation datasets.

Cache layout under the pldrop cache root (``$PLDROP_CACHE`` or ``~/.cache/pldrop``)::

    tokenizers/<key>/   a WordPiece tokenizer trained on the corpus's training split
    tokens/<key>/       train.bin, valid.bin: packed (n_seqs, seq_len) uint16/uint32 rows
                        meta.json: counts per split, dtype, fingerprints, credits

The token key hashes the corpus content, the tokenizer's vocabulary/normalizer, ``seq_len``,
the split seed and fraction; a folder is written under a temporary name and renamed into
place, so a crash or a concurrent run never leaves a half-written cache. Documents stream
through in batches: the corpus is never held in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from pldrop.data.batches import TrainBatches, eval_batches  # noqa: F401  (re-exported)
from pldrop.data.corpora import (SplitPlan, SplitScanner, as_list, credits_for,
                                 fingerprint_sources, load_documents, plan_split)
from pldrop.data.masking import mask_tokens  # noqa: F401  (re-exported)
from pldrop.data.packed import PackedDataset
from pldrop.data.packing import pack
from pldrop.data.tokenizer import load_tokenizer, tokenizer_fingerprint, train_wordpiece
from pldrop.data.wheels import default_cache_dir
from pldrop.errors import UserError

FORMAT_VERSION = 2  # bump when the cache layout, packing or tokenizer training changes
DOC_BATCH = 256     # documents per tokenizer call
ROW_BATCH = 1024    # sequences per write


@dataclass
class PreparedData:
    """What :func:`prepare_data` returns.

    Args:
        tokenizer: the ``transformers`` tokenizer the tokens were made with.
        train: training sequences (masks re-drawn per epoch).
        valid: validation sequences (fixed masks); may be empty for a one-document corpus.
        meta: the cache's ``meta.json``: ``splits.{train,valid}.{n_docs,n_tokens,n_seqs}``,
            ``seq_len``, ``vocab_size``, ``credits``...
        folder: the token cache folder.
        credits: Markdown for the run folder's ``CREDITS.md``.
    """

    tokenizer: Any
    train: PackedDataset
    valid: PackedDataset
    meta: dict
    folder: Path
    credits: str = ""


def _key(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:20]


def _atomic_dir(target: Path, build: Callable[[Path], None]) -> None:
    """Run ``build(tmp)`` in a fresh sibling folder, then rename it to ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first; its copy is as good as ours
            if not target.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _batched(items: Iterable[str], n: int) -> Iterator[list[str]]:
    it = iter(items)
    while batch := list(islice(it, n)):
        yield batch


def write_split(docs: Iterable[str], tokenizer, seq_len: int, path: Path, dtype: str,
                progress: Any = None) -> dict:
    """Tokenize documents in batches, pack them and append the rows to ``path``.

    Args:
        docs: the split's documents (streamed).
        tokenizer: a ``transformers`` fast tokenizer with cls/sep/pad tokens.
        seq_len: tokens per row.
        path: output ``.bin`` file.
        dtype: ``"uint16"`` or ``"uint32"``.
        progress: a tqdm bar to advance by one per document, or None.

    Returns:
        ``dict(n_docs, n_tokens, n_seqs, last_len)``; ``n_tokens`` counts the documents'
        own tokens (no [CLS]/[SEP]/[PAD]).
    """
    from tokenizers import Tokenizer

    # A private copy with truncation/padding off: every token of every document is kept.
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    stats = {"n_docs": 0, "n_tokens": 0, "n_seqs": 0, "last_len": seq_len}

    def token_lists() -> Iterator[list[int]]:
        for batch in _batched(docs, DOC_BATCH):
            for enc in backend.encode_batch(batch, add_special_tokens=False):
                stats["n_docs"] += 1
                stats["n_tokens"] += len(enc.ids)
                yield enc.ids
            if progress is not None:
                progress.update(len(batch))

    rows: list[list[int]] = []
    with open(path, "wb") as f:
        for row in pack(token_lists(), seq_len, tokenizer.cls_token_id, tokenizer.sep_token_id):
            if len(row) < seq_len:  # only the last row: pad it, remember its real length
                stats["last_len"] = len(row)
                row = row + [tokenizer.pad_token_id] * (seq_len - len(row))
            rows.append(row)
            if len(rows) == ROW_BATCH:
                f.write(np.asarray(rows, dtype=dtype).tobytes())
                stats["n_seqs"] += len(rows)
                rows = []
        if rows:
            f.write(np.asarray(rows, dtype=dtype).tobytes())
            stats["n_seqs"] += len(rows)
    return stats


def _progress(total: int, desc: str, enabled: bool | None):
    from tqdm.auto import tqdm

    disable = not sys.stderr.isatty() if enabled is None else not enabled
    return tqdm(total=total, desc=desc, unit="doc", disable=disable)


def build_token_cache(folder: Path, docs: Callable[[], Iterable[str]], plan: SplitPlan,
                      tokenizer, seq_len: int, info: dict, progress: bool | None = None) -> None:
    """Write ``train.bin``, ``valid.bin`` and ``meta.json`` into ``folder`` (two streaming passes).

    Args:
        folder: an empty folder.
        docs: returns a fresh iterator over the corpus's documents on each call.
        plan: the train/validation split.
        tokenizer: the tokenizer.
        seq_len: tokens per row.
        info: extra entries for ``meta.json`` (sources, fingerprints, credits...).
        progress: draw tqdm bars (None: only on a terminal).
    """
    dtype = "uint16" if len(tokenizer) <= 2**16 else "uint32"
    splits = {}
    for name, want_valid in (("train", False), ("valid", True)):
        total = plan.n_valid if want_valid else plan.n_docs - plan.n_valid
        with _progress(total, f"tokenizing {name}", progress) as bar:
            splits[name] = write_split((d for d in docs() if plan.is_valid(d) == want_valid),
                                       tokenizer, seq_len, folder / f"{name}.bin", dtype, bar)
    meta = {**info, "format": FORMAT_VERSION, "seq_len": seq_len, "dtype": dtype,
            "vocab_size": len(tokenizer), "n_docs": plan.n_docs,
            "n_tokens": sum(s["n_tokens"] for s in splits.values()), "splits": splits}
    (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def open_split(folder: Path, split: str, tokenizer, meta: dict, *, seed: int,
               mlm_prob: float = 0.15) -> PackedDataset:
    """A :class:`PackedDataset` over ``<folder>/<split>.bin`` (``valid`` gets fixed masks)."""
    s = meta["splits"][split]
    specials = [i for i in tokenizer.all_special_ids if i is not None]
    return PackedDataset(folder / f"{split}.bin", n_seqs=s["n_seqs"], seq_len=meta["seq_len"],
                         dtype=meta["dtype"], last_len=s["last_len"],
                         mask_id=tokenizer.mask_token_id, pad_id=tokenizer.pad_token_id,
                         vocab_size=len(tokenizer), special_ids=specials, seed=seed,
                         mlm_prob=mlm_prob, fixed_masks=split == "valid")


def _check_args(seq_len: int, val_fraction: float, mlm_prob: float) -> None:
    if not isinstance(seq_len, int) or seq_len < 8:
        raise UserError(f"seq_len must be an integer >= 8, got {seq_len!r}")
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction!r}")
    if not 0.0 < mlm_prob < 1.0:
        raise UserError(f"mlm_prob must be between 0 and 1 (exclusive), got {mlm_prob!r}")


def prepare_data(sources: list[str] | str, *, seq_len: int = 128, vocab_size: int = 8000,
                 lowercase: bool = True, tokenizer_dir: str | Path | None = None,
                 val_fraction: float = 0.05, seed: int = 0, cache_dir: str | Path | None = None,
                 out_tokenizer_dir: str | Path | None = None, text_field: str = "text",
                 text_column: str = "text", mlm_prob: float = 0.15,
                 progress: bool | None = None) -> PreparedData:
    """Load a corpus, get a tokenizer, tokenize and pack (cached), and return the datasets.

    Args:
        sources: corpus sources: recipe names, ``hf:NAME[:CONFIG]``, files, folders, globs
            (see :mod:`pldrop.data.corpora`).
        seq_len: tokens per packed sequence, [CLS] and [SEP] included.
        vocab_size: WordPiece vocabulary size when a tokenizer is trained.
        lowercase: uncased (True) or cased tokenizer, when one is trained.
        tokenizer_dir: use this saved tokenizer instead of training one.
        val_fraction: share of documents held out for validation (by a seeded hash).
        seed: seed of the split, the training masks and (by default) the tokenizer cache key.
        cache_dir: pldrop cache root (default ``$PLDROP_CACHE`` or ``~/.cache/pldrop``).
        out_tokenizer_dir: also ``save_pretrained`` the tokenizer here (e.g. the run folder).
        text_field: text field in JSON files and ``hf:`` datasets.
        text_column: text column in CSV/TSV files.
        mlm_prob: share of non-special tokens selected for masked-LM prediction.
        progress: tqdm bars while tokenizing (None: only when stderr is a terminal).

    Under ``torch.distributed``, let rank 0 call this first and the others after a barrier;
    concurrent calls are safe (atomic renames) but would each do the work.
    """
    _check_args(seq_len, val_fraction, mlm_prob)
    sources = as_list(sources)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()

    def docs() -> Iterator[str]:
        return load_documents(sources, text_field=text_field, text_column=text_column,
                              cache_dir=cache)

    corpus_fp = fingerprint_sources(sources, text_field=text_field, text_column=text_column)
    plan: SplitPlan | None = None
    if tokenizer_dir is not None:
        tokenizer = load_tokenizer(tokenizer_dir)
    else:
        tok_dir = cache / "tokenizers" / _key(FORMAT_VERSION, corpus_fp, vocab_size, lowercase,
                                              seed, val_fraction)
        if not (tok_dir / "tokenizer.json").is_file():
            scanner = SplitScanner(seed, val_fraction)
            texts = (d for d in docs() if not scanner.add(d))  # the scan rides along
            bars = sys.stderr.isatty() if progress is None else progress
            _atomic_dir(tok_dir, lambda tmp: train_wordpiece(texts, vocab_size, lowercase, tmp,
                                                             show_progress=bars))
            plan = scanner.plan()
        tokenizer = load_tokenizer(tok_dir)
    if out_tokenizer_dir is not None:
        tokenizer.save_pretrained(str(out_tokenizer_dir))

    tok_fp = tokenizer_fingerprint(tokenizer)
    folder = cache / "tokens" / _key(FORMAT_VERSION, corpus_fp, tok_fp, seq_len, seed, val_fraction)
    credits = credits_for(sources)
    if not (folder / "meta.json").is_file():
        plan = plan or plan_split(docs(), seed, val_fraction)
        info = {"sources": sources, "corpus_fingerprint": corpus_fp,
                "tokenizer_fingerprint": tok_fp, "seed": seed, "val_fraction": val_fraction,
                "credits": credits}
        _atomic_dir(folder, lambda tmp: build_token_cache(tmp, docs, plan, tokenizer, seq_len,
                                                          info, progress))
    meta = json.loads((folder / "meta.json").read_text())
    train = open_split(folder, "train", tokenizer, meta, seed=seed, mlm_prob=mlm_prob)
    valid = open_split(folder, "valid", tokenizer, meta, seed=seed, mlm_prob=mlm_prob)
    return PreparedData(tokenizer=tokenizer, train=train, valid=valid, meta=meta, folder=folder,
                        credits=credits)
