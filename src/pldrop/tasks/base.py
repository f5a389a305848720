"""The types every fine-tuning task is loaded into: :class:`Example`, :class:`TaskData`, :class:`TaskSpec`.

A task is described once by a :class:`TaskSpec` (labels, metrics, dev splits); each loader
(GLUE folder, ``hf:`` hub dataset, offline recipe, user file) returns a :class:`TaskData` holding
the examples. Labels are stored as indices into ``TaskData.labels`` (classification) or as floats
(regression, ``labels is None``), so the training loop never sees label strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Example:
    """One labelled example.

    Args:
        index: 0-based position of the example among the data rows of its source (the file's
            rows after the header, the hub split's rows, or the recipe's source file), so a
            prediction can be traced back to the line it came from.
        text_a: the first (or only) text.
        text_b: the second text of a sentence-pair task, else ``None``.
        label: an index into :attr:`TaskData.labels` (classification) or a float (regression).
    """

    index: int
    text_a: str
    text_b: str | None
    label: int | float


@dataclass(frozen=True)
class TaskSpec:
    """What a task is: its labels, its metrics and how its dev set is split.

    Args:
        name: the name used on the command line and as the key of results (``"sst2"``).
        display: the name shown in tables (``"SST-2"``).
        labels: class names; the class id is the position. ``None`` means regression.
            For GLUE they follow the ``nyu-mll/glue`` hub dataset, so ids agree across sources.
        metrics: the metrics computed on each dev split, e.g. ``("f1", "accuracy")``.
        primary: the flat metric keys (see :meth:`metric_key`) whose mean is the task's score,
            used to choose the best checkpoint and for the table's Average column.
        dev_splits: ``(split, suffix)`` pairs. A single split has suffix ``""`` and its metric
            keys are the bare metric names; MNLI has ``("matched", "m")`` and
            ``("mismatched", "mm")``, giving keys ``accuracy_m`` and ``accuracy_mm``.
        positive_label: the class counted as positive by binary F1 (MRPC, QQP, sms-spam).
        raw_labels: the label strings as written in the task's files, aligned with ``labels``
            (GLUE's files write ``0``/``1`` where the hub has names); ``None`` = same as labels.
    """

    name: str
    display: str
    labels: tuple[str, ...] | None
    metrics: tuple[str, ...]
    primary: tuple[str, ...]
    dev_splits: tuple[tuple[str, str], ...] = (("dev", ""),)
    positive_label: str | None = None
    raw_labels: tuple[str, ...] | None = None

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    def metric_key(self, split: str, metric: str) -> str:
        """The flat key of ``metric`` on dev split ``split``.

        >>> MNLI = TaskSpec("mnli", "MNLI", ("a", "b"), ("accuracy",), ("accuracy_m",),
        ...                 (("matched", "m"), ("mismatched", "mm")))
        >>> MNLI.metric_key("mismatched", "accuracy")
        'accuracy_mm'
        """
        suffixes = dict(self.dev_splits)
        if split not in suffixes:
            raise KeyError(f"task {self.name} has no dev split {split!r} (has {list(suffixes)})")
        return f"{metric}_{suffixes[split]}" if suffixes[split] else metric

    def metric_keys(self) -> list[str]:
        """Every flat metric key of the task, in table order (split, then metric)."""
        return [self.metric_key(s, m) for s, _ in self.dev_splits for m in self.metrics]

    def file_labels(self) -> tuple[str, ...]:
        """The label strings as they appear in the task's files."""
        assert self.labels is not None
        return self.raw_labels if self.raw_labels is not None else self.labels


@dataclass
class TaskData:
    """A loaded task: examples of every split plus what is needed to train and score it.

    Args:
        name: the task's name (the results key).
        train: the training examples.
        dev: the evaluation splits by name; one (``"dev"``) for most tasks, two for MNLI
            (``"matched"``, ``"mismatched"``).
        labels: class names (label ``i`` of an :class:`Example` is ``labels[i]``); ``None`` for
            regression.
        spec: the task's :class:`TaskSpec` (pass it to :func:`pldrop.tasks.compute_metrics`).
        test: labelled held-out splits, when the source has them (the offline recipes);
            GLUE's test labels are hidden, so GLUE tasks have none.
        notes: one line per cleaning step worth telling the user (rows dropped, duplicates).
    """

    name: str
    train: list[Example]
    dev: dict[str, list[Example]]
    labels: list[str] | None
    spec: TaskSpec
    test: dict[str, list[Example]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def metric_names(self) -> list[str]:
        """The flat metric keys reported for this task (e.g. ``["accuracy_m", "accuracy_mm"]``)."""
        return self.spec.metric_keys()

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        """Output size of the classification head (1 for regression, as in HF models)."""
        return 1 if self.labels is None else len(self.labels)

    @property
    def is_pair(self) -> bool:
        """Whether examples carry a second text."""
        return any(e.text_b is not None for e in self.train[:1])
