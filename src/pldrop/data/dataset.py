"""Tokenize a corpus once, pack it, cache it on disk, and hand out training/validation datasets.

Cache layout under the pldrop cache root (``$PLDROP_CACHE`` or ``~/.cache/pldrop``)::

    tokenizers/<key>/   a tokenizer trained on the corpus's training split: WordPiece for a masked
                        LM, byte-level BPE for a causal LM (``causal``)
    tokens/<key>/       train.bin, valid.bin: packed (n_seqs, seq_len) uint16/uint32 rows
                        meta.json: counts per split, dtype, fingerprints, credits

The token key hashes the corpus content, the tokenizer's vocabulary/normalizer, ``seq_len``,
the split seed and fraction, and for a causal LM the objective (its rows are packed otherwise:
``doc EOS doc EOS ...``, not ``[CLS] ... [SEP]``), so a masked-LM run and a causal-LM run never
share an entry -- not even with the same ``--tokenizer``; the masked-LM keys are those of before
causal LMs existed, so their caches stay valid; a folder is written under a temporary name and renamed into
place, so a crash or a concurrent run never leaves a half-written cache. Documents stream
through in batches: the corpus is never held in memory.

Caches repair themselves: every entry carries ``manifest.json`` (size and SHA-256 of its small
files, size of its token files), checked when the entry is opened along with the JSON and
the sizes ``meta.json`` implies; a damaged entry (a file removed, truncated or edited) is
rebuilt with a one-line notice on stderr. Temporary folders of killed builds (``.KEY.tmp-PID-…``)
are collected once their process is gone. Entries written before manifests existed are
checked for JSON and sizes only.
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
from pldrop.data.packing import pack, pack_causal
from pldrop.data.tokenizer import end_token_id, load_tokenizer, tokenizer_fingerprint, train_tokenizer
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


MANIFEST = "manifest.json"
HASHED_MAX = 64 << 20  # small files are hashed in the manifest; .bin token files and big ones by size only


def write_manifest(folder: Path) -> None:
    """Record every file of a cache entry: size, and SHA-256 of its small files (``meta.json``, the tokenizer's)."""
    from pldrop.data.wheels import sha256_file

    files = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.name != MANIFEST:
            size = f.stat().st_size
            hashed = f.suffix != ".bin" and size <= HASHED_MAX  # token files: by size (meta.json fixes it)
            files[f.name] = {"size": size, "sha256": sha256_file(f) if hashed else None}
    (folder / MANIFEST).write_text(json.dumps({"files": files}, indent=1) + "\n")


def check_manifest(folder: Path) -> str | None:
    """Why ``folder`` no longer matches its manifest (a file missing, resized or edited), or None.

    A folder without a manifest (written by an older pldrop) passes.
    """
    from pldrop.data.wheels import sha256_file

    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        files = json.loads(path.read_text(encoding="utf-8"))["files"]
        items = list(files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"{MANIFEST} is unreadable"
    for name, want in items:
        f = folder / name
        try:
            if not f.is_file():
                return f"{name} is missing"
            if f.stat().st_size != want["size"]:
                return f"{name} has {f.stat().st_size} bytes, not {want['size']}"
            if want.get("sha256") and sha256_file(f) != want["sha256"]:
                return f"{name} was modified (checksum)"
        except (OSError, TypeError, KeyError) as e:
            return f"{name} cannot be checked ({e})"
    return None


def _notice(what: str, folder: Path, why: str) -> None:
    print(f"pldrop: the cached {what} in {folder} is damaged ({why}); rebuilding it", file=sys.stderr)


def _discard(folder: Path) -> None:
    """Move a damaged cache entry out of the way (atomic), then delete it."""
    aside = folder.parent / f".{folder.name}.damaged-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(folder, aside)
    except FileNotFoundError:  # another process discarded it first
        return
    shutil.rmtree(aside, ignore_errors=True)


def _collect_stale(folder: Path) -> None:
    """Remove temporary and discarded entries left in ``folder`` by killed processes."""
    import re

    from pldrop.train.rundir import collect_stale_tmp

    collect_stale_tmp(folder, pattern=re.compile(r"\.(?:tmp|damaged)-(\d+)-[0-9a-f]{8}$"))


def _atomic_dir(target: Path, build: Callable[[Path], None]) -> None:
    """Run ``build(tmp)`` in a fresh sibling folder, write its manifest, then rename it to ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        build(tmp)
        write_manifest(tmp)
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
                progress: Any = None, causal: bool = False) -> dict:
    """Tokenize documents in batches, pack them and append the rows to ``path``.

    Args:
        docs: the split's documents (streamed).
        tokenizer: a ``transformers`` fast tokenizer with cls/sep/pad tokens.
        seq_len: tokens per row.
        path: output ``.bin`` file.
        dtype: ``"uint16"`` or ``"uint32"``.
        progress: a tqdm bar to advance by one per document, or None.
        causal: pack as a causal LM reads: ``doc EOS doc EOS ...`` cut into rows (:func:`pack_causal`);
            else BERT's ``[CLS] ... [SEP]`` rows (:func:`pack`).

    Returns:
        ``dict(n_docs, n_tokens, n_seqs, last_len)``; ``n_tokens`` counts the documents'
        own tokens (no [CLS]/[SEP]/EOS/[PAD]).
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
    packed = (pack_causal(token_lists(), seq_len, end_token_id(tokenizer)) if causal else
              pack(token_lists(), seq_len, tokenizer.cls_token_id, tokenizer.sep_token_id))
    with open(path, "wb") as f:
        for row in packed:
            if len(row) < seq_len:  # only the last row: pad it, remember its real length
                stats["last_len"] = len(row)
                row = row + [pad_id(tokenizer)] * (seq_len - len(row))
            rows.append(row)
            if len(rows) == ROW_BATCH:
                f.write(np.asarray(rows, dtype=dtype).tobytes())
                stats["n_seqs"] += len(rows)
                rows = []
        if rows:
            f.write(np.asarray(rows, dtype=dtype).tobytes())
            stats["n_seqs"] += len(rows)
    return stats


def pad_id(tokenizer) -> int:
    """The id that pads the last row: ``[PAD]`` / ``<|pad|>``, else the end token (a GPT-2 tokenizer has no pad)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end_token_id(tokenizer)


def _progress(total: int, desc: str, enabled: bool | None):
    from tqdm.auto import tqdm

    disable = not sys.stderr.isatty() if enabled is None else not enabled
    return tqdm(total=total, desc=desc, unit="doc", disable=disable)


def build_token_cache(folder: Path, docs: Callable[[], Iterable[str]], plan: SplitPlan,
                      tokenizer, seq_len: int, info: dict, progress: bool | None = None,
                      causal: bool = False) -> None:
    """Write ``train.bin``, ``valid.bin`` and ``meta.json`` into ``folder`` (two streaming passes).

    Args:
        folder: an empty folder.
        docs: returns a fresh iterator over the corpus's documents on each call.
        plan: the train/validation split.
        tokenizer: the tokenizer.
        seq_len: tokens per row.
        info: extra entries for ``meta.json`` (sources, fingerprints, credits...).
        progress: draw tqdm bars (None: only on a terminal).
        causal: pack for a causal LM (see :func:`write_split`).
    """
    dtype = "uint16" if len(tokenizer) <= 2**16 else "uint32"
    splits = {}
    for name, want_valid in (("train", False), ("valid", True)):
        total = plan.n_valid if want_valid else plan.n_docs - plan.n_valid
        with _progress(total, f"tokenizing {name}", progress) as bar:
            splits[name] = write_split((d for d in docs() if plan.is_valid(d) == want_valid),
                                       tokenizer, seq_len, folder / f"{name}.bin", dtype, bar, causal)
    meta = {**info, "format": FORMAT_VERSION, "seq_len": seq_len, "dtype": dtype,
            "vocab_size": len(tokenizer), "n_docs": plan.n_docs,
            "n_tokens": sum(s["n_tokens"] for s in splits.values()), "splits": splits}
    if causal:  # (a masked-LM meta.json stays as it was)
        meta["objective"] = "causal-lm"
    (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def open_split(folder: Path, split: str, tokenizer, meta: dict, *, seed: int,
               mlm_prob: float = 0.15, causal: bool = False) -> PackedDataset:
    """A :class:`PackedDataset` over ``<folder>/<split>.bin`` (``valid`` gets fixed masks; ``causal``: none)."""
    s = meta["splits"][split]
    specials = [i for i in tokenizer.all_special_ids if i is not None]
    return PackedDataset(folder / f"{split}.bin", n_seqs=s["n_seqs"], seq_len=meta["seq_len"],
                         dtype=meta["dtype"], last_len=s["last_len"],
                         mask_id=tokenizer.mask_token_id, pad_id=pad_id(tokenizer),
                         vocab_size=len(tokenizer), special_ids=specials, seed=seed,
                         mlm_prob=mlm_prob, fixed_masks=split == "valid", masked=not causal)


def token_cache_problem(folder: Path, tokenizer_fp: str | None = None) -> str | None:
    """Why the token cache entry ``folder`` cannot be used, or None when it is sound.

    Checks the manifest, that ``meta.json`` is a JSON object of this format with sane counts,
    that each ``.bin`` holds exactly ``n_seqs * seq_len`` tokens, and (if given) that it was
    made with the tokenizer whose fingerprint is ``tokenizer_fp``.
    """
    if not (folder / "meta.json").is_file():
        return "meta.json is missing"
    why = check_manifest(folder)
    if why:
        return why
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return f"meta.json is not JSON ({str(e).splitlines()[0][:80]})"
    try:
        seq_len, dtype = meta["seq_len"], meta["dtype"]
        if meta.get("format") != FORMAT_VERSION or dtype not in ("uint16", "uint32"):
            return f"meta.json has format {meta.get('format')!r} / dtype {dtype!r}"
        if tokenizer_fp is not None and meta.get("tokenizer_fingerprint") not in (None, tokenizer_fp):
            return "made with another tokenizer"
        for split in ("train", "valid"):
            s = meta["splits"][split]
            n, last = s["n_seqs"], s["last_len"]
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n, last, seq_len)) \
                    or n < 0 or not 0 < last <= seq_len:
                return f"meta.json has bad counts for {split}"
            path = folder / f"{split}.bin"
            want = n * seq_len * np.dtype(dtype).itemsize
            have = path.stat().st_size if path.is_file() else (0 if n == 0 else -1)
            if have != want:
                return f"{split}.bin has {have} bytes, meta.json implies {want}" if have >= 0 else \
                    f"{split}.bin is missing"
    except (KeyError, TypeError, AttributeError) as e:
        return f"meta.json lacks {e}"
    return None


def tokenizer_cache_problem(folder: Path) -> str | None:
    """Why the cached tokenizer in ``folder`` cannot be used (missing or damaged files), or None."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        return "tokenizer.json is missing"
    why = check_manifest(folder)
    if why:
        return why
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        vocab = data["model"]["vocab"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"tokenizer.json is not a tokenizer ({type(e).__name__})"
    if not isinstance(vocab, dict) or len(vocab) <= 5:  # the five special tokens alone: no vocabulary
        return "tokenizer.json has no vocabulary"
    return None


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
                 progress: bool | None = None, causal: bool = False) -> PreparedData:
    """Load a corpus, get a tokenizer, tokenize and pack (cached), and return the datasets.

    Args:
        sources: corpus sources: recipe names, ``hf:NAME[:CONFIG]``, files, folders, globs
            (see :mod:`pldrop.data.corpora`).
        seq_len: tokens per packed sequence, [CLS] and [SEP] (or the EOS tokens) included.
        vocab_size: vocabulary size when a tokenizer is trained.
        lowercase: uncased (True) or cased WordPiece, when one is trained (a causal LM's byte-level
            BPE is always cased).
        tokenizer_dir: use this saved tokenizer instead of training one.
        val_fraction: share of documents held out for validation (by a seeded hash).
        seed: seed of the split, the training masks and (by default) the tokenizer cache key.
        cache_dir: pldrop cache root (default ``$PLDROP_CACHE`` or ``~/.cache/pldrop``).
        out_tokenizer_dir: also ``save_pretrained`` the tokenizer here (e.g. the run folder).
        text_field: text field in JSON files and ``hf:`` datasets.
        text_column: text column in CSV/TSV files.
        mlm_prob: share of non-special tokens selected for masked-LM prediction.
        progress: tqdm bars while tokenizing (None: only when stderr is a terminal).
        causal: data for a causal LM: a byte-level BPE tokenizer (when one is trained), rows packed as
            ``doc EOS doc EOS …`` (EOS ``<|endoftext|>``; ``[SEP]`` for a BERT ``tokenizer_dir``), tokens
            uncorrupted. The tokenizer and token caches are keyed apart from a masked LM's.

    Under ``torch.distributed``, let rank 0 call this first and the others after a barrier;
    concurrent calls are safe (atomic renames) but would each do the work.
    """
    _check_args(seq_len, val_fraction, mlm_prob)
    sources = as_list(sources)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if cache.exists() and not cache.is_dir():
        raise UserError(f"the pldrop cache {str(cache)!r} is a file; give a folder with --cache-dir "
                        "(or $PLDROP_CACHE)")
    for sub in ("tokenizers", "tokens"):
        _collect_stale(cache / sub)

    def docs() -> Iterator[str]:
        return load_documents(sources, text_field=text_field, text_column=text_column,
                              cache_dir=cache)

    corpus_fp = fingerprint_sources(sources, text_field=text_field, text_column=text_column)
    plan: SplitPlan | None = None
    if tokenizer_dir is not None:
        tokenizer = load_tokenizer(tokenizer_dir, causal=causal)
    else:
        kind = "byte-level-bpe" if causal else lowercase  # (a masked LM's key is unchanged)
        tok_dir = cache / "tokenizers" / _key(FORMAT_VERSION, corpus_fp, vocab_size, kind,
                                              seed, val_fraction)
        why = tokenizer_cache_problem(tok_dir) if tok_dir.exists() else "absent"
        tokenizer = None
        if why is None:
            try:
                tokenizer = load_tokenizer(tok_dir, causal=causal)
            except UserError as e:
                why = str(e)[:160]
        if tokenizer is None:
            if why != "absent":
                _notice("tokenizer", tok_dir, why)
                _discard(tok_dir)
            scanner = SplitScanner(seed, val_fraction)
            texts = (d for d in docs() if not scanner.add(d))  # the scan rides along
            # no bar from `tokenizers` itself: it reads a generator of unknown length ("33 / 0")
            _atomic_dir(tok_dir, lambda tmp: train_tokenizer(texts, vocab_size, lowercase, tmp, causal=causal))
            plan = scanner.plan()
            tokenizer = load_tokenizer(tok_dir, causal=causal)
    if out_tokenizer_dir is not None:
        tokenizer.save_pretrained(str(out_tokenizer_dir))

    tok_fp = tokenizer_fingerprint(tokenizer)
    parts = (FORMAT_VERSION, corpus_fp, tok_fp, seq_len, seed, val_fraction) + (("causal-lm",) if causal else ())
    folder = cache / "tokens" / _key(*parts)
    credits = credits_for(sources)
    why = token_cache_problem(folder, tok_fp) if folder.exists() else "absent"
    if why is not None:
        if why != "absent":
            _notice("token files", folder, why)
            _discard(folder)
        plan = plan or plan_split(docs(), seed, val_fraction)
        info = {"sources": sources, "corpus_fingerprint": corpus_fp,
                "tokenizer_fingerprint": tok_fp, "seed": seed, "val_fraction": val_fraction,
                "credits": credits}
        _atomic_dir(folder, lambda tmp: build_token_cache(tmp, docs, plan, tokenizer, seq_len,
                                                          info, progress, causal))
        why = token_cache_problem(folder, tok_fp)
        if why is not None:  # what was just built must be sound
            raise UserError(f"the token cache {str(folder)!r} could not be built soundly ({why}); check the "
                            "disk (space, permissions) and the cache folder")
    meta = json.loads((folder / "meta.json").read_text())
    train = open_split(folder, "train", tokenizer, meta, seed=seed, mlm_prob=mlm_prob, causal=causal)
    valid = open_split(folder, "valid", tokenizer, meta, seed=seed, mlm_prob=mlm_prob, causal=causal)
    return PreparedData(tokenizer=tokenizer, train=train, valid=valid, meta=meta, folder=folder,
                        credits=credits)
