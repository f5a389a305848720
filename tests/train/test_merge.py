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
    sizes = {a: [json.loads((g / a / "pldrop.json").read_text())["train_seqs"] for g in groups] for a in recs}
    again = json.loads(json.dumps(compare_arms(recs, 2, unigram=uni, train_seqs=sizes)))
    assert res["analysis"]["seeds"] == 2 and res["analysis"]["arms"]["pld"]["epochs"] > 0
    assert res["analysis"]["arms"] == again["arms"] and res["analysis"]["curves"] == again["curves"]
    # the depth curves: each group's run under its merged name, the report's the mean over seeds
    depths = [json.loads((g / "results.json").read_text())["depth"] for g in groups]
    assert res["depth"]["seeds"] == 2 and set(res["depth"]["models"]) == {"baseline", "pld"}
    for arm in ("baseline", "pld"):
        for seed, d in enumerate(depths):
            assert res["depth"]["runs"][f"{arm}-s{seed}"] == d["runs"][arm]
        for i, p in enumerate(res["depth"]["models"][arm]["points"]):
            for key in ("val_loss", "val_accuracy", "time_ratio"):
                assert p[key] == pytest.approx(sum(d["models"][arm]["points"][i][key] for d in depths) / 2)
    assert "means over 2 seeds" in (out / "report.md").read_text() and (out / "depth.png").is_file()
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


def _json_edit(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _edited(g, t, edit):
    d = _copy_as(g, t / "e", 7)
    edit(d)
    return d


def _resumed_larger(g, t):
    """A group whose --resume with a larger budget was stopped before its first step: the configs say 9 steps."""
    def larger(d):
        for arm in ("baseline", "pld"):
            cfg = yaml.safe_load((d / arm / "config.yaml").read_text())
            cfg["budget"]["max_steps"] = 9
            (d / arm / "config.yaml").write_text(yaml.safe_dump(cfg))
    return _edited(g, t, larger)


def _more_steps(d):
    last = (d / "baseline" / "metrics.jsonl").read_text().splitlines()[-1]
    with open(d / "baseline" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({**json.loads(last), "step": 5}) + "\n")


def _trained_on(g, t):
    """... or stopped after some steps: the metrics run past the summary."""
    return _edited(g, t, _more_steps)


def _held(g, t):
    """A group a live process holds (it trains or writes in it)."""
    from pldrop.train.rundir import RunLock

    d = _copy_as(g, t / "held", 7)
    lock = RunLock(d)
    lock.__enter__()
    _HELD.append(lock)  # held until the row's command has run
    return d


_HELD: list = []


def _merged_unfinished(g, t):
    d = _edited(g, t, lambda d: (d / "results.json").unlink())
    _json_edit(d / "compare.json", merged_from=["a", "b"])
    return d


@pytest.mark.parametrize("make_second, extra, needle", [
    (None, [], "give two or more"),
    (lambda g, t: t / "nothing", [], "is not a pldrop compare folder"),
    (lambda g, t: (t / "plain").mkdir() or t / "plain", [], "is not a pldrop compare folder"),
    (_unfinished, [], "has not finished"),
    (lambda g, t: g, [], "seed 0 is in both"),
    (lambda g, t: _copy_as(g, t / "lr", 7, lambda c: c["optim"].update(lr=0.005)), [], "in optim.lr (0.005 vs"),
    (lambda g, t: _copy_as(g, t / "bud", 7, lambda c: c["budget"].update(max_steps=3)), [], "in budget.max_steps"),
    (lambda g, t: _copy_as(g, t / "x", 7), ["--arms", "preln"], "has no arm preln"),
    (lambda g, t: _copy_as(g, t / "x", 7), ["--max-steps", "3"], "leave out --max-steps"),
    (lambda g, t: _copy_as(g, t / "x", 7), ["--resume"], "leave out --resume"),
    (lambda g, t: _copy_as(g, t / "x", 7), ["optim.lr=1e-3"], "leave out key=value overrides"),
    (lambda g, t: _copy_as(g, t / "x", 7), ["--seed", "3", "--threads", "2"], "leave out --seed --threads"),
    (_damaged, [], "metrics.jsonl' is damaged"),
    # issue 23 item 5: a group is checked from its runs' own files, not from results.json's claim
    (lambda g, t: _resumed_larger(g, t), [], "stopped at step 4, short of its budget of 9 steps"),
    (lambda g, t: _trained_on(g, t), [], "after its summary.json (step 4)"),
    (lambda g, t: _edited(g, t, lambda d: (d / "pld" / "summary.json").unlink()), [], "has no summary.json"),
    (lambda g, t: _edited(g, t, lambda d: _json_edit(d / "pld" / "pldrop.json", corpus_fingerprint="0" * 64)), [],
     "was trained on another corpus"),
    (lambda g, t: _held(g, t), [], "is in use by another pldrop process"),
    # item 8: damaged files end in one line
    (lambda g, t: _edited(g, t, lambda d: _json_edit(d / "results.json", meta=5)), [], "(meta is 5, not a mapping)"),
    (lambda g, t: _edited(g, t, lambda d: _json_edit(d / "results.json", meta="abc")), [], "(meta is 'abc'"),
    (lambda g, t: _edited(g, t, lambda d: _json_edit(d / "results.json", analysis={"num_layers": 2, "unigram": "x"})),
     [], "analysis.unigram is 'x'"),
    (lambda g, t: _edited(g, t, lambda d: _json_edit(d / "results.json", depth=[1])), [],
     "(depth is not a block of depth curves)"),
    (lambda g, t: _edited(g, t, lambda d: _json_edit(d / "results.json", depth={
        **json.loads((d / "results.json").read_text())["depth"], "models": {"pld": {"num_layers": 2, "points": [
            {"keep": 2, "kept": "0 1", "val_loss": 1.0, "val_accuracy": 0.5}]}}})), [],
     "depth.models.pld.points[0] is not a point of a depth curve"),
    (lambda g, t: _edited(g, t, lambda d: _json_edit(d / "compare.json", arms=["baseline", "nope"])), [],
     "compare.json' is damaged (arms ['baseline', 'nope']"),
    (lambda g, t: _edited(g, t, lambda d: _json_edit(d / "compare.json", seeds=5)), [], "(seeds is 5"),
    (lambda g, t: _merged_unfinished(g, t), [], "finish the groups it came from and merge them again"),
])
def test_merge_refuses_in_one_line(tmp_path, groups, capsys, make_second, extra, needle):
    args = [str(groups[0])] + ([str(make_second(groups[0], tmp_path))] if make_second else [])
    before = _digest(groups[0])
    out = tmp_path / "merged"
    try:
        _exit2(capsys, ["compare", "--merge", *args, "--out", str(out), *extra], needle)
    finally:
        while _HELD:
            _HELD.pop().__exit__(None, None, None)
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
        cfg["budget"].update(max_steps=None, max_minutes=1e-6)  # reached by the 4 steps it took

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
    # the other process made out after the checks
    monkeypatch.setattr(rundir, "check_out", lambda *a, **k: (out / "compare.json").write_text("{}") and None)
    with RunLock(out, create=True):
        _exit2(capsys, ["compare", "--merge", str(groups[0]), str(_copy_as(groups[1], tmp_path / "s1", 1)),
                        "--out", str(out)], "in use by another pldrop process")
        assert (out / "compare.json").read_text() == "{}"


def test_failed_merge_into_an_empty_out_leaves_it_empty(tmp_path, groups, capsys, monkeypatch):
    """Issue 23 item 9: a merge that fails while writing into an existing empty --out left its run folders."""
    import pldrop.train.compare as compare
    from pldrop.errors import UserError

    def fail(*a, **k):
        raise UserError("disk full (simulated)")

    monkeypatch.setattr(compare, "write_report", fail)
    out = tmp_path / "merged"
    out.mkdir()
    _exit2(capsys, ["compare", "--merge", str(groups[0]), str(_copy_as(groups[1], tmp_path / "s1", 1)),
                    "--out", str(out)], "disk full (simulated)")
    assert out.is_dir() and list(out.iterdir()) == []


def test_resume_of_a_merge_is_refused(tmp_path, groups, capsys):
    """Issue 23 item 6: --resume on a --merge output retrained every arm from step 0."""
    out = tmp_path / "merged"
    assert main(["compare", "--merge", *map(str, groups), "--out", str(out)]) == 0
    before = _digest(out)
    _exit2(capsys, ["compare", "--out", str(out), "--resume", "--no-progress"], "was joined by --merge")
    assert _digest(out) == before


def test_resume_of_an_arm_without_its_config_is_refused(tmp_path, groups, capsys):
    """Issue 23 item 9: an arm folder without config.yaml was reported as 'created by another process'."""
    d = tmp_path / "g"
    shutil.copytree(groups[0], d)
    (d / "pld" / "config.yaml").unlink()
    before = _digest(d)
    _exit2(capsys, ["compare", "--out", str(d), "--resume", "--no-progress"], "holds files but no config.yaml")
    assert _digest(d) == before


def _report_copy(g: Path, t: Path, edit=None) -> Path:
    d = t / "cmp"
    shutil.copytree(g, d, ignore=shutil.ignore_patterns("checkpoints", "*.safetensors"))
    if edit is not None:
        edit(d)
    return d


def _hold(d: Path) -> None:
    from pldrop.train.rundir import RunLock

    lock = RunLock(d)
    lock.__enter__()
    _HELD.append(lock)


@pytest.mark.parametrize("edit, extra, needle", [
    # item 5: what the runs hold, not results.json's claim
    (lambda d: [_larger(d / a) for a in ("baseline", "pld")], [],
     "stopped at step 4, short of its budget of 9 steps"),
    (_more_steps, [], "trained to step 5 after its summary.json (step 4)"),
    (lambda d: (d / "baseline" / "summary.json").unlink(), [], "has no summary.json: it has not finished (continue "
                                                               "it with pldrop compare --resume"),
    (_hold, [], "is in use by another pldrop process"),
    # item 7: only rendering options
    (None, ["--preset", "base", "--pld-lr", "0.5", "--theta-bar", "0.9", "--batch-size", "7", "--max-minutes", "99",
            "--precision", "fp32"], "leave out --preset --max-minutes --batch-size --precision --pld-lr --theta-bar"),
    (None, ["--corpus", "x.txt", "--paper-lrs", "--bf16"], "leave out --corpus --bf16 --paper-lrs"),
    # item 8: damaged files
    (lambda d: _json_edit(d / "results.json", meta=5), [], "results.json' is damaged (meta is 5, not a mapping)"),
    (lambda d: _json_edit(d / "results.json", meta="abc"), [], "(meta is 'abc', not a mapping)"),
    (lambda d: _json_edit(d / "results.json", analysis={"num_layers": 2, "unigram": "x"}), [],
     "analysis.unigram is 'x'"),
    (lambda d: _json_edit(d / "results.json", meta={"machine": 5}), [], "meta.machine is 5"),
    (lambda d: _json_edit(d / "compare.json", arms=["baseline", "nope"]), [], "compare.json' is damaged"),
    (lambda d: _json_edit(d / "compare.json", seeds=5), [], "(seeds is 5, not a list"),
    (lambda d: (d / "pld" / "config.yaml").write_text("- a list\n"), [], "config.yaml' is damaged"),
])
def test_report_only_renders_only_what_finished(tmp_path, groups, capsys, edit, extra, needle):
    d = _report_copy(groups[0], tmp_path, edit)
    before = {k: v for k, v in _digest(d).items() if k != ".pldrop.lock"}  # the lock of _hold goes when released
    try:
        _exit2(capsys, ["compare", "--out", str(d), "--report-only", *extra], needle)
    finally:
        while _HELD:
            _HELD.pop().__exit__(None, None, None)
    assert _digest(d) == before  # nothing rewritten


def _larger(run: Path) -> None:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["budget"]["max_steps"] = 9
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))


def test_report_only_records_what_ran(tmp_path, groups, capsys):
    """Issue 23 item 7: the seed and summaries in results.json are the runs' own, whatever results.json said."""
    def relabel(d):
        for arm in ("baseline", "pld"):  # runs that trained seed 7 in a folder whose compare.json says seed 0
            cfg = yaml.safe_load((d / arm / "config.yaml").read_text())
            cfg["seed"] = 7
            (d / arm / "config.yaml").write_text(yaml.safe_dump(cfg))
        res = json.loads((d / "results.json").read_text())
        res["meta"]["summaries"] = {"pld": {"steps": 999}}
        (d / "results.json").write_text(json.dumps(res))

    d = _report_copy(groups[0], tmp_path, relabel)
    assert main(["compare", "--out", str(d), "--report-only"]) == 0
    meta = json.loads((d / "results.json").read_text())["meta"]
    assert meta["seeds"] == [7]
    assert {c["seed"] for c in meta["configs"].values()} == {7}
    assert meta["summaries"] == {a: json.loads((d / a / "summary.json").read_text()) for a in ("baseline", "pld")}


def test_pld_as_the_reference_arm_says_so(groups):
    """Issue 23 item 9: `--arms pld` alone was reported as 'no PLD arm'."""
    recs = {"pld": read_metrics(groups[0] / "pld" / "metrics.jsonl")}
    why = compare_arms(recs, 2, baseline="pld")["verdict"]["why"]
    assert "no PLD arm" not in why and "reference" in why


def test_merge_with_a_group_from_before_depth_curves(tmp_path, groups):
    """A group whose results.json has no depth block (written before them): its arms get no mean curve, and
    the report says so instead of averaging one seed as if it were two."""
    old = _edited(groups[0], tmp_path, lambda d: _json_edit(d / "results.json", depth=None))
    out = tmp_path / "merged"
    assert main(["compare", "--merge", str(groups[1]), str(old), "--out", str(out)]) == 0
    depth = json.loads((out / "results.json").read_text())["depth"]
    assert depth["models"] == {} and set(depth["skipped"]) == {"baseline", "pld"}
    assert str(old / "pld") in depth["skipped"]["pld"]
    report = (out / "report.md").read_text()
    assert "- Pre-LN + PLD: no depth curve" in report and not (out / "depth.png").exists()
