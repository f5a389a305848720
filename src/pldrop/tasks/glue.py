"""The nine GLUE tasks: their specs, and loaders for a local GLUE folder and for the hub.

Wang et al., "GLUE: A Multi-Task Benchmark and Analysis Platform for Natural Language
Understanding", ICLR 2019, https://arxiv.org/abs/1804.07461.

Two sources are accepted:

- a folder in the layout written by the official ``download_glue_data.py`` (``CoLA/``,
  ``SST-2/``, ``MRPC/``, ``QQP/``, ``STS-B/``, ``MNLI/``, ``QNLI/``, ``RTE/``, ``WNLI/``, each
  with ``train.tsv`` and ``dev.tsv``; MNLI with ``dev_matched.tsv`` and ``dev_mismatched.tsv``;
  MRPC alternatively with the original ``msr_paraphrase_train.txt`` / ``msr_paraphrase_test.txt``
  and ``dev_ids.tsv``). The folder may be the GLUE root or the task's own folder.
- ``hf:nyu-mll/glue`` (any ``hf:REPO`` with GLUE's configs and columns), read with
  ``datasets.load_dataset(REPO, task)``.

Label ids follow the hub dataset in both cases, so a model fine-tuned on one source can be
scored on the other. The test splits are not loaded: GLUE hides their labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from pldrop.errors import UserError
from pldrop.tasks.base import Example, TaskData, TaskSpec
from pldrop.tasks.reader import Rows, read_tsv, require_file

_BINARY = ("0", "1")
_NLI2 = ("entailment", "not_entailment")

GLUE_TASKS: dict[str, TaskSpec] = {
    s.name: s
    for s in (
        TaskSpec("cola", "CoLA", ("unacceptable", "acceptable"), ("mcc",), ("mcc",), raw_labels=_BINARY),
        TaskSpec("sst2", "SST-2", ("negative", "positive"), ("accuracy",), ("accuracy",), raw_labels=_BINARY),
        TaskSpec("mrpc", "MRPC", ("not_equivalent", "equivalent"), ("f1", "accuracy"), ("f1", "accuracy"),
                 positive_label="equivalent", raw_labels=_BINARY),
        TaskSpec("stsb", "STS-B", None, ("pearson", "spearman"), ("pearson", "spearman")),
        TaskSpec("qqp", "QQP", ("not_duplicate", "duplicate"), ("f1", "accuracy"), ("f1", "accuracy"),
                 positive_label="duplicate", raw_labels=_BINARY),
        TaskSpec("mnli", "MNLI", ("entailment", "neutral", "contradiction"), ("accuracy",),
                 ("accuracy_m", "accuracy_mm"), dev_splits=(("matched", "m"), ("mismatched", "mm"))),
        TaskSpec("qnli", "QNLI", _NLI2, ("accuracy",), ("accuracy",)),
        TaskSpec("rte", "RTE", _NLI2, ("accuracy",), ("accuracy",)),
        TaskSpec("wnli", "WNLI", ("not_entailment", "entailment"), ("accuracy",), ("accuracy",),
                 raw_labels=_BINARY),
    )
}
"""The GLUE tasks in the leaderboard's column order."""


@dataclass(frozen=True)
class _Layout:
    """Where a task's examples are: in the GLUE folder, and in the hub dataset."""

    folder: str
    text_columns: tuple[str, ...]
    label_column: str
    dev_files: tuple[tuple[str, str], ...] = (("dev", "dev.tsv"),)
    no_header: tuple[str, ...] | None = None  # column names of a header-less file (CoLA)
    hub_text: tuple[str, ...] = ("sentence1", "sentence2")
    hub_dev: tuple[tuple[str, str], ...] = (("dev", "validation"),)


_PAIR = ("sentence1", "sentence2")
_LAYOUTS: dict[str, _Layout] = {
    # CoLA: no header; source, label, the author's original acceptability mark, sentence.
    "cola": _Layout("CoLA", ("sentence",), "label", no_header=("source", "label", "original_mark", "sentence"),
                    hub_text=("sentence",)),
    "sst2": _Layout("SST-2", ("sentence",), "label", hub_text=("sentence",)),
    "mrpc": _Layout("MRPC", ("#1 String", "#2 String"), "Quality"),
    "stsb": _Layout("STS-B", _PAIR, "score"),
    "qqp": _Layout("QQP", ("question1", "question2"), "is_duplicate", hub_text=("question1", "question2")),
    "mnli": _Layout("MNLI", _PAIR, "gold_label",
                    dev_files=(("matched", "dev_matched.tsv"), ("mismatched", "dev_mismatched.tsv")),
                    hub_text=("premise", "hypothesis"),
                    hub_dev=(("matched", "validation_matched"), ("mismatched", "validation_mismatched"))),
    "qnli": _Layout("QNLI", ("question", "sentence"), "label", hub_text=("question", "sentence")),
    "rte": _Layout("RTE", _PAIR, "label"),
    "wnli": _Layout("WNLI", _PAIR, "label"),
}

_MSR_TRAIN, _MSR_TEST, _MSR_DEV_IDS = "msr_paraphrase_train.txt", "msr_paraphrase_test.txt", "dev_ids.tsv"


def glue_spec(task: str) -> TaskSpec:
    """The :class:`TaskSpec` of GLUE task ``task`` (``cola``, ``sst2``, …, ``wnli``)."""
    try:
        return GLUE_TASKS[task]
    except KeyError:
        raise UserError(f"unknown GLUE task {task!r} (expected one of {', '.join(GLUE_TASKS)})") from None


def examples_from_rows(rows: Rows, text_columns: tuple[str, ...], label_column: str, spec: TaskSpec) -> list[Example]:
    """Turn the rows of one split into examples, checking every label against the task.

    Args:
        rows: the split's rows (:func:`~pldrop.tasks.reader.read_tsv`, ``read_csv``).
        text_columns: one or two column names (``text_a``, then ``text_b``).
        label_column: the column holding the label.
        spec: the task; its ``file_labels()`` are the accepted label strings (regression: any
            finite number).

    Raises:
        UserError: ``FILE:LINE:`` and the problem, for a missing column, a label outside the
            task's set, or a split without examples.
    """
    text_idx = [rows.index(c) for c in text_columns]
    label_idx = rows.index(label_column)
    lookup = None if spec.labels is None else {raw: i for i, raw in enumerate(spec.file_labels())}
    out: list[Example] = []
    for n, (lineno, fields) in enumerate(rows.rows):
        raw = fields[label_idx].strip()
        label: int | float
        if lookup is None:
            label = _parse_float(raw)
            if label is None:
                raise UserError(
                    f"{rows.path}:{lineno}: label {raw!r} in column {label_column!r} is not a finite number "
                    f"({spec.name} is a regression task)"
                )
        elif raw in lookup:
            label = lookup[raw]
        else:
            raise UserError(
                f"{rows.path}:{lineno}: label {raw!r} in column {label_column!r} is not one of "
                f"{spec.name}'s labels ({', '.join(lookup)})"
            )
        texts = [fields[i].strip() for i in text_idx]
        out.append(Example(n, texts[0], texts[1] if len(texts) > 1 else None, label))
    if not out:
        where = "after the header" if rows.header_line else "in the file"
        raise UserError(f"{rows.path}:{rows.header_line + 1}: no examples (expected at least one data row {where})")
    return out


def _parse_float(raw: str) -> float | None:
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _task_folder(root: Path, layout: _Layout) -> Path:
    """``root/<Task>`` for a GLUE root, or ``root`` itself when it is the task's folder."""
    if not root.exists():
        raise UserError(f"{root}: folder not found (expected a GLUE folder as written by download_glue_data.py)")
    if not root.is_dir():
        raise UserError(f"{root}: not a folder (expected a GLUE folder holding {layout.folder}/)")
    sub = root / layout.folder
    if sub.is_dir():
        return sub
    if (root / "train.tsv").is_file() or (layout.folder == "MRPC" and (root / _MSR_TRAIN).is_file()):
        return root
    raise UserError(
        f"{root}: no {layout.folder}/ folder and no train.tsv (expected the GLUE root written by "
        f"download_glue_data.py, or its {layout.folder}/ folder)"
    )


def _read_split(path: Path, layout: _Layout, spec: TaskSpec) -> list[Example]:
    require_file(path, f"{spec.display}'s {path.name} in the layout of download_glue_data.py")
    rows = read_tsv(path, columns=layout.no_header)
    return examples_from_rows(rows, layout.text_columns, layout.label_column, spec)


def load_glue_folder(task: str, root: str | Path) -> TaskData:
    """Load GLUE task ``task`` from a local folder (see the module docstring for the layout).

    Args:
        task: ``cola``, ``sst2``, ``mrpc``, ``qqp``, ``stsb``, ``mnli``, ``qnli``, ``rte``, ``wnli``.
        root: the GLUE root (holding ``SST-2/`` …) or the task's folder (holding ``train.tsv``).

    Returns:
        The task's train split and dev split(s) (``matched`` and ``mismatched`` for MNLI).
    """
    spec, layout = glue_spec(task), _LAYOUTS[task]
    folder = _task_folder(Path(root), layout)
    if task == "mrpc" and not (folder / "train.tsv").is_file() and (folder / _MSR_TRAIN).is_file():
        train, dev, notes = _load_msr(folder, layout, spec)
        return TaskData(task, train, {"dev": dev}, _labels(spec), spec, notes=notes)
    train = _read_split(folder / "train.tsv", layout, spec)
    dev = {split: _read_split(folder / name, layout, spec) for split, name in layout.dev_files}
    return TaskData(task, train, dev, _labels(spec), spec)


def _labels(spec: TaskSpec) -> list[str] | None:
    return None if spec.labels is None else list(spec.labels)


def _load_msr(folder: Path, layout: _Layout, spec: TaskSpec) -> tuple[list[Example], list[Example], list[str]]:
    """MRPC from Microsoft's original files, split as ``download_glue_data.py`` does.

    With ``dev_ids.tsv`` (``#1 ID<TAB>#2 ID`` per line, no header) its pairs are carved out of
    ``msr_paraphrase_train.txt`` as the dev set; without it ``msr_paraphrase_test.txt`` (which
    has labels) is the dev set.
    """
    train_path = folder / _MSR_TRAIN
    rows = read_tsv(train_path)
    ids = (rows.index("#1 ID"), rows.index("#2 ID"))
    all_rows = list(rows.rows)
    ids_path = folder / _MSR_DEV_IDS
    if not ids_path.is_file():
        dev_path = require_file(folder / _MSR_TEST, f"MRPC's dev set: {_MSR_DEV_IDS} or {_MSR_TEST}")
        train = examples_from_rows(Rows(train_path, rows.columns, iter(all_rows), rows.header_line),
                                   layout.text_columns, layout.label_column, spec)
        dev = _read_split(dev_path, layout, spec)
        return train, dev, [f"MRPC: no {_MSR_DEV_IDS}, so {_MSR_TEST} is the dev set"]
    dev_ids = set()
    for lineno, fields in read_tsv(ids_path, columns=("#1 ID", "#2 ID")).rows:
        dev_ids.add((fields[0].strip(), fields[1].strip()))
    train = examples_from_rows(
        Rows(train_path, rows.columns, iter(all_rows), rows.header_line),
        layout.text_columns, layout.label_column, spec,
    )
    is_dev = [(f[ids[0]].strip(), f[ids[1]].strip()) in dev_ids for _, f in all_rows]
    dev = [e for e, d in zip(train, is_dev) if d]
    train = [e for e, d in zip(train, is_dev) if not d]
    if not dev:
        raise UserError(f"{ids_path}:1: none of its id pairs is in {train_path} (expected MRPC's dev pair ids)")
    if not train:
        raise UserError(f"{train_path}:{rows.header_line + 1}: every pair is listed in {ids_path}; no training examples")
    return train, dev, [f"MRPC: {len(dev)} dev pairs carved out of {_MSR_TRAIN} by {_MSR_DEV_IDS}"]


def load_glue_hub(task: str, repo: str = "nyu-mll/glue") -> TaskData:
    """Load GLUE task ``task`` with ``datasets.load_dataset(repo, task)``.

    Raises:
        UserError: when the hub (or the dataset) cannot be reached, naming the way out: a local
            GLUE folder.
    """
    spec, layout = glue_spec(task), _LAYOUTS[task]
    import datasets  # lazy: heavy import

    source = f"hf:{repo}"
    try:
        dsd = datasets.load_dataset(repo, task)
    except Exception as e:  # noqa: BLE001 - connection, offline mode, missing repo: all one message
        reason = (str(e).strip().splitlines() or [""])[0][:200]
        raise UserError(
            f"{source}: cannot load config {task!r} ({type(e).__name__}: {reason}); without access to the "
            f"Hugging Face hub, download GLUE with download_glue_data.py and pass its folder instead"
        ) from None

    def split(hub_split: str) -> list[Example]:
        if hub_split not in dsd:
            raise UserError(f"{source} ({task}): no split {hub_split!r} (has {', '.join(dsd)})")
        ds = dsd[hub_split]
        where = f"{source} ({task}) split {hub_split}"
        missing = [c for c in (*layout.hub_text, "label") if c not in ds.column_names]
        if missing:
            raise UserError(f"{where}: no column {missing[0]!r} (columns: {', '.join(ds.column_names)})")
        id_map = _hub_label_map(ds.features.get("label"), spec, where)
        out = []
        for n, row in enumerate(ds):
            raw = row["label"]
            if spec.labels is None:
                label = float(raw)
            elif id_map is not None and raw in id_map:
                label = id_map[raw]
            elif id_map is None and isinstance(raw, int) and 0 <= raw < len(spec.labels):
                label = raw
            else:
                raise UserError(f"{where} row {n}: label {raw!r} is not one of {spec.name}'s label ids "
                                f"(0..{len(spec.labels) - 1})")
            texts = [row[c] for c in layout.hub_text]
            out.append(Example(n, texts[0], texts[1] if len(texts) > 1 else None, label))
        if not out:
            raise UserError(f"{where}: no examples")
        return out

    return TaskData(task, split("train"), {name: split(s) for name, s in layout.hub_dev}, _labels(spec), spec)


def _hub_label_map(feature, spec: TaskSpec, where: str) -> dict[int, int] | None:
    """Map the hub's class ids to ours by name when the label column is a ClassLabel."""
    names = getattr(feature, "names", None)
    if spec.labels is None or names is None:
        return None
    unknown = [n for n in names if n not in spec.labels]
    if unknown:
        raise UserError(f"{where}: label name {unknown[0]!r} is not one of {spec.name}'s labels "
                        f"({', '.join(spec.labels)})")
    return {i: spec.labels.index(n) for i, n in enumerate(names)}


def load_glue(task: str, data: str | Path | None = None) -> TaskData:
    """Load a GLUE task from ``data``: a local GLUE folder, ``hf:REPO``, or ``None`` (= ``hf:nyu-mll/glue``)."""
    if data is None:
        return load_glue_hub(task)
    if isinstance(data, str) and data.startswith("hf:"):
        return load_glue_hub(task, data[3:] or "nyu-mll/glue")
    return load_glue_folder(task, data)
