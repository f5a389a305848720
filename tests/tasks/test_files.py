"""Your own task from CSV, TSV or JSON-lines files."""

from __future__ import annotations

import json

import pytest

from pldrop.errors import UserError
from pldrop.tasks import compute_metrics, load_task


def triples(examples):
    return [(e.text_a, e.text_b, e.label) for e in examples]


def test_csv_folder_with_quoted_fields_and_word_labels(tmp_path):
    (tmp_path / "train.csv").write_text(
        'a,b,y\n"hello, world","he said ""hi""",pos\nplain,"two\nlines",neg\nx,y,pos\n')
    (tmp_path / "validation.csv").write_text('b,a,y\nq,p,neg\n')  # columns by name, any order
    data = load_task("mine", tmp_path, text_columns=["a", "b"], label_column="y")
    assert data.name == "mine" and data.labels == ["neg", "pos"]
    assert triples(data.train) == [("hello, world", 'he said "hi"', 1), ("plain", "two\nlines", 0), ("x", "y", 1)]
    assert triples(data.dev["dev"]) == [("p", "q", 0)]
    assert data.metric_names == ["accuracy", "f1_macro"]
    assert compute_metrics(data.spec, [1, 0], [1, 1]) == {"accuracy": 0.5, "f1_macro": pytest.approx(1 / 3)}


def test_tsv_two_paths_integer_labels_are_classes_sorted_numerically(tmp_path):
    train, dev = tmp_path / "tr.tsv", tmp_path / "de.tsv"
    train.write_text('text\tlabel\nsay "what\t10\nb\t2\nc\t2\n')
    dev.write_text('text\tlabel\nd\t10\n')
    data = load_task("t", f"{train},{dev}")
    assert data.labels == ["2", "10"]
    assert triples(data.train) == [('say "what', None, 1), ("b", None, 0), ("c", None, 0)]
    assert load_task("t", [train, dev]).labels == ["2", "10"]


def test_jsonl_float_labels_are_a_regression_unless_told_otherwise(tmp_path):
    rows = [{"s": "a", "score": 0.5}, {"s": "b", "score": 3}, {"s": "c", "score": "1.25"}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "dev.jsonl").write_text(json.dumps({"s": "d", "score": 0.5}) + "\n")
    (tmp_path / "test.jsonl").write_text(json.dumps({"s": "e", "score": 3}) + "\n")
    data = load_task("reg", tmp_path, text_columns=["s"], label_column="score")
    assert data.is_regression and data.metric_names == ["pearson", "spearman"]
    assert [e.label for e in data.train] == [0.5, 3.0, 1.25]
    assert [e.label for e in data.test["test"]] == [3.0]
    forced = load_task("reg", tmp_path, text_columns=["s"], label_column="score", regression=False)
    assert forced.labels == ["0.5", "1.25", "3"]


def test_integer_labels_auto_is_classification_and_regression_true_reads_numbers(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 0}\n')
    (tmp_path / "dev.jsonl").write_text('{"text": "c", "label": "1"}\n')
    data = load_task("c", tmp_path)
    assert data.labels == ["0", "1"] and [e.label for e in data.dev["dev"]] == [1]
    assert load_task("c", tmp_path, regression=True).dev["dev"][0].label == 1.0


def _msg(excinfo) -> str:
    assert "\n" not in str(excinfo.value)
    return str(excinfo.value)


def test_errors_name_file_and_line(tmp_path):
    train, dev = tmp_path / "train.csv", tmp_path / "dev.csv"
    train.write_text("text,label\na,x\nb,y\n")
    dev.write_text("text,label\nc,x\nd,z\n")
    with pytest.raises(UserError) as e:
        load_task("f", tmp_path)
    assert f"{dev}:3:" in _msg(e) and "'z'" in _msg(e) and "does not occur in the train file" in _msg(e)

    dev.write_text("text,label\nc,x,extra\n")
    with pytest.raises(UserError) as e:
        load_task("f", tmp_path)
    assert f"{dev}:2:" in _msg(e) and "expected 2 comma-separated fields" in _msg(e)

    dev.write_text("text\nc\n")
    with pytest.raises(UserError) as e:
        load_task("f", tmp_path)
    assert f"{dev}:1:" in _msg(e) and "no column 'label'" in _msg(e)

    dev.write_text("text,label\n")
    with pytest.raises(UserError) as e:
        load_task("f", tmp_path)
    assert f"{dev}:2:" in _msg(e) and "no examples" in _msg(e)

    dev.unlink()
    (tmp_path / "dev.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "b"}\n')
    with pytest.raises(UserError) as e:
        load_task("f", tmp_path)
    assert f"{tmp_path / 'dev.jsonl'}:2:" in _msg(e) and "no key 'label'" in _msg(e)


def test_regression_label_that_is_not_a_number(tmp_path):
    (tmp_path / "train.tsv").write_text("text\tlabel\na\t0.5\nb\t1.5\n")
    (tmp_path / "dev.tsv").write_text("text\tlabel\nc\t0.5\nd\thigh\n")
    with pytest.raises(UserError) as e:
        load_task("f", tmp_path)
    assert f"{tmp_path / 'dev.tsv'}:3:" in _msg(e) and "'high'" in _msg(e)


def test_layout_errors(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\na,x\nb,y\n")
    with pytest.raises(UserError, match=r"dev\.\*: file not found"):
        load_task("f", tmp_path)
    with pytest.raises(UserError, match="a dev file is needed too"):
        load_task("f", tmp_path / "train.csv")
    with pytest.raises(UserError, match="unknown task 'f' without data"):
        load_task("f")
    with pytest.raises(UserError, match="offline recipe"):
        load_task("trec6", tmp_path)
