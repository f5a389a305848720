"""`pldrop pretrain` / `pldrop compare` end to end on the tiny fixture corpus."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pldrop.cli import main
from pldrop.train.analysis import read_metrics, time_to_loss

CORPUS = str(Path(__file__).parents[1] / "fixtures" / "corpus" / "tiny.txt")
TINY = ["--preset", "tiny", "--batch-size", "8", "--no-progress", "data.vocab_size=400", "data.val_max_seqs=16"]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PLDROP_CACHE", str(tmp_path_factory.getbasetemp() / "pldrop-cache"))


def _pretrain(out, *extra):
    return main(["pretrain", "--corpus", CORPUS, "--out", str(out), *TINY, *extra])


def _cli(*args, env=None, **kw):
    return subprocess.Popen([sys.executable, "-m", "pldrop", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)


def test_pretrain_run_folder(tmp_path, capsys):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    out = tmp_path / "run"
    assert _pretrain(out, "--max-steps", "6", "--eval-every", "3", "--save-every", "3") == 0
    for f in ("config.yaml", "config.json", "model.safetensors", "tokenizer.json", "pldrop.json",
              "metrics.jsonl", "summary.json", "CREDITS.md", "checkpoints/latest.json"):
        assert (out / f).exists(), f
    recs = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in recs] == [1, 2, 3, 4, 5, 6]
    for r in recs:
        assert {"step", "loss", "lr", "theta", "blocks_run", "samples_per_s", "wall", "flops"} <= set(r)
        assert r["samples"] == 8 * r["step"]
    assert [r["step"] for r in recs if "val_loss" in r] == [3, 6]
    assert recs[0]["theta"] == 1.0 and recs[-1]["theta"] < 1.0  # γ = 100/T: θ decays within the run
    pld = json.loads((out / "pldrop.json").read_text())
    assert pld["enabled"] and pld["gamma"] == pytest.approx(100 / 6)
    model, info = AutoModelForMaskedLM.from_pretrained(out, output_loading_info=True)
    assert type(model).__name__ == "RobertaPreLayerNormForMaskedLM"
    assert not info["missing_keys"] and not info["unexpected_keys"]
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.mask_token == "[MASK]" and len(tok) == model.config.vocab_size
    assert list((out / "tb").iterdir())  # TensorBoard events
    # the final validation loss in summary.json is recomputable from the saved model
    from pldrop.data.dataset import prepare_data
    from pldrop.train.loop import evaluate

    data = prepare_data([CORPUS], vocab_size=400, tokenizer_dir=out)
    summary = json.loads((out / "summary.json").read_text())
    again = evaluate(model, data.valid, 8, 16, summary["precision"] == "bf16", torch.device("cpu"))
    assert again["val_loss"] == pytest.approx(summary["val_loss"], rel=1e-5)
    # ... and so is the word-order probe, logged with the final evaluation only
    probe = evaluate(model, data.valid, 8, 16, summary["precision"] == "bf16", torch.device("cpu"), shuffled=True)
    assert probe["val_accuracy_shuffled"] == pytest.approx(summary["val_accuracy_shuffled"], abs=1e-9)
    assert probe["val_loss_shuffled"] == pytest.approx(summary["val_loss_shuffled"], rel=1e-5)
    assert [r["step"] for r in recs if "val_loss_shuffled" in r] == [6]


def test_baseline_arm_is_post_ln_bert(tmp_path):
    out = tmp_path / "base"
    assert _pretrain(out, "--arm", "baseline", "--max-steps", "2") == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "bert"
    assert json.loads((out / "pldrop.json").read_text())["enabled"] is False
    assert all(r["blocks_run"] == 2 for r in read_metrics(out / "metrics.jsonl"))


def _losses(path):
    return [(r["step"], r["loss"]) for r in read_metrics(path)]


@pytest.mark.slow
def test_resume_after_sigkill_gives_identical_losses(tmp_path):
    env = dict(os.environ)
    args = ["pretrain", "--corpus", CORPUS, *TINY, "--max-steps", "16", "--save-every", "4", "--eval-every", "8",
            "optim.grad_accum=2"]
    full = tmp_path / "full"
    p = _cli(*args, "--out", str(full), env=env)
    assert p.wait(timeout=300) == 0, p.stderr.read()

    killed = tmp_path / "killed"
    p = _cli(*args, "--out", str(killed), env=env)
    pointer = killed / "checkpoints" / "latest.json"
    deadline = time.time() + 300
    while time.time() < deadline:
        if pointer.exists() and json.loads(pointer.read_text())["step"] >= 8:
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    ckpt_step = json.loads(pointer.read_text())["step"]
    assert 8 <= ckpt_step < 16, "the run finished before it could be killed"

    p = _cli("pretrain", "--out", str(killed), "--resume", "--no-progress", env=env)
    assert p.wait(timeout=300) == 0, p.stderr.read()
    assert _losses(killed / "metrics.jsonl") == _losses(full / "metrics.jsonl")  # exact, every step
    a = read_metrics(full / "metrics.jsonl")
    b = read_metrics(killed / "metrics.jsonl")
    assert [r.get("val_loss") for r in a] == [r.get("val_loss") for r in b]
    assert [r["theta"] for r in a] == [r["theta"] for r in b]


@pytest.mark.slow
def test_sigterm_writes_checkpoint_and_exits_cleanly(tmp_path):
    out = tmp_path / "term"
    p = _cli("pretrain", "--corpus", CORPUS, *TINY, "--max-steps", "100000", "--save-every", "0",
             "--out", str(out))
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "metrics.jsonl").exists():
        time.sleep(0.05)
    time.sleep(1.0)
    p.send_signal(signal.SIGTERM)
    rc = p.wait(timeout=60)
    stderr = p.stderr.read()
    assert rc == 143, stderr
    assert "checkpoint saved" in stderr and "Traceback" not in stderr  # the interrupt message goes to stderr
    step = json.loads((out / "checkpoints" / "latest.json").read_text())["step"]
    assert step == read_metrics(out / "metrics.jsonl")[-1]["step"]


def _exit2(capsys, argv, needle):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1, err
    assert needle in err, err
    return err


def test_bad_inputs_exit_2(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n")
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"hello\x00\x01\x02 world")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    small = tmp_path / "small.txt"
    small.write_text("one short document.\n\nanother one.\n")
    base = ["pretrain", "--out", str(tmp_path / "o"), "--no-progress", "--preset", "tiny"]
    _exit2(capsys, base + ["--corpus", str(tmp_path / "missing.txt")], "missing.txt")
    _exit2(capsys, base + ["--corpus", str(empty)], "empty.txt")
    _exit2(capsys, base + ["--corpus", str(binary)], "bin.txt")
    _exit2(capsys, base + ["--corpus", str(latin)], "latin.txt")
    _exit2(capsys, base + ["--corpus", str(small), "data.vocab_size=100"], "fewer than one")
    _exit2(capsys, base + ["--corpus", CORPUS, "optim.lrr=1e-3"], "did you mean 'lr'")
    _exit2(capsys, base + ["--corpus", CORPUS, "optim.lr=5"], "optim.lr=5.0 is out of range")
    _exit2(capsys, base + ["--corpus", CORPUS, "pld.theta_bar=0"], "pld.theta_bar")
    _exit2(capsys, base + ["--corpus", CORPUS, "optim.batch_size=abc"], "must be an integer")
    _exit2(capsys, base + ["--corpus", CORPUS, "--config", str(tmp_path / "nope.yaml")], "nope.yaml")
    _exit2(capsys, base + ["--corpus", "no-such-recipe"], "no-such-recipe")
    assert not (tmp_path / "o").exists()  # nothing was created by any of these


def test_existing_folder_and_resume_mismatch(tmp_path, capsys):
    out = tmp_path / "run"
    assert _pretrain(out, "--max-steps", "2") == 0
    capsys.readouterr()
    before = (out / "model.safetensors").read_bytes()
    _exit2(capsys, ["pretrain", "--corpus", CORPUS, "--out", str(out), *TINY, "--max-steps", "2"], "already exists")
    assert (out / "model.safetensors").read_bytes() == before  # nothing overwritten
    _exit2(capsys, ["pretrain", "--out", str(out), "--resume", "--arm", "baseline", "--no-progress"],
           "model.arm='pld', not 'baseline'")
    _exit2(capsys, ["pretrain", "--out", str(out), "--resume", "--preset", "mini", "--no-progress"], "model.preset=")
    _exit2(capsys, ["pretrain", "--out", str(tmp_path / "nothing"), "--resume", "--no-progress"], "config.yaml")
    other_tok = tmp_path / "tok"
    from pldrop.data.tokenizer import train_wordpiece

    train_wordpiece(["a different corpus entirely, with other words"] * 20, vocab_size=120, out_dir=other_tok)
    _exit2(capsys, ["pretrain", "--out", str(out), "--resume", "--tokenizer", str(other_tok), "--no-progress"],
           "another tokenizer")
    # the run's own tokenizer is accepted
    assert main(["pretrain", "--out", str(out), "--resume", "--tokenizer", str(out), "--max-steps", "3",
                 "--no-progress"]) == 0
    capsys.readouterr()
    # --overwrite replaces it
    assert _pretrain(out, "--max-steps", "3", "--overwrite") == 0
    assert read_metrics(out / "metrics.jsonl")[-1]["step"] == 3


def test_tampered_or_truncated_checkpoint_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert _pretrain(out, "--max-steps", "2") == 0
    ck = out / "checkpoints" / json.loads((out / "checkpoints" / "latest.json").read_text())["checkpoint"]
    capsys.readouterr()
    # a pickle that would run code, in place of the optimizer state
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    (ck / "optimizer.pt").write_bytes(pickle.dumps(Evil()))
    _exit2(capsys, ["pretrain", "--out", str(out), "--resume", "--max-steps", "4", "--no-progress"], "damaged")
    assert not (tmp_path / "pwned").exists()
    # even with the recorded hash updated, weights_only loading refuses the pickle
    state = json.loads((ck / "state.json").read_text())
    import hashlib

    state["files"]["optimizer.pt"] = hashlib.sha256((ck / "optimizer.pt").read_bytes()).hexdigest()
    (ck / "state.json").write_text(json.dumps(state))
    sums = json.loads((ck / "manifest.json").read_text())  # and in the manifest, which covers state.json
    sums["sha256"].update({f: hashlib.sha256((ck / f).read_bytes()).hexdigest() for f in ("optimizer.pt", "state.json")})
    (ck / "manifest.json").write_text(json.dumps(sums))
    _exit2(capsys, ["pretrain", "--out", str(out), "--resume", "--max-steps", "4", "--no-progress"], "cannot be loaded")
    assert not (tmp_path / "pwned").exists()
    # truncated weights
    data = (ck / "model.safetensors").read_bytes()
    (ck / "model.safetensors").write_bytes(data[: len(data) // 2])
    _exit2(capsys, ["pretrain", "--out", str(out), "--resume", "--max-steps", "4", "--no-progress"], "damaged")


def test_nan_loss_stops_with_clear_message(tmp_path, capsys, monkeypatch):
    from pldrop.models import MaskedLMLoss

    orig = MaskedLMLoss.forward
    calls = {"n": 0}

    def poisoned(self, *a):
        loss, c, n = orig(self, *a)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] >= 4 and self.training else loss), c, n

    monkeypatch.setattr(MaskedLMLoss, "forward", poisoned)
    out = tmp_path / "nan"
    err = _exit2(capsys, ["pretrain", "--corpus", CORPUS, "--out", str(out), *TINY, "--max-steps", "10",
                          "--save-every", "2", "--eval-every", "100"], "the loss became nan at step 4")  # metrics.jsonl numbering: the 4th step
    assert "intact" in err
    latest = json.loads((out / "checkpoints" / "latest.json").read_text())
    assert latest["step"] == 2  # the last good checkpoint, not overwritten with NaN weights


def test_config_file_and_resolved_config(tmp_path, capsys):
    import yaml

    cfg = tmp_path / "c.yaml"
    cfg.write_text("optim:\n  lr: 0.002\n  schedule: exp\npld:\n  theta_bar: 0.7\nbudget:\n  max_steps: 3\n")
    out = tmp_path / "run"
    assert main(["pretrain", "--corpus", CORPUS, "--out", str(out), *TINY, "--config", str(cfg), "pld.rule=uniform"]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["optim"]["lr"] == 0.002 and saved["optim"]["schedule"] == "exp"
    assert saved["pld"] == {"theta_bar": 0.7, "gamma": None, "rule": "uniform", "fixed": False, "rescale": True,
                            "schedule": "pld", "cooldown": 0.2}
    assert saved["budget"]["max_steps"] == 3
    assert read_metrics(out / "metrics.jsonl")[0]["lr"] <= 0.002


def test_compare_resume_with_a_spent_budget_changes_nothing(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--corpus", CORPUS, "--out", str(out), *TINY, "--arms", "preln", "pld",
                 "--max-steps", "3", "--eval-every", "2"]) == 0

    def snapshot():
        return {str(p.relative_to(out)): (p.read_bytes(), p.stat().st_mtime_ns)
                for p in sorted(out.rglob("*")) if p.is_file()}

    before = snapshot()
    for budget in ([], ["--max-steps", "3"], ["--max-steps", "1"]):
        capsys.readouterr()
        assert main(["compare", "--out", str(out), "--resume", "--no-progress", *budget]) == 0
        cap = capsys.readouterr()
        lines = cap.err.strip().splitlines()
        assert len(lines) == 1 and "already at step preln 3, pld 3" in lines[0] and "nothing to do" in lines[0], cap
        assert "horizon" not in cap.err and cap.out == ""
        assert snapshot() == before  # byte-identical, nothing rewritten
    # a resume that is not this comparison is still refused, nothing to do or not
    _exit2(capsys, ["compare", "--out", str(out), "--resume", "--preset", "mini", "--no-progress"], "model.preset=")
    assert snapshot() == before
    (out / "report.md").unlink()  # killed after training, before the report: resuming writes it
    assert main(["compare", "--out", str(out), "--resume", "--no-progress"]) == 0
    assert (out / "report.md").is_file() and "nothing to do" not in capsys.readouterr().err


def test_compare_writes_report_recomputable_from_metrics(tmp_path, capsys):
    from pldrop.train.analysis import compare_arms

    out = tmp_path / "cmp"
    rc = main(["compare", "--corpus", CORPUS, "--out", str(out), *TINY, "--max-steps", "8", "--eval-every", "2"])
    assert rc == 0
    printed = capsys.readouterr().out
    for f in ("report.md", "results.json", "val_loss.png", "theta_blocks.png", "compare.json", "baseline/metrics.jsonl",
              "preln/metrics.jsonl", "pld/metrics.jsonl"):
        assert (out / f).exists(), f
    res = json.loads((out / "results.json").read_text())
    recs = {a: read_metrics(out / a / "metrics.jsonl") for a in ("baseline", "preln", "pld")}
    again = json.loads(json.dumps(compare_arms(recs, 2, unigram=res["analysis"]["unigram"])))
    for arm in ("preln", "pld"):
        for k in ("time_per_sample_ratio", "saving_per_sample", "blocks_bound"):
            assert again["arms"][arm][k] == res["analysis"]["arms"][arm][k], (arm, k)
    assert again["curves"] == res["analysis"]["curves"]
    report = (out / "report.md").read_text()
    pld_saving = res["analysis"]["arms"]["pld"]["saving_per_sample"]
    assert f"{100 * pld_saving:.1f} %" in report
    assert "time per sample" in printed
    # the word-order probe: every arm's final record carries it, and the report says what it found
    for arm, rs in recs.items():
        w = res["analysis"]["word_order"][arm]
        assert w["accuracy"] == rs[-1]["val_accuracy"] and w["shuffled"] == rs[-1]["val_accuracy_shuffled"]
        assert f"{w['accuracy']:.3f} → {w['shuffled']:.3f}" in report
    assert "**Word order**" in report and "on shuffled text" in printed
    # all arms saw the same data: the same sample counts per step, validated at the same counts
    assert [r["samples"] for r in recs["baseline"]] == [r["samples"] for r in recs["pld"]]
    assert ([r["samples"] for r in recs["preln"] if "val_loss" in r]
            == [r["samples"] for r in recs["pld"] if "val_loss" in r])
    # --report-only rewrites the report from the metrics, keeping what was recorded when it ran
    for f in ("report.md", "val_accuracy.png", "theta_blocks.png"):
        (out / f).unlink()
    assert main(["compare", "--out", str(out), "--report-only"]) == 0
    assert (out / "report.md").read_text() == report
    assert (out / "val_accuracy.png").is_file() and (out / "theta_blocks.png").is_file()
    res2 = json.loads((out / "results.json").read_text())
    assert res2["meta"] == res["meta"] and res2["analysis"] == res["analysis"]
    assert "--report-only" not in report and "report: " in capsys.readouterr().out
    with open(out / "pld" / "metrics.jsonl", "a") as f:  # a damaged line: one line, exit 2, nothing rewritten
        f.write("{not json\n")
    _exit2(capsys, ["compare", "--out", str(out), "--report-only"], "metrics.jsonl' is damaged")
    assert (out / "report.md").read_text() == report


def _fake_compare(root, results=None, arms=("baseline", "pld")):
    root.mkdir()
    (root / "compare.json").write_text(json.dumps({"arms": list(arms), "seeds": [0]}))
    if results is not None:
        (root / "results.json").write_text(results)
    return root


@pytest.mark.parametrize("make, extra, needle", [
    (lambda p: p.mkdir(), [], "is not a pldrop compare folder"),
    (lambda p: _fake_compare(p), [], "has not finished (continue it with pldrop compare --resume"),
    (lambda p: _fake_compare(p, "{not json"), [], "results.json' is damaged"),
    (lambda p: _fake_compare(p, json.dumps({"analysis": {}})), [], "results.json' is damaged (meta is None, not a mapping)"),
    (lambda p: _fake_compare(p, json.dumps({"meta": {}, "analysis": {"num_layers": 2}})), [], "has no config.yaml"),
    (lambda p: _fake_compare(p, "{}"), ["--resume"], "leave out --resume"),
    (lambda p: _fake_compare(p, "{}"), ["--seeds", "2", "optim.lr=1e-3"], "leave out --seeds key=value overrides"),
])
def test_report_only_refuses_in_one_line(tmp_path, capsys, make, extra, needle):
    out = tmp_path / "cmp"
    make(out)
    before = sorted(p.name for p in out.iterdir())
    _exit2(capsys, ["compare", "--out", str(out), "--report-only", *extra], needle)
    assert sorted(p.name for p in out.iterdir()) == before  # nothing written


def test_time_to_loss_interpolates():
    recs = [{"wall": 1.0, "samples": 10, "val_loss": 5.0}, {"wall": 3.0, "samples": 30, "val_loss": 4.0}]
    assert time_to_loss(recs, 4.5) == 2.0
    assert time_to_loss(recs, 4.5, "samples") == 20.0
    assert time_to_loss(recs, 3.9) is None


def test_fixed_rate_ablation_holds_theta(tmp_path):
    out = tmp_path / "fixed"
    assert _pretrain(out, "--max-steps", "3", "pld.fixed=true", "pld.theta_bar=0.7") == 0
    recs = read_metrics(out / "metrics.jsonl")
    assert [r["theta"] for r in recs] == [0.7, 0.7, 0.7]  # no progressive schedule: θ̄ from step 0
    assert recs[0]["expected_kept"] == pytest.approx(sum(__import__("pldrop").keep_probs(0.7, 2)))


@pytest.mark.parametrize("schedule", ["pld", "cooldown", "constant", "anneal"])
def test_depth_schedules_log_theta(tmp_path, schedule):
    import pldrop

    out = tmp_path / schedule
    T = 5
    assert _pretrain(out, "--max-steps", str(T), "--eval-every", "5", f"pld.schedule={schedule}") == 0
    recs = read_metrics(out / "metrics.jsonl")
    thetas = [r["theta"] for r in recs]
    g = pldrop.gamma_for_steps(T)
    assert thetas == [pldrop.theta_at_step(schedule, t, T, 0.5, g) for t in range(T)]
    if schedule == "pld":  # the default, untouched: DeepSpeed's θ(t) with γ = 100/T
        assert thetas == [pldrop.theta(t, 0.5, g) for t in range(T)]
    if schedule in ("cooldown", "anneal"):
        assert thetas[-1] == 1.0 and recs[-1]["expected_kept"] == 2.0  # the last step trains the full model
    if schedule == "constant":
        assert set(thetas) == {pldrop.constant_theta(T, 0.5)}
        assert recs[0]["expected_kept"] == pytest.approx(
            sum(pldrop.expected_kept(pldrop.theta(t, 0.5, g), 2) for t in range(T)) / T)
    assert json.loads((out / "pldrop.json").read_text())["schedule"] == schedule
    assert json.loads((out / "summary.json").read_text())["schedule"] == schedule


@pytest.mark.parametrize("schedule", ["cooldown", "anneal"])
def test_resume_is_exact_with_a_depth_schedule(tmp_path, schedule):
    """A run resumed from a checkpoint before its cooldown (the state a kill after that save leaves)
    logs the same losses and θ as the run trained in one go."""
    args = ["--max-steps", "8", "--save-every", "4", "--eval-every", "4", "model.dropout=0.1",
            f"pld.schedule={schedule}", "pld.cooldown=0.3"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert _pretrain(full, *args) == 0
    assert _pretrain(cut, *args) == 0
    ckpts = cut / "checkpoints"
    (ckpts / "latest.json").write_text(json.dumps({"checkpoint": "step-0000004", "step": 4}))
    import shutil

    shutil.rmtree(ckpts / "step-0000008")
    (cut / "summary.json").unlink()
    assert main(["pretrain", "--out", str(cut), "--resume", "--no-progress"]) == 0
    a, b = read_metrics(full / "metrics.jsonl"), read_metrics(cut / "metrics.jsonl")
    assert [r["step"] for r in b] == list(range(1, 9))
    for key in ("loss", "theta", "lr", "blocks_run", "val_loss"):
        assert [r.get(key) for r in a] == [r.get(key) for r in b], key
    assert b[-1]["theta"] == 1.0  # the last step at full depth
    if schedule == "cooldown":  # resumed at step 4, before the ramp (from progress 0.7 = step 4.9)
        assert b[4]["theta"] == 0.5 and 0.5 < b[5]["theta"] < 1.0


def test_compare_takes_a_depth_schedule(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--corpus", CORPUS, "--out", str(out), *TINY, "--arms", "preln", "pld", "--max-steps", "4",
                 "--eval-every", "2", "pld.schedule=anneal"]) == 0
    recs = read_metrics(out / "pld" / "metrics.jsonl")
    assert [r["theta"] for r in recs] == pytest.approx([0.5, 2 / 3, 5 / 6, 1.0])
    assert "schedule anneal" in (out / "report.md").read_text()
