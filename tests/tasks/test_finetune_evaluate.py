"""`pldrop evaluate`: every (model, task, seed) fine-tuned, then one GLUE-style table."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pldrop.cli import main
from pldrop.tasks.cli_evaluate import model_names

from .test_finetune import keyword_rows, make_tiny_model, one_thread, write_keyword_task  # noqa: F401  (fixture)


def test_model_names_are_basenames_made_unique():
    assert model_names(["runs/pld", "runs/baseline"]) == ["pld", "baseline"]
    assert model_names(["x/a/final", "y/a/final", "z/b/final"]) == ["x-a-final", "y-a-final", "b-final"]
    assert model_names(["runs/pld", "runs/pld/"]) == ["pld", "pld-2"]


def test_evaluate_writes_table_of_models_by_task_metrics(tmp_path, capsys):
    a = make_tiny_model(tmp_path / "a" / "model")
    b = make_tiny_model(tmp_path / "b" / "model", arch="roberta-prelayernorm")
    data = tmp_path / "tasks"
    write_keyword_task(data / "kw", n_train=40, n_dev=10)
    shutil.copy(data / "kw" / "dev.tsv", data / "kw" / "test.tsv")  # a labelled test split
    (data / "score").mkdir()
    for name, seed in (("train", 1), ("dev", 3)):
        rows = [f"{t}\t{4.5 if y == 'pos' else 1.25}\n" for t, y in keyword_rows(20, seed)]
        (data / "score" / f"{name}.tsv").write_text("text\tlabel\n" + "".join(rows))

    out = tmp_path / "eval"
    argv = ["evaluate", "--models", str(a), str(b), "--tasks", "kw", "score", "--data", str(data), "--out", str(out),
            "--seeds", "1", "2", "--max-steps", "3", "--batch-size", "8", "--lr", "1e-3", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| Model | kw acc | kw macro-F1 | score Pearson | score Spearman | Average |" in printed

    table = json.loads((out / "table.json").read_text())
    assert [(c["task"], c["metric"]) for c in table["columns"]] == [
        ("kw", "accuracy"), ("kw", "f1_macro"), ("score", "pearson"), ("score", "spearman")]
    assert list(table["models"]) == ["a-model", "b-model"]
    for name, arch in (("a-model", "BertFor"), ("b-model", "RobertaPreLayerNormFor")):
        row = table["models"][name]
        for task in ("kw", "score"):
            results = json.loads((out / name / task / "results.json").read_text())
            assert results["architecture"].startswith(arch) and results["seeds"] == [1, 2]
            for key, cell in row["cells"][task].items():
                values = [results["per_seed"][s]["metrics"][key] for s in ("1", "2")]
                assert cell["values"] == pytest.approx(values) and cell["n"] == 2
                assert cell["std"] == pytest.approx(np.std(values, ddof=1))
        scores = [row["cells"]["kw"]["accuracy"]["mean"],
                  np.mean([row["cells"]["score"][k]["mean"] for k in ("pearson", "spearman")])]
        assert row["average"] == pytest.approx(np.mean(scores))
    md = (out / "table.md").read_text().splitlines()
    assert md[2].startswith("| a-model | ") and md[3].startswith("| b-model | ") and "±" in md[2]
    test_table = json.loads((out / "test" / "table.json").read_text())  # only kw has a test split
    assert [c["task"] for c in test_table["columns"]] == ["kw", "kw"]
    assert list(test_table["models"]) == ["a-model", "b-model"]

    # --resume keeps finished runs (same settings) and rewrites the same table
    before = (out / "table.json").read_text()
    assert main([*argv, "--resume"]) == 0
    assert printed.count("fine-tuning") == 4 and capsys.readouterr().out.count("kept the finished run") == 4
    assert (out / "table.json").read_text() == before
    assert main([*argv[:-3], "--lr", "5e-4", "--no-progress", "--resume"]) == 2
    assert "was fine-tuned with lr=0.001, not 0.0005" in capsys.readouterr().err
