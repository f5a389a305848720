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


@pytest.fixture(scope="module")
def tuned_depths(tmp_path_factory):
    """As `tuned`, with --downstream-depths 1 0.5: the tiny preset's 2 blocks cut to 1, fine-tuned too."""
    root = tmp_path_factory.mktemp("dsd")
    data = write_keyword_task(root / "data" / "kw", n_train=16, n_dev=6)
    mp = pytest.MonkeyPatch()
    mp.setenv("PLDROP_CACHE", str(root / "cache"))
    try:
        assert main(["compare", *M, "--out", str(root / "cmp"), "--downstream", "kw", "--downstream-data",
                     str(data.parent), "--downstream-max-steps", "2", "--downstream-depths", "1", "0.5"]) == 0
    finally:
        mp.undo()
    return root / "cmp"


def test_depths_scores_are_the_cut_models_own(tuned_depths):
    from transformers import AutoConfig

    block = json.loads((tuned_depths / "results.json").read_text())["downstream"]["kw"]
    for run, score in block["runs"].items():  # the full depth where it always was
        assert score == json.loads((tuned_depths / "downstream" / run / "kw" / "results.json").read_text())["score"]
    cut = block["by_depth"]["0.5"]
    assert cut["blocks"] == 1 and set(cut["runs"]) == {"preln", "pld"}
    for run, score in cut["runs"].items():
        folder = tuned_depths / "downstream" / run / "depth-1"
        assert score == json.loads((folder / "tuned" / "model" / "kw" / "results.json").read_text())["score"]
        assert isinstance(score, float) and cut["arms"][run]["mean"] == score
        assert AutoConfig.from_pretrained(folder / "model").num_hidden_layers == 1
        assert json.loads((folder / "model" / "shrink.json").read_text())["kept"] == [0]
    report = (tuned_depths / "report.md").read_text()
    assert "### kw (accuracy) at reduced depth" in report
    section = report.split("### kw (accuracy) at reduced depth", 1)[1]
    assert "| arm | full | 0.5 (1 block) |" in section
    row = next(ln for ln in section.splitlines() if ln.startswith("| Pre-LN + PLD"))
    assert f"{100 * cut['runs']['pld']:.1f}" in row and f"{100 * block['runs']['pld']:.1f}" in row
    assert "Pre-LN + PLD keeps of its full-depth kw score:" in report
    assert json.loads((tuned_depths / "compare.json").read_text())["downstream"]["depths"] == [1.0, 0.5]


def test_depths_cut_models_are_recorded_as_pldrops(tuned_depths):
    """What the cut writes is in the comparison's manifest: --overwrite may replace it."""
    from pldrop.train.rundir import MANIFEST

    manifest = (tuned_depths / MANIFEST).read_text()
    for run in ("preln", "pld"):
        assert f"downstream/{run}/depth-1/model/config.json" in manifest
        assert f"downstream/{run}/depth-1/model/shrink.json" in manifest


def test_depths_report_only_renders_the_same(tuned_depths, tmp_path, monkeypatch):
    import pldrop.train.downstream as ds

    def boom(*a, **k):
        raise AssertionError("--report-only fine-tuned")

    monkeypatch.setattr(ds, "fine_tune", boom)
    monkeypatch.setattr("pldrop.tasks.finetune.finetune", boom)
    copy = tmp_path / "cmp"
    shutil.copytree(tuned_depths, copy)
    before = (copy / "report.md").read_text()
    assert main(["compare", "--report-only", "--out", str(copy)]) == 0
    assert (copy / "report.md").read_text() == before
    assert (json.loads((copy / "results.json").read_text())["downstream"]
            == json.loads((tuned_depths / "results.json").read_text())["downstream"])


def test_depths_time_ratio_from_the_depth_curves(tuned_depths):
    """The table's time column comes from results.json's depth block when there is one."""
    from pldrop.reporting.compare_downstream import render_downstream

    block = json.loads((tuned_depths / "results.json").read_text())["downstream"]
    depth = {"models": {"pld": {"num_layers": 2, "points": [{"keep": 2, "time_ratio": 1.0},
                                                             {"keep": 1, "time_ratio": 0.55}]}}}
    lines = render_downstream(block, ["preln", "pld"], {"pld": "PLD", "preln": "Pre-LN"}, depth)
    row = next(ln for ln in lines if ln.startswith("| PLD"))
    assert "0.55× time" in row and "1.00× time" in row
    assert "×" not in next(ln for ln in lines if ln.startswith("| Pre-LN"))


def test_damaged_by_depth_block_is_one_line(tuned_depths, tmp_path, capsys):
    copy = tmp_path / "cmp"
    shutil.copytree(tuned_depths, copy)
    res = json.loads((copy / "results.json").read_text())
    res["downstream"]["kw"]["by_depth"]["0.5"]["runs"]["pld"] = "high"
    (copy / "results.json").write_text(json.dumps(res))
    _exit2(capsys, ["compare", "--report-only", "--out", str(copy)], "downstream.kw.by_depth.0.5.runs.pld")


def test_depths_merge_averages_over_seeds(tuned_depths, tmp_path, monkeypatch):
    monkeypatch.setenv("PLDROP_CACHE", str(tmp_path / "cache"))
    data = tuned_depths.parent / "data"
    assert main(["compare", *M, "--out", str(tmp_path / "s1"), "--seed", "1", "--downstream", "kw",
                 "--downstream-data", str(data), "--downstream-max-steps", "2", "--downstream-depths", "0.5"]) == 0
    out = tmp_path / "merged"
    assert main(["compare", "--merge", str(tuned_depths), str(tmp_path / "s1"), "--out", str(out)]) == 0
    got = json.loads((out / "results.json").read_text())["downstream"]["kw"]["by_depth"]["0.5"]
    s0 = json.loads((tuned_depths / "results.json").read_text())["downstream"]["kw"]["by_depth"]["0.5"]["runs"]
    s1 = json.loads((tmp_path / "s1" / "results.json").read_text())["downstream"]["kw"]["by_depth"]["0.5"]["runs"]
    assert got["blocks"] == 1
    assert got["runs"] == {"preln-s0": s0["preln"], "pld-s0": s0["pld"], "preln-s1": s1["preln"], "pld-s1": s1["pld"]}
    assert got["arms"]["pld"]["n"] == 2 and got["arms"]["pld"]["mean"] == pytest.approx((s0["pld"] + s1["pld"]) / 2)
    assert "at reduced depth" in (out / "report.md").read_text()
