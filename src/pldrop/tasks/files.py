"""A task of your own: train and dev files in CSV, TSV or JSON lines.

``data`` names the files in one of two ways:

- a folder holding ``train.<ext>`` and ``dev.<ext>`` (or ``validation.<ext>``), and optionally
  ``test.<ext>`` (labelled, scored like dev but kept apart), ``<ext>`` one of ``csv``, ``tsv``,
  ``jsonl``;
- two paths, train then dev: a sequence ``[train, dev]`` or one string ``"train.csv,dev.csv"``.

Formats, by extension: ``.csv`` is quoted CSV with a header; ``.tsv`` is tab-separated with a
header and *no* quoting (a ``"`` is data, as in GLUE); ``.jsonl`` has one JSON object per line.
Columns are looked up by name: ``text_columns`` (one, or two for sentence pairs) and
``label_column``.

Classification or regression: with ``regression=None`` (the default) the task is a regression
when every train label is a number and not all of them are integers (STS-B-like scores); labels
that are words or integers are classes. Pass ``regression=True``/``False`` to decide yourself.
The classes are those seen in the train file, sorted (numerically when they are all integers);
a dev label never seen in training is an error. Scored with accuracy and macro-F1
(classification) or Pearson and Spearman (regression).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from pldrop.errors import UserError
from pldrop.tasks.base import Example, TaskData, TaskSpec
from pldrop.tasks.reader import read_csv, read_jsonl, read_tsv, require_file

FORMATS = ("csv", "tsv", "jsonl")
_DEV_NAMES = ("dev", "validation")

Record = tuple[Path, int, list[str], object]  # file, line, texts, raw label


def resolve_files(data: str | Path | Sequence[str | Path]) -> dict[str, Path]:
    """The ``train``, ``dev`` and (if any) ``test`` files named by ``data`` (see the module doc)."""
    if isinstance(data, str) and "," in data and not Path(data).exists():
        data = data.split(",")
    if isinstance(data, (list, tuple)):
        if len(data) != 2:
            raise UserError(f"{','.join(map(str, data))}: expected two files, train then dev, got {len(data)}")
        files = {"train": Path(data[0]), "dev": Path(data[1])}
        for split, path in files.items():
            require_file(path, f"the {split} file")
        return files
    folder = Path(data)
    if folder.is_file():
        raise UserError(f"{folder}: a dev file is needed too (expected a folder with train.* and dev.*, "
                        f"or two paths 'TRAIN,DEV')")
    if not folder.is_dir():
        raise UserError(f"{folder}: not found (expected a folder with train.* and dev.*, or two paths 'TRAIN,DEV')")
    files: dict[str, Path] = {}
    for split, stems in (("train", ("train",)), ("dev", _DEV_NAMES), ("test", ("test",))):
        found = [folder / f"{s}.{ext}" for s in stems for ext in FORMATS if (folder / f"{s}.{ext}").is_file()]
        if len(found) > 1:
            raise UserError(f"{folder}: several {split} files ({', '.join(p.name for p in found)}); keep one")
        if found:
            files[split] = found[0]
        elif split != "test":
            raise UserError(f"{folder / stems[0]}.*: file not found (expected {' or '.join(stems)}"
                            f".{{{','.join(FORMATS)}}} in {folder})")
    return files


def _records(path: Path, text_columns: Sequence[str], label_column: str) -> list[Record]:
    ext = path.suffix.lower().lstrip(".")
    if ext not in FORMATS:
        raise UserError(f"{path}: unknown format {path.suffix!r} (expected .csv, .tsv or .jsonl)")
    out: list[Record] = []
    if ext == "jsonl":
        for lineno, obj in read_jsonl(path):
            for key in (*text_columns, label_column):
                if key not in obj:
                    raise UserError(f"{path}:{lineno}: no key {key!r} (keys: {', '.join(obj)})")
            texts = []
            for key in text_columns:
                if not isinstance(obj[key], str):
                    raise UserError(f"{path}:{lineno}: {key!r} is {type(obj[key]).__name__}, expected a string")
                texts.append(obj[key])
            if obj[label_column] is None or isinstance(obj[label_column], (dict, list)):
                raise UserError(f"{path}:{lineno}: label {obj[label_column]!r} in {label_column!r} is not a "
                                f"string or number")
            out.append((path, lineno, texts, obj[label_column]))
        empty_line = 1
    else:
        rows = read_csv(path) if ext == "csv" else read_tsv(path)
        idx = [rows.index(c) for c in text_columns]
        li = rows.index(label_column)
        out = [(path, lineno, [f[i] for i in idx], f[li].strip()) for lineno, f in rows.rows]
        empty_line = rows.header_line + 1
    if not out:
        raise UserError(f"{path}:{empty_line}: no examples (expected at least one labelled row)")
    return out


def _number(raw: object) -> float | None:
    if isinstance(raw, bool):
        return None
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _check_texts(recs: list[Record], text_columns: Sequence[str]) -> None:
    """Refuse a file whose texts are all empty: nothing to learn or to score (a model that sees
    only empty inputs predicts one class, and a one-class dev file scores it 100)."""
    if all(not t.strip() for r in recs for t in r[2]):
        path, lineno = recs[0][:2]
        raise UserError(f"{path}:{lineno}: every text in {', '.join(map(repr, text_columns))} is empty "
                        f"(checked {len(recs)} rows); check --text-columns and the file")


def _check_finite(recs: list[Record], label_column: str) -> None:
    """Numeric labels with a ``nan`` or ``inf`` among them are a damaged score column, not classes
    (``nan`` would turn a regression into a task with one class per score)."""
    values = []
    for path, lineno, _, raw in recs:
        if isinstance(raw, bool):
            return
        try:
            values.append((path, lineno, raw, float(raw)))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return  # a word: classes
    bad = next((v for v in values if not math.isfinite(v[3])), None)
    if bad is not None:
        path, lineno, raw, _ = bad
        raise UserError(f"{path}:{lineno}: label {raw!r} in {label_column!r} is not a finite number, in a "
                        f"column of numbers; fix or remove the row")


def _class_name(raw: object) -> str:
    """The class name of a raw label: JSON 1 and "1" are the same class."""
    value = _number(raw)
    if value is not None and value.is_integer() and not isinstance(raw, str):
        return str(int(value))
    return str(raw).strip()


def load_file_task(
    data: str | Path | Sequence[str | Path],
    text_columns: Sequence[str] = ("text",),
    label_column: str = "label",
    regression: bool | None = None,
    name: str = "file",
) -> TaskData:
    """Load a task from your own files (layout, formats and label rules: see the module doc).

    Args:
        data: a folder with ``train.*`` and ``dev.*``/``validation.*``, or two paths.
        text_columns: one column (single text) or two (sentence pair).
        label_column: the label's column.
        regression: ``None`` decides from the train labels; ``True``/``False`` forces it.
        name: the task's name in results and tables.
    """
    text_columns = list(text_columns)
    if len(text_columns) not in (1, 2):
        raise UserError(f"text_columns={text_columns!r}: expected one column name or two (a sentence pair)")
    files = resolve_files(data)
    records = {split: _records(path, text_columns, label_column) for split, path in files.items()}
    for recs in records.values():
        _check_texts(recs, text_columns)
    if regression is None:
        _check_finite(records["train"], label_column)
        numbers = [_number(r[3]) for r in records["train"]]
        regression = all(v is not None for v in numbers) and not all(v.is_integer() for v in numbers)  # type: ignore[union-attr]

    labels: list[str] | None
    if regression:
        labels = None
        spec = TaskSpec(name, name, None, ("pearson", "spearman"), ("pearson", "spearman"))
    else:
        seen = {_class_name(r[3]) for r in records["train"]}
        ints = all(_number(s) is not None and _number(s).is_integer() for s in seen)  # type: ignore[union-attr]
        labels = sorted(seen, key=lambda s: (float(s), s) if ints else (0.0, s))
        if len(labels) < 2:
            path, lineno = records["train"][0][:2]
            raise UserError(f"{path}:{lineno}: every train label is {labels[0]!r}; classification needs two "
                            f"classes or more (for scores pass --regression; regression=True in Python)")
        spec = TaskSpec(name, name, tuple(labels), ("accuracy", "f1_macro"), ("accuracy",))

    def examples(recs: list[Record]) -> list[Example]:
        out = []
        ids = {} if labels is None else {c: i for i, c in enumerate(labels)}
        for n, (path, lineno, texts, raw) in enumerate(recs):
            if labels is None:
                value = _number(raw)
                if value is None:
                    raise UserError(f"{path}:{lineno}: label {raw!r} in {label_column!r} is not a finite number "
                                    f"(this task is a regression)")
                label: int | float = value
            else:
                cls = _class_name(raw)
                if cls not in ids:
                    raise UserError(f"{path}:{lineno}: label {cls!r} in {label_column!r} does not occur in the "
                                    f"train file (labels: {', '.join(labels)})")
                label = ids[cls]
            out.append(Example(n, texts[0], texts[1] if len(texts) > 1 else None, label))
        return out

    test = {"test": examples(records["test"])} if "test" in records else {}
    return TaskData(name, examples(records["train"]), {"dev": examples(records["dev"])}, labels, spec, test=test)
