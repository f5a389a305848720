"""`pldrop bench step`, `pldrop bench converge` and `pldrop report` at --quick size.

Beyond "the files are there", every number checked here is recomputed independently: step
medians from the raw timings in the JSON, losses, times to target and speed-ups from the runs'
metrics.jsonl, downstream scores from the fine-tuning folders' results.json -- then compared
with the numbers printed in the Markdown tables. Finally every number in report.md must be a
formatting of a number in report.json.
"""

import json
import math
import random
import re
import statistics
from pathlib import Path

import pytest
import torch

from pldrop.cli import main

CORPUS = str(Path(__file__).parent / "fixtures" / "corpus" / "tiny.txt")
TINY = ["--quick", "--corpus", CORPUS, "--threads", "1", "--no-progress", "--no-tcmalloc", "data.vocab_size=400"]


@pytest.fixture(autouse=True)
def _env(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PLDROP_CACHE", str(tmp_path_factory.getbasetemp() / "pldrop-cache"))
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # --threads 1 is process-wide


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    """A tiny two-class TSV task (long vs short sentences of the fixture corpus)."""
    text = Path(CORPUS).read_text().replace("\n", " ")
    sents = [s.strip() for s in text.split(". ") if len(s.split()) > 4]
    rows = [(s, "long" if len(s.split()) > 15 else "short") for s in sents]
    random.Random(0).shuffle(rows)
    d = tmp_path_factory.mktemp("task")
    for name, part in (("train", rows[:48]), ("dev", rows[48:72])):
        (d / f"{name}.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{lab}\n" for t, lab in part))
    return d


# --- helpers: independent recomputation and Markdown parsing --------------------------------

def records(root: Path, path: str) -> list[dict]:
    return [json.loads(ln) for ln in (root / path / "metrics.jsonl").read_text().splitlines() if ln.strip()]


def evals(recs):
    return [r for r in recs if "val_loss" in r]


def first_reach(recs, target, key):
    """First ``key`` at which val_loss <= target, linear between evaluations (written afresh here)."""
    pts = evals(recs)
    for i, r in enumerate(pts):
        if r["val_loss"] <= target:
            if i == 0 or pts[i - 1]["val_loss"] == r["val_loss"]:
                return float(r[key])
            a = pts[i - 1]
            return a[key] + (a["val_loss"] - target) / (a["val_loss"] - r["val_loss"]) * (r[key] - a[key])
    return None


def mean_std(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)


def fmt_pm(xs, d, scale=1.0):
    m, s = mean_std(xs)
    if m is None:
        return "–"
    return f"{m * scale:.{d}f}" + ("" if s is None else f" ± {s * scale:.{d}f}")


def table_after(md: str, marker: str) -> list[dict[str, str]]:
    """The first Markdown table after the line containing ``marker``, as dicts by header."""
    lines = md.splitlines()
    start = next(i for i, ln in enumerate(lines) if marker in ln)
    i = next(j for j in range(start + 1, len(lines)) if lines[j].startswith("|"))
    header = [c.strip() for c in lines[i].strip("|").split("|")]
    rows = []
    for ln in lines[i + 2:]:
        if not ln.startswith("|"):
            break
        rows.append(dict(zip(header, (c.strip() for c in ln.strip("|").split("|")))))
    return rows


NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[+-]\d+)?(?!\w)")


def formatted_leaves(obj) -> set[str]:
    """Every number in ``obj`` as report.md could print it."""
    out: set[str] = set()

    def add(v):
        for x in {v, abs(v)}:
            out.update({f"{x:g}", f"{x:.2e}", str(int(x)) if float(x).is_integer() else ""})
            for scale in (1, 100, 1000):
                for d in range(5):
                    out.add(f"{x * scale:.{d}f}")

    def walk(o):
        if isinstance(o, bool):
            return
        if isinstance(o, (int, float)) and math.isfinite(o):
            add(o)
        elif isinstance(o, dict):
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(obj)
    return out


# --- the tests ------------------------------------------------------------------------------

def test_bench_step_quick(tmp_path, capsys):
    out = tmp_path / "step"
    assert main(["bench", "step", "--out", str(out), "--quick", "--threads", "1", "--no-progress",
                 "--no-tcmalloc"]) == 0
    for f in ("bench_step.json", "bench_step.md", "bench_step.png"):
        assert (out / f).stat().st_size > 0, f
    res = json.loads((out / "bench_step.json").read_text())
    md = (out / "bench_step.md").read_text()
    assert list(res["presets"]) == ["tiny"]
    r = res["presets"]["tiny"]
    b = r["settings"]["batch_size"]
    assert [row["theta"] for row in r["rows"]] == [1.0, 0.75, 0.5]
    med = {a: statistics.median(v) for a, v in r["times_s"].items()}  # from the raw interleaved timings
    assert med == pytest.approx(r["median_s"])
    assert r["fixed_fraction"] == pytest.approx(med["fixed"] / med["untouched"])
    table = table_after(md, "### tiny")
    assert [row["θ"] for row in table] == ["1", "0.75", "0.5"]
    for row, js in zip(table, r["rows"]):
        assert row["time per sample (ms)"] == f"{1e3 * med[js['arm']] / b:.2f}"
        assert row["saving realised"] == f"{100 * (1 - med[js['arm']] / med['untouched']):.1f} %"
        t_block = (med["untouched"] - med["fixed"]) / 2
        predicted = med["fixed"] + js["mean_kept"] * t_block
        assert row["saving predicted"] == f"{100 * (1 - predicted / med['untouched']):.1f} %"
    assert "saves" in capsys.readouterr().out


def test_bench_converge_quick_and_resume(tmp_path, capsys):
    out = tmp_path / "conv"
    args = ["bench", "converge", "--out", str(out), *TINY, "--seeds", "1", "--max-steps", "4",
            "--sweep-lrs", "5e-4", "1e-3"]
    assert main(args) == 0
    for f in ("converge.json", "converge.md", "converge_loss.png"):
        assert (out / f).stat().st_size > 0, f
    res = json.loads((out / "converge.json").read_text())
    conv = res["converge"]
    md = (out / "converge.md").read_text()
    # the sweep picks the lowest final loss among stable runs, recomputed from metrics.jsonl
    finals = {r["lr"]: evals(records(out, r["path"]))[-1]["val_loss"] for r in conv["sweep"]["runs"]}
    assert conv["sweep"]["best_lr"] == min(finals, key=finals.get)
    assert conv["arms"]["postln-tuned"]["spec"]["lr"] == conv["sweep"]["best_lr"]
    assert [r["lr"] for r in conv["sweep"]["runs"]] == [5e-4, 1e-3]
    # every arm ran 4 steps on the same batch size; PLD ran fewer blocks than the others
    for name, arm in conv["arms"].items():
        recs = records(out, arm["runs"]["0"]["path"])
        assert recs[-1]["step"] == 4 and recs[-1]["samples"] == 32
    table = {row["arm"]: row for row in table_after(md, "**Arms**")}
    for name, arm in conv["arms"].items():
        recs = records(out, arm["runs"]["0"]["path"])
        row = table[arm["label"]]
        assert row["final val loss"] == f"{evals(recs)[-1]['val_loss']:.4f}"
        assert row["time per sample (ms)"] == f"{1e3 * recs[-1]['wall'] / recs[-1]['samples']:.2f}"
        assert row["FLOPs (mean)"] == f"{recs[-1]['flops']:.2e}"
    pld_flops = records(out, conv["arms"]["pld"]["runs"]["0"]["path"])[-1]["flops"]
    pre_flops = records(out, conv["arms"]["preln"]["runs"]["0"]["path"])[-1]["flops"]
    assert pld_flops < pre_flops
    # an existing folder is refused; --resume reuses every finished run and gives the same figures
    capsys.readouterr()
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(args + ["--resume"]) == 0
    assert "== " not in capsys.readouterr().out  # nothing trained again
    again = json.loads((out / "converge.json").read_text())["converge"]
    assert again["targets"] == conv["targets"] and again["arms"] == conv["arms"]


def test_converge_speedup_curve_recomputes(tmp_path, monkeypatch):
    """The speed-up curve along Post-LN's validation curve, recomputed target by target, seed by seed.

    A tiny model does not get below the unigram loss in 30 steps, and targets start below it, so the
    plateau is switched off here: this test is about the curve's arithmetic, not about the claim."""
    import pldrop.reporting.protocol as protocol

    monkeypatch.setattr(protocol, "unigram_of", lambda runner: None)
    out = tmp_path / "conv"
    assert main(["bench", "converge", "--out", str(out), *TINY, "--seeds", "2", "--max-steps", "30",
                 "--sweep-lrs", "1e-3"]) == 0
    conv = json.loads((out / "converge.json").read_text())["converge"]
    md = (out / "converge.md").read_text()
    comp = conv["comparison"]
    base = {s: records(out, r["path"]) for s, r in conv["arms"]["postln-tuned"]["runs"].items()}
    targets = comp["targets"]
    assert targets, "30 steps at lr 1e-3 take the tiny model's loss down by more than 0.1 in both seeds"
    assert all(round(t * 10) == pytest.approx(t * 10) for t in targets)  # every 0.1
    assert max(targets) < min(evals(b)[0]["val_loss"] for b in base.values())
    assert min(targets) >= max(min(r["val_loss"] for r in evals(b)) for b in base.values()) - 1e-9
    checked = 0
    for name in ("pld", "preln"):
        for row in comp["curves"][name]:
            sp = []
            for s in comp["seed_names"]:
                ref = first_reach(base[s], row["target"], "wall")
                mine = first_reach(records(out, conv["arms"][name]["runs"][s]["path"]), row["target"], "wall")
                sp.append(ref / mine if ref is not None and mine else None)
            m, sd = mean_std([math.log(x) for x in sp if x])  # speed-ups are averaged on a log scale
            got = row["speedup"]["wall"]
            why = (name, row["target"], sp, got)  # said if it fails (it failed once, unreproduced, on 2026-12-03)
            assert got["mean"] == (pytest.approx(math.exp(m)) if m is not None else None), why
            assert row["reached"]["wall"] == sum(x is not None for x in sp), why
            if got["n"] == 2:  # t-interval with 1 degree of freedom: t = 12.706
                assert math.log(got["hi"]) - m == pytest.approx(12.7062047 * sd / math.sqrt(2), rel=1e-6, abs=1e-9), why
                checked += 1
    assert checked
    assert (out / "converge_speedup.png").is_file() and "converge_speedup.png" in md
    assert "**Speed-up along Post-LN @ tuned lr's validation curve**" in md


def test_bad_inputs_fail_before_training(tmp_path, capsys):
    out = tmp_path / "x"
    rc = main(["bench", "converge", "--out", str(out), *TINY, "optim.lr=1e-3"])
    err = capsys.readouterr().err
    assert rc == 2 and "optim.lr is set by the benchmark protocol" in err and len(err.strip().splitlines()) == 1
    assert main(["report", "--out", str(out), *TINY, "--tasks", "mine", "--task-data", str(tmp_path / "nope")]) == 2
    assert "nope: not found" in capsys.readouterr().err
    assert main(["report", "--out", str(out), *TINY, "--step-presets", "huge"]) == 2
    assert "'huge' is unknown" in capsys.readouterr().err
    assert not out.exists()  # nothing was started


def test_report_quick_numbers_recompute(tmp_path, task_dir, capsys):
    from pldrop.reporting.claims import build_claims
    from pldrop.reporting.render import render_report

    out = tmp_path / "report"
    rc = main(["report", "--out", str(out), *TINY, "--sweep-lrs", "5e-4", "1e-3", "--ablation-theta-bars", "0.5",
               "0.9", "--tasks", "tiny-task", "--task-data", str(task_dir)])
    assert rc == 0
    for f in ("report.md", "report.json", "step.png", "converge_loss.png", "ablations_loss.png",
              "downstream/table.json"):
        assert (out / f).stat().st_size > 0, f
    assert not list(out.glob("runs/*/model.safetensors"))  # weights pruned
    assert not list(out.glob("runs/*/checkpoints"))
    rep = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()

    # report.md is a function of report.json alone, and so are the verdicts
    assert render_report(rep) == md
    assert build_claims(rep) == rep["claims"]

    conv = rep["converge"]
    assert conv["seeds"] == [0, 1]
    # the arms table, recomputed from metrics.jsonl across the two seeds
    table = {row["arm"]: row for row in table_after(md, "**Arms**")}
    finals = {}
    for name, arm in conv["arms"].items():
        recs = {s: records(out, r["path"]) for s, r in arm["runs"].items()}
        finals[name] = {s: evals(r)[-1]["val_loss"] for s, r in recs.items()}
        row = table[arm["label"]]
        assert row["final val loss"] == fmt_pm(finals[name].values(), 4)
        assert row["time per sample (ms)"] == fmt_pm([r[-1]["wall"] / r[-1]["samples"] for r in recs.values()], 2, 1e3)
        assert row["training time (s)"] == fmt_pm([r[-1]["wall"] for r in recs.values()], 2)
    # time and FLOPs to Post-LN's final loss, per seed, and the speed-ups paired by seed
    table = {row["arm"]: row for row in table_after(md, "**Time, FLOPs and samples to the final validation loss of "
                                                        "Post-LN @ tuned lr")}
    base = {s: records(out, r["path"]) for s, r in conv["arms"]["postln-tuned"]["runs"].items()}
    for name, arm in conv["arms"].items():
        t, sp, spf = [], [], []
        for s, run in arm["runs"].items():
            recs = records(out, run["path"])
            target = finals["postln-tuned"][s]
            mine, ref = first_reach(recs, target, "wall"), first_reach(base[s], target, "wall")
            t.append(mine)
            sp.append(ref / mine if mine else None)
            mf, rf = first_reach(recs, target, "flops"), first_reach(base[s], target, "flops")
            spf.append(rf / mf if mf else None)
        row = table[arm["label"]]
        assert row["time to it (s)"] == fmt_pm(t, 2)
        assert row["speed-up (time)"] == fmt_pm(sp, 2)
        assert row["speed-up (FLOPs)"] == fmt_pm(spf, 2)
        assert row["seeds reaching it"] == f"{sum(x is not None for x in t)} / 2"

    # the claim sentences carry the same speed-up
    claim = next(r for r in rep["claims"]["speedup"] if r["target"] == "postln-tuned")
    pld_sp = [first_reach(base[s], finals["postln-tuned"][s], "wall") / x if x else None
              for s, x in ((s, first_reach(records(out, r["path"]), finals["postln-tuned"][s], "wall"))
                           for s, r in conv["arms"]["pld"]["runs"].items())]
    m, _ = mean_std(pld_sp)
    assert claim["measured"] == pytest.approx(m) if m is not None else claim["measured"] is None
    if m is not None:
        assert f"PLD is {m:.2f}× faster" in md

    # the comparison section (speed-up curves; recomputed in test_converge_speedup_curve_recomputes)
    comp = conv["comparison"]
    assert comp["baseline"] == "postln-tuned" and comp["seed_names"] == ["0", "1"]
    assert ("did not leave the unigram plateau" in md) == (not comp["plateau"]["left"])
    assert (out / "converge_speedup.png").is_file() == bool(comp["targets"])

    # ablations: the fixed-rate run holds θ at θ̄ from the first step; θ̄ 0.9 runs more blocks than 0.5
    abl = rep["ablations"]
    assert set(abl["arms"]) == {"pld", "postln-tuned", "postln-pld", "pld-uniform", "pld-fixed", "pld-tb0.9"}
    fixed = records(out, abl["arms"]["pld-fixed"]["runs"]["0"]["path"])
    assert all(r["theta"] == 0.5 for r in fixed)
    assert records(out, abl["arms"]["pld"]["runs"]["0"]["path"])[0]["theta"] > 0.5
    assert records(out, abl["arms"]["postln-pld"]["runs"]["0"]["path"])  # Post-LN + PLD trained

    # downstream: equal samples and equal wall-clock, scores from the fine-tuning results.json
    ds = rep["downstream"]
    f = {role: m["figures"] for role, m in ds["models"].items()}
    assert f["equal-samples"]["samples"] == f["baseline"]["samples"]
    assert f["equal-time"]["train_time_s"] >= 60 * ds["models"]["equal-time"]["spec"]["max_minutes"]
    table = {row["checkpoint"]: row for row in table_after(md, "Fine-tuned with `pldrop evaluate`")}
    for role, m in ds["models"].items():
        res = json.loads((out / m["eval_path"] / "tiny-task" / "results.json").read_text())
        scores = [run["score"] for run in res["per_seed"].values()]  # dev: no test split in the tiny task
        assert table[m["label"]]["average"] == fmt_pm(scores, 1, 100)
        assert table[m["label"]]["samples"] == str(records(out, m["path"])[-1]["samples"])

    # the quick path stays within the step counts its --help states: every pretraining run at most
    # SCALE_QUICK's steps (counted from metrics.jsonl), one fine-tuning rate and FT_QUICK's step cap per
    # checkpoint (counted from results.json: the cap, not the epoch, sets the length)
    from pldrop.reporting.bench_cmd import SCALE_QUICK
    from pldrop.reporting.report_cmd import EPILOG, FT_QUICK

    assert f"{SCALE_QUICK['max_steps']} steps per pretraining run" in EPILOG
    assert f"fine-tuned for {FT_QUICK['max_steps']} steps at one rate" in EPILOG
    timed = out / ds["models"]["equal-time"]["path"]  # PLD for the baseline's minutes: bounded by time
    run_dirs = [p.parent for p in (out / "runs").glob("*/metrics.jsonl") if p.parent != timed]
    assert len(run_dirs) >= 8
    for d in run_dirs:
        steps = [r["step"] for r in records(d.parent, d.name) if "step" in r]
        assert 0 < max(steps) <= SCALE_QUICK["max_steps"], d
    for role, m in ds["models"].items():
        res = json.loads((out / m["eval_path"] / "tiny-task" / "results.json").read_text())
        assert not (res.get("lr_grid") or {}).get("rates"), role  # one rate, no grid
        assert [run["steps"] for run in res["per_seed"].values()] == [FT_QUICK["max_steps"]], role
    assert len(list((out / "downstream").rglob("results.json"))) == 3

    # and every number anywhere in report.md is a number of report.json, formatted
    known = formatted_leaves(rep)
    strings = " ".join([json.dumps(rep["machine"]), rep["claims"]["paper"]["reference"], rep["claims"]["paper"]["url"]])
    body = re.sub(r"```.*?```", "", md, flags=re.S)  # the command block: checked below
    body = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", body)  # image links
    stray = [n for n in NUMBER.findall(body) if n not in known and n not in strings]
    assert not stray, stray
    assert rep["command"] in md and "--quick" in rep["command"]

    # --rerender rebuilds verdicts and report.md from report.json alone, to the same text
    (out / "report.md").unlink()
    assert main(["report", "--out", str(out), "--rerender"]) == 0
    assert (out / "report.md").read_text() == md


# --- --overwrite of a bench folder (issue 23 item 3) -------------------------------------------

def _old_bench_folder(path: Path) -> dict[str, bytes]:
    from pldrop.train.rundir import mark_run_folder, record

    path.mkdir()
    mark_run_folder(path, "pldrop bench step")
    for name in ("bench_step.json", "bench_step.md"):
        (path / name).write_text('{"old": "results"}\n')
        record(path / name)
    return _bytes(path)


def _bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_kill_during_bench_step_overwrite_leaves_the_old_folder(tmp_path, capsys):
    """kill -9 once the new run is being written (its staging folder exists): the old folder is as it was,
    and the next --overwrite collects the dead process's staging folder and replaces the old one."""
    import os
    import subprocess
    import sys
    import time

    out = tmp_path / "step"
    before = _old_bench_folder(out)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1] / "src"))
    p = subprocess.Popen([sys.executable, "-m", "pldrop", "bench", "step", "--quick", "--overwrite", "--out", str(out),
                          "--threads", "1", "--no-progress", "--no-tcmalloc", "--repeats", "100000"],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stage = tmp_path / f".step.pldrop-new-{p.pid}"
    deadline = time.monotonic() + 300
    while not (stage / ".pldrop-run").is_file():  # the new run has started writing beside the old one
        if not (out / "bench_step.json").is_file():
            p.kill()
            p.wait()
            pytest.fail("the old results were removed before the new run was written")
        assert p.poll() is None, p.stderr.read().decode()
        assert time.monotonic() < deadline, "the staging folder never appeared"
        time.sleep(0.05)
    p.kill()
    p.wait()
    p.stderr.close()
    after = _bytes(out)
    # the one trace: pldrop's lock file of the old folder (every --overwrite locks it, see RunLock), holding
    # the dead PID; the kernel released the lock with the process and the next run takes it over
    assert after.pop(".pldrop.lock", str(p.pid).encode() + b"\n") == str(p.pid).encode() + b"\n"
    assert after == before
    assert main(["bench", "step", "--quick", "--overwrite", "--out", str(out), "--threads", "1", "--no-progress",
                 "--no-tcmalloc", "--repeats", "1"]) == 0
    assert not stage.exists() and "old" not in (out / "bench_step.json").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step"]  # nothing left beside it
    assert sorted(_bytes(out)) == [".pldrop-files.jsonl", ".pldrop-run", "bench_step.json", "bench_step.md", "bench_step.png"]


def test_bench_step_without_cuda_leaves_the_old_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "step"
    before = _old_bench_folder(out)
    capsys.readouterr()
    assert main(["bench", "step", "--quick", "--overwrite", "--out", str(out), "--device", "cuda", "--no-tcmalloc"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--device cuda: no CUDA GPU here" in err, err
    assert _bytes(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["step"]


def test_failed_bench_step_overwrite_leaves_the_old_folder(tmp_path, monkeypatch, capsys):
    """A failure while the new run is measured (here: the timing raises) drops the staging folder only."""
    import pldrop.reporting.step as step

    def broken(*a, **kw):
        raise RuntimeError("a failure in the middle of the timing")

    monkeypatch.setattr(step, "run_step_bench", broken)
    out = tmp_path / "step"
    before = _old_bench_folder(out)
    with pytest.raises(RuntimeError, match="middle of the timing"):
        main(["bench", "step", "--quick", "--overwrite", "--out", str(out), "--no-tcmalloc"])
    assert _bytes(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["step"]


def test_interrupted_converge_overwrite_keeps_old_and_new(tmp_path, monkeypatch, capsys):
    """SIGTERM during `bench converge --overwrite`: the old results stay, the runs done so far are kept
    beside them and the message says where; any other failure drops the staging folder."""
    import pldrop.reporting.bench_cmd as bench_cmd
    from pldrop.train.run import Interrupted

    out = tmp_path / "conv"
    out.mkdir()
    from pldrop.train.rundir import mark_run_folder, record

    mark_run_folder(out, "pldrop bench converge")
    (out / "converge.json").write_text('{"old": "results"}\n')
    record(out / "converge.json")
    before = _bytes(out)

    def stopped(work, *a, **kw):
        (work / "runs").mkdir()
        raise Interrupted("SIGTERM", "stopped at step 3: checkpoint saved")

    monkeypatch.setattr(bench_cmd, "execute_converge", stopped)
    capsys.readouterr()
    assert main(["bench", "converge", "--out", str(out), *TINY, "--overwrite"]) == 143
    said = capsys.readouterr().out
    kept = [p for p in tmp_path.iterdir() if p.name != "conv"]
    assert [p.name for p in kept] == [f".conv.pldrop-new-{__import__('os').getpid()}"] and (kept[0] / "runs").is_dir()
    assert f"the old results in {str(out)!r} are untouched" in said and str(kept[0]) in said
    assert _bytes(out) == before
    import shutil

    shutil.rmtree(kept[0])

    def broken(work, *a, **kw):
        (work / "runs").mkdir()
        record(work / "runs")  # what pldrop makes it records; a staging folder holding only that is dropped
        raise RuntimeError("a failure")

    monkeypatch.setattr(bench_cmd, "execute_converge", broken)
    with pytest.raises(RuntimeError):
        main(["bench", "converge", "--out", str(out), *TINY, "--overwrite"])
    assert _bytes(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["conv"]


@pytest.mark.parametrize("command", [["report"], ["bench", "converge"]])
def test_preset_choices_include_the_default(command):
    """--preset offers every preset, its own default (narrow8) among them."""
    import argparse

    from pldrop.cli import build_parser
    from pldrop.presets import PRESETS
    from pldrop.reporting.bench_cmd import TRAIN_DEFAULTS

    p = build_parser()
    for name in command:
        p = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    assert p._option_string_actions["--preset"].choices == list(PRESETS)
    assert TRAIN_DEFAULTS["preset"] in PRESETS
    assert p.parse_args(["--out", "x", "--preset", TRAIN_DEFAULTS["preset"]]).preset == TRAIN_DEFAULTS["preset"]
