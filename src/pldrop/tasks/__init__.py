"""Fine-tuning tasks: GLUE (local folder or hub), offline recipes, your own files; metrics; tables.

Typical use::

    data = load_task("mnli", "glue_data/")        # or "hf:nyu-mll/glue", "trec6", your files
    data.train[0]                                 # Example(index, text_a, text_b, label)
    data.labels, data.num_labels, data.notes
    scores = evaluate_splits(data.spec, {split: (predictions, gold) for split in data.dev})
    task_score(data.spec, scores)                 # one number to pick the best checkpoint
    lr_grid(128)                                  # default fine-tuning rates for a width: (1e-4, 5e-4, 2e-3)
    write_table({"model": {"mnli": {k: [v] for k, v in scores.items()}}}, "runs/report")
"""

from pldrop.tasks.base import Example, TaskData, TaskSpec
from pldrop.tasks.lr import default_lrs, lr_grid
from pldrop.tasks.metrics import compute_metrics, evaluate_splits, primary_metric, task_score
from pldrop.tasks.registry import TASKS, get_spec, load_task
from pldrop.tasks.table import format_table, summarize, write_table

__all__ = [
    "TASKS",
    "Example",
    "TaskData",
    "TaskSpec",
    "compute_metrics",
    "default_lrs",
    "evaluate_splits",
    "format_table",
    "get_spec",
    "load_task",
    "lr_grid",
    "primary_metric",
    "summarize",
    "task_score",
    "write_table",
]
