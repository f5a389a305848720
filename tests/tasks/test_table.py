"""The GLUE-style table: exact markdown, and the JSON beside it."""

from __future__ import annotations

import json

import pytest

from pldrop.tasks import TaskSpec, write_table

RESULTS = {
    "bert": {
        "cola": {"mcc": [0.5]},
        "mnli": {"accuracy_m": [0.80, 0.82], "accuracy_mm": [0.81, 0.81]},
        "mrpc": {"f1": [0.9], "accuracy": [0.84]},
        "stsb": {"pearson": [0.88, 0.86, 0.87], "spearman": [0.87, 0.85, 0.86]},
    },
    "bert+pld": {
        "mrpc": {"accuracy": [0.86], "f1": [0.92]},  # metric order in the input does not matter
        "cola": {"mcc": [0.44]},
    },
}

EXPECTED_MD = """\
| Model | CoLA MCC | MRPC F1 | MRPC acc | STS-B Pearson | STS-B Spearman | MNLI-m acc | MNLI-mm acc | Average |
|:--|--:|--:|--:|--:|--:|--:|--:|--:|
| bert | 50.0 | 90.0 | 84.0 | 87.0 ± 1.0 | 86.0 ± 1.0 | 81.0 ± 1.4 | 81.0 ± 0.0 | 76.1 |
| bert+pld | 44.0 | 92.0 | 86.0 | – | – | – | – | 66.5† |

Scores ×100; mean ± sample std over seeds where there are several. Average: mean over tasks of each task's \
primary metric(s), averaged within the task (GLUE's rule).
† over the tasks this model has results for only.
"""


def test_markdown_table_is_exact(tmp_path):
    md, js = write_table(RESULTS, tmp_path / "out")
    assert md == tmp_path / "out" / "table.md" and js.name == "table.json"
    assert md.read_text(encoding="utf-8") == EXPECTED_MD
    # bert: CoLA 50, MRPC (90 + 84) / 2 = 87, STS-B (87 + 86) / 2 = 86.5, MNLI (81 + 81) / 2 = 81
    assert (50 + 87 + 86.5 + 81) / 4 == pytest.approx(76.125)


def test_json_holds_raw_values_means_stds_and_scores(tmp_path):
    _, js = write_table(RESULTS, tmp_path)
    table = json.loads(js.read_text())
    assert [c["label"] for c in table["columns"]][:3] == ["CoLA MCC", "MRPC F1", "MRPC acc"]
    bert = table["models"]["bert"]
    cell = bert["cells"]["mnli"]["accuracy_m"]
    assert cell["values"] == [0.80, 0.82] and cell["n"] == 2
    assert cell["mean"] == pytest.approx(0.81) and cell["std"] == pytest.approx(0.0141421356)
    assert bert["cells"]["cola"]["mcc"]["std"] is None
    assert bert["scores"] == pytest.approx({"cola": 0.5, "mrpc": 0.87, "stsb": 0.865, "mnli": 0.81})
    assert bert["average"] == pytest.approx(0.76125) and bert["complete"] is True
    assert table["models"]["bert+pld"]["complete"] is False


def test_custom_tasks_use_their_spec_or_all_their_metrics(tmp_path):
    spec = TaskSpec("mine", "Mine", ("a", "b"), ("accuracy", "f1_macro"), ("accuracy",))
    results = {"m": {"mine": {"f1_macro": [0.5], "accuracy": [0.7]}, "other": {"x": [0.2], "y": [0.4]}}}
    md, js = write_table(results, tmp_path, specs={"mine": spec})
    header = md.read_text().splitlines()[0]
    assert header == "| Model | Mine acc | Mine macro-F1 | other x | other y | Average |"
    assert md.read_text().splitlines()[2] == "| m | 70.0 | 50.0 | 20.0 | 40.0 | 50.0 |"  # (70 + 30) / 2
