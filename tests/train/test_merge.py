"""`pldrop compare --merge`: seeds run as separate lockstep comparisons, joined into one report."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from pldrop.cli import main
from pldrop.train.analysis import compare_arms, read_metrics

from .test_pretrain import CORPUS, TINY, _exit2


@pytest.fixture(scope="module")
def groups(tmp_path_factory):
    """Two finished 2-arm comparisons of one recipe, seeds 0 and 1."""
    root = tmp_path_factory.mktemp("groups")
    mp = pytest.MonkeyPatch()
    mp.setenv("PLDROP_CACHE", str(root / "cache"))
    try:
        for seed in (0, 1):
            assert main(["compare", "--corpus", CORPUS, "--out", str(root / f"s{seed}"), *TINY, "--arms", "baseline",
                         "pld", "--seed", str(seed), "--max-steps", "4", "--eval-every", "2"]) == 0
    finally:
        mp.undo()
    return root / "s0", root / "s1"


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_merge_joins_seeds_as_seeds_would(tmp_path, groups, capsys):
    before = [_digest(g) for g in groups]
    out = tmp_path / "merged"
    assert main(["compare", "--merge", *map(str, groups), "--out", str(out)]) == 0
    assert [_digest(g) for g in groups] == before  # the groups are read, never written
    saved = json.loads((out / "compare.json").read_text())
    assert saved["arms"] == ["baseline", "pld"] and saved["seeds"] == [0, 1]
    assert saved["merged_from"] == [str(g) for g in groups]
    for seed, g in enumerate(groups):
        for arm in ("baseline", "pld"):
            assert (out / f"{arm}-s{seed}" / "metrics.jsonl").read_bytes() == (g / arm / "metrics.jsonl").read_bytes()
            assert not (out / f"{arm}-s{seed}" / "checkpoints").exists()  # small files only
    # the analysis is the two-seed analysis of the groups' own metrics
    res = json.loads((out / "results.json").read_text())
    recs = {a: [read_metrics(g / a / "metrics.jsonl") for g in groups] for a in ("baseline", "pld")}
    unis = [json.loads((g / "results.json").read_text())["analysis"]["unigram"] for g in groups]
    uni = {k: (unis[0][k] + unis[1][k]) / 2 for k in ("loss", "accuracy")}
    again = json.loads(json.dumps(compare_arms(recs, 2, unigram=uni)))
    assert res["analysis"]["seeds"] == 2
    assert res["analysis"]["arms"] == again["arms"] and res["analysis"]["curves"] == again["curves"]
    # each group's command and load are in the report, and the merge is rendered again identically
    report = (out / "report.md").read_text()
    assert "Groups of seeds joined here" in report and "joined by pldrop compare --merge" in report
    assert all(f"- seeds {i} (`{g}`)" in report for i, g in enumerate(groups))
    for g in res["meta"]["groups"]:
        assert g["load_start"] is not None and g["machine"]["cpus"]
    (out / "report.md").unlink()
    assert main(["compare", "--out", str(out), "--report-only"]) == 0
    assert (out / "report.md").read_text() == report
    # --overwrite replaces a merge pldrop wrote
    assert main(["compare", "--merge", *map(str, groups), "--out", str(out), "--overwrite", "--arms", "pld"]) == 0
    assert json.loads((out / "compare.json").read_text())["arms"] == ["pld"]
    assert not (out / "baseline-s0").exists()


def _copy_as(src: Path, dst: Path, seed: int, edit=None) -> Path:
    """A copy of a group relabelled as another seed; ``edit(cfg)`` changes its pld run's config."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoints", "*.safetensors"))
    info = json.loads((dst / "compare.json").read_text())
    (dst / "compare.json").write_text(json.dumps({**info, "seeds": [seed]}))
    for arm in info["arms"]:
        cfg = yaml.safe_load((dst / arm / "config.yaml").read_text())
        cfg["seed"] = seed
        if edit is not None and arm == "pld":
            edit(cfg)
        (dst / arm / "config.yaml").write_text(yaml.safe_dump(cfg))
    return dst


def _unfinished(g, t):
    d = _copy_as(g, t / "u", 7)
    (d / "results.json").unlink()
    return d


def _damaged(g, t):
    d = _copy_as(g, t / "d", 7)
    with open(d / "pld" / "metrics.jsonl", "a") as f:
        f.write("{not json\n")
    return d


@pytest.mark.parametrize("make_second, extra, needle", [
    (None, [], "give two or more"),
    (lambda g, t: t / "nothing", [], "is not a pldrop compare folder"),
    (lambda g, t: (t / "plain").mkdir() or t / "plain", [], "is not a pldrop compare folder"),
    (_unfinished, [], "has not finished"),
    (lambda g, t: g, [], "seed 0 is in both"),
    (lambda g, t: _copy_as(g, t / "lr", 7, lambda c: c["optim"].update(lr=0.005)), [], "in optim.lr (0.005 vs"),
    (lambda g, t: _copy_as(g, t / "bud", 7, lambda c: c["budget"].update(max_steps=9)), [], "in budget.max_steps"),
    (lambda g, t: _copy_as(g, t / "x", 7), ["--arms", "preln"], "has no arm preln"),
    (lambda g, t: _copy_as(g, t / "x", 7), ["--max-steps", "3"], "leave out training flags and overrides"),
    (lambda g, t: _copy_as(g, t / "x", 7), ["--resume"], "leave out --resume"),
    (lambda g, t: _copy_as(g, t / "x", 7), ["optim.lr=1e-3"], "leave out training flags and overrides"),
    (_damaged, [], "metrics.jsonl is damaged"),
])
def test_merge_refuses_in_one_line(tmp_path, groups, capsys, make_second, extra, needle):
    args = [str(groups[0])] + ([str(make_second(groups[0], tmp_path))] if make_second else [])
    before = _digest(groups[0])
    out = tmp_path / "merged"
    _exit2(capsys, ["compare", "--merge", *args, "--out", str(out), *extra], needle)
    assert not out.exists()  # nothing left behind
    assert _digest(groups[0]) == before


@pytest.mark.parametrize("prepare, needle", [
    (lambda out, g: out.mkdir() or (out / "notes.txt").write_text("mine"), "already exists"),
    (lambda out, g: None, "holds the run's input"),
])
def test_merge_never_writes_over_what_it_did_not_write(tmp_path, groups, capsys, prepare, needle):
    out = tmp_path / "merged"
    prepare(out, groups)
    second = _copy_as(groups[1], tmp_path / "s1copy", 1)
    target = out if needle != "holds the run's input" else second
    before = _digest(target) if target.exists() else None
    _exit2(capsys, ["compare", "--merge", str(groups[0]), str(second), "--out", str(target)], needle)
    assert (_digest(target) if target.exists() else None) == before
    if target == out:  # and --overwrite keeps a folder with a file pldrop did not write
        _exit2(capsys, ["compare", "--merge", str(groups[0]), str(second), "--out", str(out), "--overwrite"],
               "is not a pldrop run folder")
        assert (out / "notes.txt").read_text() == "mine"


def test_merge_refuses_minute_budgets_from_machines_of_different_speed(tmp_path, groups, capsys):
    def minutes(cfg):
        cfg["budget"].update(max_steps=None, max_minutes=1.0)

    def all_arms(d, seed, slower):
        _copy_as(groups[0], d, seed)
        for arm in ("baseline", "pld"):
            cfg = yaml.safe_load((d / arm / "config.yaml").read_text())
            minutes(cfg)
            (d / arm / "config.yaml").write_text(yaml.safe_dump(cfg))
        res = json.loads((d / "results.json").read_text())
        res["analysis"]["arms"]["baseline"]["summary"]["time_per_sample_s"] *= slower
        (d / "results.json").write_text(json.dumps(res))
        return d

    a = all_arms(tmp_path / "a", 7, 1.0)
    out = tmp_path / "merged"
    _exit2(capsys, ["compare", "--merge", str(a), str(all_arms(tmp_path / "b", 8, 2.0)), "--out", str(out)],
           "machines of different speed")
    assert not out.exists()
    # within the tolerance (load moves time per sample a little) the same minutes are one experiment
    assert main(["compare", "--merge", str(a), str(all_arms(tmp_path / "c", 9, 1.1)), "--out", str(out)]) == 0
    assert json.loads((out / "compare.json").read_text())["seeds"] == [7, 9]


def test_merge_racing_another_process_leaves_its_folder_alone(tmp_path, groups, capsys, monkeypatch):
    """Between the checks and the lock another process took the new --out: its files stay."""
    import pldrop.train.rundir as rundir
    from pldrop.train.rundir import RunLock

    out = tmp_path / "merged"
    monkeypatch.setattr(rundir, "check_out", lambda *a, **k: None)  # the other process made out after the check
    with RunLock(out, create=True):
        (out / "compare.json").write_text("{}")
        _exit2(capsys, ["compare", "--merge", str(groups[0]), str(_copy_as(groups[1], tmp_path / "s1", 1)),
                        "--out", str(out)], "in use by another pldrop process")
        assert (out / "compare.json").read_text() == "{}"
