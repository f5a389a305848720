"""GLUE loaders: every official file format, both MRPC forms, MNLI's two dev sets, the hub."""

from __future__ import annotations

import pytest

from pldrop.errors import UserError
from pldrop.tasks import load_task
from pldrop.tasks.glue import GLUE_TASKS, load_glue_folder

from .glue_fixtures import EXPECTED, write_glue


def triples(examples):
    return [(e.text_a, e.text_b, e.label) for e in examples]


@pytest.fixture(scope="module")
def glue_root(tmp_path_factory):
    return write_glue(tmp_path_factory.mktemp("glue"))


@pytest.mark.parametrize("task", list(GLUE_TASKS))
def test_folder_loader_returns_the_written_examples(glue_root, task):
    data = load_task(task, glue_root)
    assert data.name == task
    assert triples(data.train) == EXPECTED[task]["train"]
    assert {split: triples(ex) for split, ex in data.dev.items()} == {
        k: v for k, v in EXPECTED[task].items() if k != "train"
    }
    assert [e.index for e in data.train] == list(range(len(data.train)))
    assert data.test == {}


def test_quotes_are_data_not_csv_quoting(glue_root):
    cola = load_task("cola", glue_root)
    assert cola.train[2].text_a == 'He said "stop and left.'  # an unbalanced quote swallows nothing
    assert len(cola.train) == 3
    assert load_task("stsb", glue_root).dev["dev"][1].text_a == '"A woman is dancing.'


def test_task_folder_itself_is_accepted(glue_root):
    assert triples(load_task("rte", glue_root / "RTE").train) == EXPECTED["rte"]["train"]


def test_labels_specs_and_metric_names(glue_root):
    mnli = load_task("mnli", glue_root)
    assert mnli.labels == ["entailment", "neutral", "contradiction"]
    assert list(mnli.dev) == ["matched", "mismatched"]
    assert mnli.metric_names == ["accuracy_m", "accuracy_mm"]
    stsb = load_task("stsb", glue_root)
    assert stsb.labels is None and stsb.is_regression and stsb.num_labels == 1
    assert stsb.train[1].label == pytest.approx(3.8)
    cola = load_task("cola", glue_root)
    assert cola.labels == ["unacceptable", "acceptable"] and cola.metric_names == ["mcc"]
    assert load_task("wnli", glue_root).labels == ["not_entailment", "entailment"]
    assert load_task("mrpc", glue_root).metric_names == ["f1", "accuracy"]


def test_mrpc_original_files_with_dev_ids(tmp_path):
    root = write_glue(tmp_path, mrpc="msr")  # BOM + CRLF, dev carved out by dev_ids.tsv
    data = load_task("mrpc", root)
    assert triples(data.train) == EXPECTED["mrpc"]["train"]
    assert triples(data.dev["dev"]) == EXPECTED["mrpc"]["dev"]
    assert data.dev["dev"][0].index == 2  # its row in msr_paraphrase_train.txt
    assert "dev_ids.tsv" in data.notes[0]


def test_mrpc_original_files_without_dev_ids_use_the_test_file(tmp_path):
    root = write_glue(tmp_path, mrpc="msr-no-ids")
    data = load_task("mrpc", root)
    assert len(data.train) == 3
    assert [e.text_b for e in data.dev["dev"]] == [
        "Current Chief Operating Officer Mike Butcher and Group Chief Financial Officer Alex Arena will report to So ."
    ]


def _error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_wrong_field_count_names_file_and_line(tmp_path):
    root = write_glue(tmp_path)
    path = root / "SST-2" / "dev.tsv"
    path.write_text("sentence\tlabel\ngood .\t1\nbad\t.\t0\n")
    with pytest.raises(UserError) as e:
        load_glue_folder("sst2", root)
    assert f"{path}:3:" in _error(e) and "expected 2 tab-separated fields" in _error(e) and "got 3" in _error(e)


def test_missing_column_names_file_and_header_line(tmp_path):
    root = write_glue(tmp_path)
    path = root / "QNLI" / "train.tsv"
    path.write_text("index\tquestion\ttext\tlabel\n0\tq\ts\tentailment\n")
    with pytest.raises(UserError) as e:
        load_glue_folder("qnli", root)
    assert f"{path}:1:" in _error(e) and "'sentence'" in _error(e)


def test_label_outside_the_task_names_file_and_line(tmp_path):
    root = write_glue(tmp_path)
    path = root / "RTE" / "dev.tsv"
    path.write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\tneutral\n")
    with pytest.raises(UserError) as e:
        load_glue_folder("rte", root)
    assert f"{path}:3:" in _error(e) and "'neutral'" in _error(e) and "entailment, not_entailment" in _error(e)


def test_bad_regression_score_names_file_and_line(tmp_path):
    root = write_glue(tmp_path)
    path = root / "STS-B" / "train.tsv"
    lines = path.read_text().splitlines()
    lines[2] = lines[2].rsplit("\t", 1)[0] + "\tfive"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError) as e:
        load_glue_folder("stsb", root)
    assert f"{path}:3:" in _error(e) and "'five'" in _error(e)


def test_empty_split_names_file_and_line(tmp_path):
    root = write_glue(tmp_path)
    path = root / "MNLI" / "dev_mismatched.tsv"
    path.write_text(path.read_text().splitlines()[0] + "\n")  # header only
    with pytest.raises(UserError) as e:
        load_glue_folder("mnli", root)
    assert f"{path}:2:" in _error(e) and "no examples" in _error(e)
    cola = root / "CoLA" / "dev.tsv"
    cola.write_text("")
    with pytest.raises(UserError) as e:
        load_glue_folder("cola", root)
    assert f"{cola}:1:" in _error(e)


def test_missing_file_and_folder(tmp_path):
    root = write_glue(tmp_path)
    (root / "MNLI" / "dev_matched.tsv").unlink()
    with pytest.raises(UserError, match=r"dev_matched\.tsv: file not found"):
        load_glue_folder("mnli", root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no MRPC/ folder and no train.tsv"):
        load_glue_folder("mrpc", tmp_path / "empty")
    with pytest.raises(UserError, match="folder not found"):
        load_task("sst2", tmp_path / "nope")


# --- the hub ------------------------------------------------------------------------------


def test_hub_loader_maps_columns_splits_and_label_names(monkeypatch):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({
        "premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
        "label": datasets.ClassLabel(names=["entailment", "neutral", "contradiction"]),
        "idx": datasets.Value("int32"),
    })

    def split(rows):
        return datasets.Dataset.from_dict(
            {"premise": [r[0] for r in rows], "hypothesis": [r[1] for r in rows], "label": [r[2] for r in rows],
             "idx": list(range(len(rows)))}, features=features)

    calls = []

    def fake_load(repo, config):
        calls.append((repo, config))
        return datasets.DatasetDict({
            "train": split([("p0", "h0", 2), ("p1", "h1", 0)]),
            "validation_matched": split([("pm", "hm", 1)]),
            "validation_mismatched": split([("pmm", "hmm", 0)]),
            "test_matched": split([("t", "t", 0)]),
        })

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    data = load_task("mnli", "hf:nyu-mll/glue")
    assert calls == [("nyu-mll/glue", "mnli")]
    assert triples(data.train) == [("p0", "h0", 2), ("p1", "h1", 0)]
    assert {k: triples(v) for k, v in data.dev.items()} == {"matched": [("pm", "hm", 1)],
                                                           "mismatched": [("pmm", "hmm", 0)]}
    load_task("mnli")  # data=None means the hub
    assert calls[-1] == ("nyu-mll/glue", "mnli")


def test_unreachable_hub_is_a_one_line_user_error(monkeypatch):
    datasets = pytest.importorskip("datasets")

    def offline(repo, config):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UserError) as e:
        load_task("sst2", "hf:nyu-mll/glue")
    msg = _error(e)
    assert msg.startswith("hf:nyu-mll/glue: cannot load config 'sst2' (ConnectionError")
    assert "download_glue_data.py" in msg
