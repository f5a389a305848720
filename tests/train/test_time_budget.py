"""Under a time budget the learning rate and θ follow the fraction of the budget used (training
time / budget): after the warm-up the learning rate never rises again, whatever the load."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pldrop.train.analysis import read_metrics
from pldrop.train.optim import lr_at, lr_at_fraction

CORPUS = str(Path(__file__).parents[1] / "fixtures" / "corpus" / "tiny.txt")
BUDGET_S = 12.0


def test_lr_at_fraction_shape():
    fr = [i / 1000 for i in range(1001)]
    lrs = [lr_at_fraction(f, 2e-3, "linear", 0.06) for f in fr]
    peak = max(range(len(lrs)), key=lrs.__getitem__)
    assert fr[peak] == pytest.approx(0.06) and lrs[peak] == pytest.approx(2e-3)
    assert all(a <= b for a, b in zip(lrs[:peak], lrs[1:peak + 1]))  # warm-up rises
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1:]))  # then never rises
    assert lrs[0] == 0.0 and lrs[-1] == 0.0 and lrs[530] == pytest.approx(1e-3)  # halfway through the decay
    # the same line as the step schedule at step / horizon
    assert lr_at_fraction(0.5, 1.0, "linear", 0.1) == pytest.approx(lr_at(50, 1.0, 100, "linear", 0.1))
    assert lr_at_fraction(1.7, 1.0, "linear", 0.1) == 0.0 and lr_at_fraction(-1, 1.0, "linear", 0.0) == 1.0
    assert {lr_at_fraction(f, 1.0, "constant", 0.1) for f in fr[100:]} == {1.0}
    exp = [lr_at_fraction(0.5, 1.0, "exp", 0.1, 0.5, 10, n) for n in range(0, 40, 10)]
    assert exp == [1.0, 0.5, 0.25, 0.125]  # exp: per step, counted from the end of the warm-up


def _on_one_cpu():
    """Put the training process and the burner on the same CPU, so the burner really slows training."""
    cpu = min(os.sched_getaffinity(0))
    return lambda: os.sched_setaffinity(0, {cpu})


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_lr_never_rises_after_its_peak_under_changing_load(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PLDROP_CACHE": str(tmp_path / "cache")}
    pin = _on_one_cpu()
    p = subprocess.Popen([sys.executable, "-m", "pldrop", "pretrain", "--corpus", CORPUS, "--out", str(out),
                          "--preset", "tiny", "--batch-size", "8", "--no-progress", "data.vocab_size=400",
                          "data.val_max_seqs=8", "--max-minutes", str(BUDGET_S / 60), "--eval-every", "100000", "--threads", "1",
                          "pld.schedule=cooldown"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=pin)
    metrics = out / "metrics.jsonl"

    def fraction():
        try:
            lines = metrics.read_text().splitlines()
            return json.loads(lines[-1])["wall"] / BUDGET_S if lines else 0.0
        except (OSError, ValueError, KeyError):
            return 0.0

    def wait_for(f):
        deadline = time.time() + 300
        while fraction() < f and p.poll() is None and time.time() < deadline:
            time.sleep(0.01)

    burner = None
    try:
        wait_for(0.15)  # a few steps after the warm-up, then load for a while, then none
        burner = subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=pin)
        wait_for(0.5)
        burner.kill()
        burner.wait()
        burner = None
        assert p.wait(timeout=300) == 0, p.stderr.read()
    finally:
        for proc in (burner, p):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    recs = read_metrics(metrics)
    lrs = [r["lr"] for r in recs]
    peak = max(range(len(lrs)), key=lrs.__getitem__)
    rises = [(recs[i]["step"], lrs[i], lrs[i + 1]) for i in range(peak, len(lrs) - 1) if lrs[i + 1] > lrs[i]]
    assert not rises, rises[:5]
    fractions = [r["budget_fraction"] for r in recs]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] > 0.9
    # θ follows the same clock: the cooldown ramps it back towards 1 over the last fifth of the budget
    assert all(r["theta"] == pytest.approx(0.5, abs=1e-6) for r in recs if 0.2 < r["budget_fraction"] < 0.8)
    assert recs[-1]["theta"] > 0.9
