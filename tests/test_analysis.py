"""The comparison's figures recomputed from synthetic metrics with known answers, and its report.

Validation loss falls linearly in samples in these runs, so linear interpolation between
evaluations is exact and every speed-up is known in closed form.
"""

import json
import math
import statistics

import pytest

from pldrop.reporting.compare_report import render_compare, write_compare_report
from pldrop.train.rundir import foreign_files, mark_run_folder
from pldrop.train.analysis import (
    accuracy_curve, compare_arms, curve_over_seeds, decompose, default_targets, interval, read_metrics, speedup_curve,
    time_to_accuracy, trend,
)

T_975_2 = 4.302652729911275  # Student t, 97.5 % quantile, 2 degrees of freedom (from a table: 4.303)


def synth(sec_per_sample=0.01, flops_per_sample=1e9, rate=1.0, steps=100, batch=10, start=10.0, floor=None,
          blocks=4, acc=None, eval_every=10, theta=1.0):
    """metrics.jsonl records: val_loss = start - rate * samples / 200 (not below ``floor``)."""
    recs = []
    for step in range(1, steps + 1):
        samples = step * batch
        r = {"step": step, "loss": 0.0, "samples": samples, "step_time": batch * sec_per_sample,
             "wall": samples * sec_per_sample, "flops": samples * flops_per_sample, "blocks_run": blocks,
             "theta": theta}
        if step % eval_every == 0:
            v = start - rate * samples / 200
            r["val_loss"] = v if floor is None else max(v, floor)
            r["val_accuracy"] = acc if acc is not None else min(0.5, (start - r["val_loss"]) / 10)
        recs.append(r)
    return recs


def test_default_targets_every_tenth_from_clearly_below_start_to_best():
    base = synth()  # first evaluation 9.5, best 5.0
    t = default_targets(base)
    assert t[0] == 9.4 and t[-1] == 5.0 and len(t) == 45
    assert all(math.isclose(a - b, 0.1, abs_tol=1e-9) for a, b in zip(t, t[1:]))
    assert default_targets(base, top=7.03)[0] == 7.0  # below the unigram loss when that is lower ...
    assert default_targets(base, top=7.005)[0] == 6.9  # ... by at least a tenth of the step
    assert default_targets(synth(start=9.505))[0] == 8.9  # 9.0 is not clearly below the first evaluation (9.005)


def test_speedup_curve_exactly_twice_as_fast_in_wall_clock():
    base = synth(sec_per_sample=0.02, flops_per_sample=3e9)
    arm = synth(sec_per_sample=0.01, flops_per_sample=1e9)  # same loss per sample, half the time, a third the FLOPs
    curve = speedup_curve(base, arm)
    assert [r["target"] for r in curve] == default_targets(base)
    for r in curve:
        assert r["speedup"]["wall"] == pytest.approx(2.0)
        assert r["speedup"]["flops"] == pytest.approx(3.0)
        assert r["speedup"]["samples"] == pytest.approx(1.0)
        assert r["baseline"]["samples"] == pytest.approx(200 * (10.0 - r["target"]))  # closed form


def test_speedup_curve_none_where_the_arm_never_reaches():
    base = synth()
    arm = synth(rate=2.0, floor=7.0)  # twice the learning per sample, then stuck at 7.0
    curve = speedup_curve(base, arm)
    for r in curve:
        assert r["lower_bound"] == (r["target"] >= 9.0) and not r["upper_bound"]
        if r["target"] > 9.0:  # passed before the arm's first evaluation (9.0): counted at that evaluation
            assert 1.0 < r["speedup"]["samples"] < 2.0
        elif r["target"] >= 7.0:
            assert r["speedup"]["samples"] == pytest.approx(2.0)
        else:
            assert r["speedup"] == {"wall": None, "flops": None, "samples": None}
            assert r["arm"]["wall"] is None and r["baseline"]["wall"] is not None


def test_trend_leaves_out_speedups_that_are_only_bounds():
    # 2x the learning per sample throughout; above 9.0 the arm was past the target at its first
    # evaluation, so those speed-ups read low -- counted, they would fake a growing speed-up
    curve = curve_over_seeds([speedup_curve(synth(), synth(rate=2.0))])
    assert any(r["lower_bound"] for r in curve)
    tr = trend(curve, "samples")
    assert tr["direction"] == "no clear trend" and tr["first"] == pytest.approx(2.0)
    kept = [dict(r, lower_bound=False) for r in curve]
    assert trend(kept, "samples")["direction"] == "grows"


def test_t_interval_over_three_seeds_by_hand():
    speedups = [1.8, 2.0, 2.4]
    base = [synth(sec_per_sample=0.01 * s) for s in speedups]
    arm = [synth(sec_per_sample=0.01) for _ in speedups]
    curve = curve_over_seeds([speedup_curve(b, a) for b, a in zip(base, arm)])
    # speed-ups are ratios: the interval is taken on their logarithms (geometric mean, positive bounds)
    logs = [math.log(x) for x in speedups]
    m = sum(logs) / 3
    sd = math.sqrt(sum((x - m) ** 2 for x in logs) / 2)
    half = T_975_2 * sd / math.sqrt(3)
    for r in curve:
        s = r["speedup"]["wall"]
        assert (s["n"], r["reached"]["wall"], r["seeds"]) == (3, 3, 3)
        assert s["mean"] == pytest.approx((1.8 * 2.0 * 2.4) ** (1 / 3)) and s["std"] == pytest.approx(sd)
        assert s["lo"] == pytest.approx(math.exp(m - half)) and s["hi"] == pytest.approx(math.exp(m + half))
        # the times to the target get a plain t-interval
        t = r["baseline"]["wall"]
        times_ = [200 * (10.0 - r["target"]) * 0.01 * k for k in speedups]
        tm = sum(times_) / 3
        tsd = math.sqrt(sum((x - tm) ** 2 for x in times_) / 2)
        assert t["mean"] == pytest.approx(tm) and t["hi"] == pytest.approx(tm + T_975_2 * tsd / math.sqrt(3))
    assert interval([2.0])["lo"] == interval([2.0])["hi"] == 2.0  # one seed: no spread claimed
    r = interval([1.0, 2.0, 3.0])  # by hand: mean 2, s = 1, half = 4.3027 / sqrt(3)
    assert (r["lo"], r["hi"]) == (pytest.approx(2 - T_975_2 / math.sqrt(3)), pytest.approx(2 + T_975_2 / math.sqrt(3)))


def test_decomposition_multiplies_to_the_total():
    # Pre-LN learns 1.5x as much per sample and costs 0.8x per sample; PLD costs 0.8x Pre-LN's
    base = [synth(sec_per_sample=0.01 * k) for k in (1.0, 1.1, 0.9)]
    preln = [synth(sec_per_sample=0.008, rate=1.5) for _ in range(3)]
    pld = [synth(sec_per_sample=0.0064 * k, rate=1.5, blocks=3) for k in (1.0, 1.2, 0.95)]
    targets = default_targets(base[0])
    rows = decompose(base, preln, pld, targets)
    full = [r for r in rows if r["seeds"]["wall"] == 3]
    assert full, "every seed reaches the upper targets"
    for r in full:
        for k in ("wall", "flops", "samples"):
            assert r["architecture"][k] * r["dropping"][k] == pytest.approx(r["total"][k])
        assert r["dropping"]["samples"] == pytest.approx(1.0)
        assert r["bound"] == (r["target"] >= 9.25)  # Pre-LN's first evaluation is at 9.25
        if r["target"] < 9.25:  # below Pre-LN's first evaluation, where interpolation is exact
            assert r["architecture"]["samples"] == pytest.approx(1.5)
    seed0 = decompose(base[:1], preln[:1], pld[:1], [9.0])[0]
    assert seed0["architecture"]["wall"] == pytest.approx(1.5 / 0.8)
    assert seed0["dropping"]["wall"] == pytest.approx(1.25) and seed0["total"]["wall"] == pytest.approx(1.5 / 0.64)
    an = compare_arms({"baseline": base, "preln": preln, "pld": pld}, num_layers=4,
                      unigram={"loss": 9.6, "accuracy": 0.06})
    h = an["decomposition"]["headline"]
    assert h["architecture"]["wall"] * h["dropping"]["wall"] == pytest.approx(h["total"]["wall"])


def test_compare_arms_ratios_bound_and_trend():
    base = synth(sec_per_sample=0.01)
    preln = synth(sec_per_sample=0.008)
    pld = synth(sec_per_sample=0.006, blocks=3, theta=0.5)
    an = compare_arms({"baseline": base, "preln": preln, "pld": pld}, num_layers=4)
    assert an["arms"]["pld"]["time_per_sample_ratio"] == pytest.approx(0.6)
    assert an["arms"]["pld"]["saving_vs_same_blocks"] == pytest.approx(0.25)
    assert an["arms"]["pld"]["same_blocks_as"] == "preln"
    post = compare_arms({"baseline": base, "postln-pld": pld}, num_layers=4)["arms"]["postln-pld"]
    assert post["same_blocks_as"] == "baseline" and post["saving_vs_same_blocks"] == pytest.approx(0.4)
    assert an["arms"]["pld"]["blocks_bound"] == pytest.approx(0.25)
    assert an["curves"]["pld"][0]["speedup"]["wall"]["mean"] == pytest.approx(1 / 0.6)
    assert an["verdict"]["trend"]["direction"] == "no clear trend"  # constant speed-up
    assert an["verdict"]["claim"] == "smaller" and an["verdict"]["helps"] is True
    # a speed-up that grows as training goes on: PLD learns faster per sample the further it gets
    grow = [dict(r) for r in pld]
    for r in grow:
        if "val_loss" in r:
            r["val_loss"] = 10.0 - (r["samples"] / 200) ** 1.2
    tr = trend(compare_arms({"baseline": base, "pld": grow}, num_layers=4)["curves"]["pld"])
    assert tr["direction"] == "grows" and tr["last"] > tr["first"]


def _write_runs(root, runs):
    for arm, recs in runs.items():
        (root / arm).mkdir(parents=True)
        (root / arm / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return {arm: read_metrics(root / arm / "metrics.jsonl") for arm in runs}


META = {"command": "pldrop compare --out x", "machine": {"cpus": 2, "torch": "2.13.0"}, "load_start": [0.5, 0.4, 0.3],
        "load_end": [1.0, 0.8, 0.5], "protocol": "lockstep: one optimizer step at a time, least-time-first"}


def test_report_on_the_plateau_makes_no_claim(tmp_path):
    # both arms sit on the unigram plateau (7.03 / 0.06) like today's default compare
    runs = _write_runs(tmp_path, {"baseline": synth(start=7.4, floor=6.95, acc=0.06),
                                  "pld": synth(sec_per_sample=0.007, start=7.4, floor=6.93, acc=0.061, blocks=3)})
    res = write_compare_report(tmp_path, runs, {"baseline": "lr 5e-4", "pld": "lr 1e-3"}, 4,
                               {"loss": 7.03, "accuracy": 0.06}, META)
    md = (tmp_path / "report.md").read_text()
    assert "did not leave the unigram plateau" in md and "no speed-up claim is made" in md
    assert "No claim on the paper's 2.50×" in md
    assert "7.030" in md and "0.060" in md  # the unigram loss and accuracy, beside the final losses
    assert res["analysis"]["verdict"]["claim"] == "no claim"
    assert "the baseline did not leave the unigram plateau: no speed-up claim" in res["summary_lines"]
    for f in ("results.json", "report.md", "val_loss.png", "theta_blocks.png"):
        assert (tmp_path / f).stat().st_size > 0, f


def test_report_writes_every_file_and_recomputes_from_metrics(tmp_path):
    runs = _write_runs(tmp_path, {"baseline": synth(sec_per_sample=0.01),
                                  "preln": synth(sec_per_sample=0.008, rate=1.1),
                                  "pld": synth(sec_per_sample=0.006, rate=1.1, blocks=3, theta=0.5)})
    settings = {a: f"settings of {a}" for a in runs}
    mark_run_folder(tmp_path, "pldrop compare")  # a comparison folder: what the report writes is recorded
    write_compare_report(tmp_path, runs, settings, 4, {"loss": 9.8, "accuracy": 0.06}, META)
    for f in ("results.json", "report.md", "val_loss.png", "val_accuracy.png", "speedup.png", "theta_blocks.png"):
        assert (tmp_path / f).stat().st_size > 0, f
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["plots"] == ["val_loss.png", "val_accuracy.png", "speedup.png", "theta_blocks.png"]
    # every file the report wrote is recorded as pldrop's; the test's hand-made arm files are not
    assert set(foreign_files(tmp_path)) == {p for a in runs for p in (tmp_path / a).rglob("*") if p.is_file()}
    md = (tmp_path / "report.md").read_text()
    assert render_compare(saved) == md  # report.md is a function of results.json
    again = json.loads(json.dumps(compare_arms({a: read_metrics(tmp_path / a / "metrics.jsonl") for a in runs}, 4,
                                               unigram={"loss": 9.8, "accuracy": 0.06})))
    assert again["curves"] == saved["analysis"]["curves"]
    sp = 1.1 / 0.6  # PLD: 1.1x the learning per sample at 0.6x the time per sample
    assert all(r["speedup"]["wall"]["mean"] == pytest.approx(sp) for r in saved["analysis"]["curves"]["pld"])
    assert "left the unigram plateau" in md and "did not leave" not in md
    assert f"is {sp:.2f}× faster than Post-LN BERT in training time" in md
    assert "this is smaller than the paper's figure" in md
    assert "1.38× × 1.33× = 1.83×" in md  # architecture x dropping = total, in time
    assert "lockstep: one optimizer step at a time" in md and "1.00 / 0.80 / 0.50 at the end" in md
    assert "pldrop compare --out x" in md
    assert all(f"settings of {a}" in md for a in runs)


def test_report_says_when_pld_does_not_help(tmp_path):
    runs = _write_runs(tmp_path, {"baseline": synth(sec_per_sample=0.01),
                                  "preln": synth(sec_per_sample=0.009, rate=1.1),
                                  "pld": synth(sec_per_sample=0.012, blocks=3)})  # slower per sample, learns less
    res = write_compare_report(tmp_path, runs, {}, 4, {"loss": 9.8, "accuracy": 0.06}, META)
    md = (tmp_path / "report.md").read_text()
    assert res["analysis"]["verdict"]["helps"] is False
    assert "**Pre-LN + PLD does not help here**" in md
    assert "**Dropping does not help here**" in md
    h = res["analysis"]["headline"]["pld"]["speedup"]["wall"]["mean"]
    assert h == pytest.approx(1 / 1.2)
    assert statistics.fmean([1.0]) == 1.0


@pytest.mark.parametrize("pld_sec, says", [
    # Pre-LN learns at 0.8x Post-LN's pace per sample at the same cost: architecture 0.8x.
    (0.0025, "the speed-up is dropping's"),  # dropping 3.2x: total 2.56x, a speed-up, all of it dropping's
    (0.009, "no faster than Post-LN BERT overall"),  # dropping 1.11x: total 0.89x, no speed-up
])
def test_decomposition_sentence_follows_the_total(tmp_path, pld_sec, says):
    runs = _write_runs(tmp_path, {"baseline": synth(sec_per_sample=0.01),
                                  "preln": synth(sec_per_sample=0.01, rate=0.8),
                                  "pld": synth(sec_per_sample=pld_sec, rate=0.8, blocks=3)})
    res = write_compare_report(tmp_path, runs, {}, 4, {"loss": 9.8, "accuracy": 0.06}, META)
    h = res["analysis"]["decomposition"]["headline"]
    assert h["architecture"]["wall"] == pytest.approx(0.8)
    assert h["dropping"]["wall"] == pytest.approx(0.01 / pld_sec)
    md = (tmp_path / "report.md").read_text()
    assert says in md
    other = {"the speed-up is dropping's", "no faster than Post-LN BERT overall"} - {says}
    assert not any(o in md for o in other)


def test_time_to_accuracy_recomputed_and_every_arm_reaching_the_evidence_level(tmp_path):
    base, pld = synth(sec_per_sample=0.01), synth(sec_per_sample=0.006, rate=1.1, blocks=3, theta=0.5)
    # synth's accuracy is rate * samples / 2000: 0.25 at 500 samples (5 s) for the baseline, 454.5 for PLD
    assert time_to_accuracy(base, 0.25) == pytest.approx(5.0)
    assert time_to_accuracy(pld, 0.25, "samples") == pytest.approx(500 / 1.1)
    assert time_to_accuracy(base, 0.6) is None  # capped at 0.5
    assert [r["target"] for r in accuracy_curve(base, pld)] == [0.15, 0.2, 0.25, 0.3]
    runs = _write_runs(tmp_path, {"baseline": base, "pld": pld})
    res = write_compare_report(tmp_path, runs, {}, 4, {"loss": 9.8, "accuracy": 0.06}, META)
    acc = res["analysis"]["accuracy"]
    assert acc["evidence_reached"] == {"baseline": 1, "pld": 1}
    for r in acc["curves"]["pld"]:
        assert r["arm"]["wall"]["mean"] == pytest.approx(time_to_accuracy(pld, r["target"]))
        assert r["speedup"]["wall"]["mean"] == pytest.approx(1.1 / 0.6)
    assert [r["speedup"]["wall"]["mean"] for r in acc["curves"]["baseline"]] == pytest.approx([1.0] * 4)
    md = (tmp_path / "report.md").read_text()
    assert "**Time to accuracy**" in md and "| 0.25 | 5.0 | 2.7 | 1.83× |" in md
    assert "Every arm reached accuracy 0.25 in every seed" in md
    assert "accuracy 0.25 reached by: Post-LN BERT 1 / 1, Pre-LN + PLD 1 / 1" in res["summary_lines"]


@pytest.mark.parametrize("seeds, pld_accs, cell, says", [
    # the baseline stays at 0.12 (10 s of training); PLD gets to 0.25 at 2.7 s: at least 10 / 2.7 faster
    (1, [None], "| 0.25 | – | 2.7 | ≥ 3.67× |", "not reached by Post-LN BERT (0 / 1); Pre-LN + PLD reached it first"),
    # two seeds, PLD gets there in one: no bound, a count
    (2, [None, 0.2], "| 0.25 | – | 2.7 (1 / 2) | – |", "not reached by Post-LN BERT (0 / 2), Pre-LN + PLD (1 / 2)"),
])
def test_time_to_accuracy_when_not_every_arm_gets_there(tmp_path, seeds, pld_accs, cell, says):
    base = {f"s{i}": synth(sec_per_sample=0.01, acc=0.12) for i in range(seeds)}
    pld = {f"s{i}": synth(sec_per_sample=0.006, rate=1.1, blocks=3, theta=0.5, acc=a) for i, a in enumerate(pld_accs)}
    an = compare_arms({"baseline": base, "pld": pld}, num_layers=4)
    from pldrop.reporting.compare_report import labels_for, render_accuracy

    md = "\n".join(render_accuracy(an, labels_for(["baseline", "pld"])))
    assert cell in md, md
    assert says in md, md
    assert an["accuracy"]["evidence_reached"]["baseline"] == 0
    assert "lower bound" in md  # at 0.15, which every PLD seed reached


def test_time_to_accuracy_when_no_arm_gets_anywhere():
    from pldrop.reporting.compare_report import labels_for, render_accuracy

    an = compare_arms({"baseline": synth(acc=0.12), "pld": synth(acc=0.13, blocks=3)}, num_layers=4)
    assert an["accuracy"]["evidence_reached"] == {"baseline": 0, "pld": 0}
    md = "\n".join(render_accuracy(an, labels_for(["baseline", "pld"])))
    assert "no arm reached masked-token accuracy 0.15 within the budget in any seed" in md and "|" not in md


def test_verdict_names_a_dip_that_the_ends_and_the_slope_hide():
    from pldrop.reporting.compare_report import labels_for, verdict_lines

    base = synth(sec_per_sample=0.01)
    pld = [dict(r) for r in synth(sec_per_sample=0.006, blocks=3, theta=0.5)]
    for r in pld:  # PLD stalls for a while in the middle (a plateau), then learns as before
        if "val_loss" in r and 300 <= r["samples"] < 600:
            r["val_loss"] = 10.0 - 300 / 200
    an = compare_arms({"baseline": base, "pld": pld}, num_layers=4, unigram={"loss": 9.8, "accuracy": 0.06})
    tr = an["verdict"]["trend"]
    low = [e for e in tr["extremes"] if e["kind"] == "lowest"]
    assert low and low[0]["speedup"] < min(tr["first"], tr["last"]) - 0.05
    text = " ".join(verdict_lines(an, labels_for(["baseline", "pld"])))
    assert f"Not monotone in between: lowest {low[0]['speedup']:.2f}× at loss {low[0]['target']:.1f}" in text
    steady = compare_arms({"baseline": base, "pld": synth(sec_per_sample=0.006, blocks=3)}, num_layers=4)
    assert steady["verdict"]["trend"]["extremes"] == []
    assert "Not monotone" not in " ".join(verdict_lines(steady, labels_for(["baseline", "pld"])))


# --- wording: a negative difference reads "above" / "more", never "-0.322 below" / "-12.7 % saved" (issue 26) ---

def _plateau(below):
    return {"baseline": "baseline", "plateau": {
        "unigram_loss": 6.3, "unigram_accuracy": 0.05, "min_accuracy": 0.1, "margin": 0.7, "accuracy_ok": False,
        "final_accuracy": 0.06, "final_loss": 6.3 - below, "loss_ok": False, "below_unigram": below, "left": False}}


@pytest.mark.parametrize("below,expected", [(-0.322, "is 0.322 above the unigram loss"),
                                            (0.322, "is only 0.322 below the unigram loss")])
def test_plateau_wording_says_above_when_the_loss_is_above(below, expected):
    from pldrop.reporting.compare_report import render_plateau

    text = "\n".join(render_plateau(_plateau(below), {"baseline": "Post-LN"}))
    assert expected in text
    assert "-0.322" not in text


@pytest.mark.parametrize("saving,expected", [(-0.127, "Against Pre-LN (the same blocks, not dropped): 12.7 % more "
                                                       "time per sample"),
                                             (0.127, "Against Pre-LN (the same blocks, not dropped): 12.7 % less "
                                                     "time per sample")])
def test_time_per_sample_wording_says_more_when_slower(saving, expected):
    from pldrop.reporting.compare_report import render_time_per_sample

    arm = {"saving_per_sample": saving - 0.05, "blocks_bound": 0.25, "steady_blocks_bound": 0.4,
           "same_blocks_as": "preln", "saving_vs_same_blocks": saving}
    an = {"baseline": "baseline", "arms": {"baseline": {"blocks_bound": 0.0}, "pld": arm}}
    text = "\n".join(render_time_per_sample(an, {"baseline": "Post-LN", "preln": "Pre-LN", "pld": "PLD"}))
    assert expected in text
    assert "-12.7" not in text and "saved" not in text
