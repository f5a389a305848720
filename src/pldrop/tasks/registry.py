"""Every task pldrop knows by name, and :func:`load_task`, the one entry point for loading one.

``load_task(task, data)`` reads:

- a GLUE task (``cola``, ``sst2``, ``mrpc``, ``qqp``, ``stsb``, ``mnli``, ``qnli``, ``rte``,
  ``wnli``) from a local GLUE folder, or from ``hf:nyu-mll/glue`` (the default when ``data`` is
  ``None``);
- an offline recipe (``movie-polarity``, ``trec6``, ``sms-spam``, ``bbc-topic``; ``data`` must be
  ``None``);
- your own files for any other name, given ``data`` (see :mod:`pldrop.tasks.files`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pldrop.errors import UserError
from pldrop.tasks.base import TaskData, TaskSpec
from pldrop.tasks.glue import GLUE_TASKS, load_glue
from pldrop.tasks.recipes import RECIPES, load_recipe

TASKS: dict[str, TaskSpec] = {**GLUE_TASKS, **{name: r.spec for name, r in RECIPES.items()}}
"""The specs of the named tasks: GLUE in leaderboard order, then the offline recipes."""


def get_spec(task: str | TaskSpec) -> TaskSpec:
    """The :class:`TaskSpec` of a named task (a spec is returned as is).

    >>> get_spec("mnli").metric_keys()
    ['accuracy_m', 'accuracy_mm']
    """
    if isinstance(task, TaskSpec):
        return task
    try:
        return TASKS[task]
    except KeyError:
        raise UserError(f"unknown task {task!r} (expected one of {', '.join(TASKS)}, "
                        f"or a spec from the task's TaskData)") from None


def load_task(
    task: str,
    data: str | Path | Sequence[str | Path] | None = None,
    *,
    text_columns: Sequence[str] = ("text",),
    label_column: str = "label",
    regression: bool | None = None,
    cache_dir: str | Path | None = None,
) -> TaskData:
    """Load task ``task`` (see the module docstring for what ``data`` may be).

    Args:
        task: a GLUE task, a recipe, or a name of your choosing for your own files.
        data: GLUE folder or ``hf:REPO`` (GLUE); ``None`` (recipes); folder or two paths
            (your own files).
        text_columns, label_column, regression: for your own files only
            (:func:`pldrop.tasks.files.load_file_task`).
        cache_dir: the pldrop cache root, for recipes.
    """
    if task in GLUE_TASKS:
        return load_glue(task, data)  # type: ignore[arg-type]
    if task in RECIPES:
        if data is not None:
            raise UserError(f"{data}: task {task!r} is an offline recipe and reads no data files "
                            f"(drop --data, or name your own task something else)")
        return load_recipe(task, cache_dir)
    if data is None:
        raise UserError(f"unknown task {task!r} without data (expected one of {', '.join(TASKS)}, "
                        f"or your own files passed as data)")
    from pldrop.tasks.files import load_file_task

    return load_file_task(data, text_columns, label_column, regression, name=task)
