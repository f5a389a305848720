"""`pldrop compare --downstream`: every run's final model fine-tuned by `pldrop evaluate`, scores in the report."""

import json
import shutil

import pytest

from pldrop.cli import main

from .test_pretrain import CORPUS, _exit2

M = ["--preset", "tiny", "--max-steps", "4", "--eval-every", "2", "--no-progress", "data.vocab_size=400",
     "--corpus", CORPUS, "--arms", "preln", "pld", "--no-depth-curve"]


def write_keyword_task(folder, n_train, n_dev):
    """train.tsv / dev.tsv of a task a model can learn: the label is the word "alpha" or "beta" in the text."""
    folder.mkdir(parents=True)
    for name, n in (("train", n_train), ("dev", n_dev)):
        rows = [(f"the {('alpha', 'beta')[i % 2]} word is here {i}", ("pos", "neg")[i % 2]) for i in range(n)]
        (folder / f"{name}.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    return folder


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A finished 2-arm comparison fine-tuned on a tiny keyword task (own files, offline), 2 steps a run."""
    root = tmp_path_factory.mktemp("ds")
    data = write_keyword_task(root / "data" / "kw", n_train=16, n_dev=6)
    mp = pytest.MonkeyPatch()
    mp.setenv("PLDROP_CACHE", str(root / "cache"))
    try:
        assert main(["compare", *M, "--out", str(root / "cmp"), "--downstream", "kw", "--downstream-data",
                     str(data.parent), "--downstream-max-steps", "2"]) == 0
    finally:
        mp.undo()
    return root / "cmp"


def test_scores_are_the_fine_tuning_folders_own(tuned):
    res = json.loads((tuned / "results.json").read_text())
    block = res["downstream"]["kw"]
    assert set(block["runs"]) == {"preln", "pld"}
    for run, score in block["runs"].items():
        own = json.loads((tuned / "downstream" / run / "kw" / "results.json").read_text())
        assert score == own["score"] and isinstance(score, float)
        assert block["arms"][run]["mean"] == score and block["arms"][run]["n"] == 1
    assert block["diffs"]["pld"]["reference"] == "preln"
    assert block["diffs"]["pld"]["mean"] == pytest.approx(block["runs"]["pld"] - block["runs"]["preln"])
    report = (tuned / "report.md").read_text()
    assert "## Downstream" in report
    row = next(ln for ln in report.splitlines() if ln.startswith("| kw"))
    assert f"{100 * block['runs']['pld']:.1f}" in row and f"{100 * block['runs']['preln']:.1f}" in row
    assert "Pre-LN + PLD minus Pre-LN" in report
    assert json.loads((tuned / "compare.json").read_text())["downstream"]["tasks"] == ["kw"]


def test_report_only_renders_the_same_without_fine_tuning(tuned, tmp_path, monkeypatch):
    import pldrop.train.downstream as ds

    def boom(*a, **k):
        raise AssertionError("--report-only fine-tuned")

    monkeypatch.setattr(ds, "fine_tune", boom)
    monkeypatch.setattr("pldrop.tasks.finetune.finetune", boom)
    copy = tmp_path / "cmp"
    shutil.copytree(tuned, copy)
    before = (copy / "report.md").read_text()
    assert main(["compare", "--report-only", "--out", str(copy)]) == 0
    assert (copy / "report.md").read_text() == before
    assert json.loads((copy / "results.json").read_text())["downstream"] == \
        json.loads((tuned / "results.json").read_text())["downstream"]


def test_damaged_downstream_block_is_one_line(tuned, tmp_path, capsys):
    copy = tmp_path / "cmp"
    shutil.copytree(tuned, copy)
    res = json.loads((copy / "results.json").read_text())
    res["downstream"]["kw"]["runs"]["pld"] = "high"
    (copy / "results.json").write_text(json.dumps(res))
    _exit2(capsys, ["compare", "--report-only", "--out", str(copy)], "downstream.kw.runs.pld")


def test_overwrite_replaces_a_fine_tuned_comparison(tuned, tmp_path, monkeypatch):
    """The fine-tuning folders are recorded as pldrop's: --overwrite (without --downstream) replaces them."""
    monkeypatch.setenv("PLDROP_CACHE", str(tmp_path / "cache"))
    copy = tmp_path / "cmp"
    shutil.copytree(tuned, copy)
    assert main(["compare", *M, "--out", str(copy), "--overwrite"]) == 0
    assert not (copy / "downstream").exists()
    assert "downstream" not in json.loads((copy / "results.json").read_text())


def test_resume_during_fine_tuning_keeps_finished_pairs(tuned, tmp_path, monkeypatch):
    """A comparison killed while fine-tuning (report not written): --resume fine-tunes only what is missing."""
    import pldrop.tasks.finetune as ft

    monkeypatch.setenv("PLDROP_CACHE", str(tmp_path / "cache"))
    copy = tmp_path / "cmp"
    shutil.copytree(tuned, copy)
    (copy / "report.md").unlink()
    shutil.rmtree(copy / "downstream" / "pld")
    kept = (copy / "downstream" / "preln" / "kw" / "results.json").read_bytes()
    done = []
    real = ft.finetune
    monkeypatch.setattr(ft, "finetune", lambda model, *a, **k: done.append(model) or real(model, *a, **k))
    assert main(["compare", "--resume", "--out", str(copy), "--no-progress"]) == 0
    assert [p.rsplit("/", 1)[-1] for p in done] == ["pld"]
    assert (copy / "downstream" / "preln" / "kw" / "results.json").read_bytes() == kept
    assert set(json.loads((copy / "results.json").read_text())["downstream"]["kw"]["runs"]) == {"preln", "pld"}


def test_merge_carries_scores_and_averages_over_seeds(tuned, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PLDROP_CACHE", str(tmp_path / "cache"))
    data = tuned.parent / "data"
    assert main(["compare", *M, "--out", str(tmp_path / "s1"), "--seed", "1", "--downstream", "kw",
                 "--downstream-data", str(data), "--downstream-max-steps", "2"]) == 0
    out = tmp_path / "merged"
    assert main(["compare", "--merge", str(tuned), str(tmp_path / "s1"), "--out", str(out)]) == 0
    got = json.loads((out / "results.json").read_text())["downstream"]["kw"]
    s0 = json.loads((tuned / "results.json").read_text())["downstream"]["kw"]["runs"]
    s1 = json.loads((tmp_path / "s1" / "results.json").read_text())["downstream"]["kw"]["runs"]
    assert got["runs"] == {"preln-s0": s0["preln"], "pld-s0": s0["pld"], "preln-s1": s1["preln"], "pld-s1": s1["pld"]}
    assert got["arms"]["pld"]["n"] == 2 and got["arms"]["pld"]["mean"] == pytest.approx((s0["pld"] + s1["pld"]) / 2)
    assert "## Downstream" in (out / "report.md").read_text()
    res = json.loads((tmp_path / "s1" / "results.json").read_text())
    res["downstream"] = ["damaged"]
    (tmp_path / "s1" / "results.json").write_text(json.dumps(res))
    _exit2(capsys, ["compare", "--merge", str(tuned), str(tmp_path / "s1"), "--out", str(tmp_path / "m2")],
           "downstream is not a mapping of tasks")
