"""Lockstep compare: arms interleaved one step at a time in one process, independent of each other."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pldrop.cli import main
from pldrop.train.analysis import read_metrics

CORPUS = str(Path(__file__).parents[1] / "fixtures" / "corpus" / "tiny.txt")
TINY = ["--preset", "tiny", "--batch-size", "8", "--no-progress", "data.vocab_size=400", "data.val_max_seqs=16"]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PLDROP_CACHE", str(tmp_path_factory.getbasetemp() / "pldrop-cache"))


def _losses(path):
    return [(r["step"], r["loss"], r.get("val_loss")) for r in read_metrics(path)]


def test_arm_in_lockstep_equals_the_arm_trained_alone(tmp_path, capsys):
    """Each arm owns its RNG stream, data order and gates: interleaving changes nothing (dropout on)."""
    common = [*TINY, "--max-steps", "6", "--eval-every", "3", "model.dropout=0.1", "optim.precision=fp32",
              "data.seq_len=128", "optim.lr=0.001"]  # the same settings as pretrain's defaults
    assert main(["compare", "--corpus", CORPUS, "--out", str(tmp_path / "cmp"), "--arms", "preln", "pld",
                 *common]) == 0
    for arm in ("preln", "pld"):
        alone = tmp_path / f"alone-{arm}"
        assert main(["pretrain", "--corpus", CORPUS, "--out", str(alone), "--arm", arm, *common]) == 0
        assert _losses(tmp_path / "cmp" / arm / "metrics.jsonl") == _losses(alone / "metrics.jsonl")


def test_lockstep_turns_go_to_the_arm_with_least_time(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--corpus", CORPUS, "--out", str(out), *TINY, "--max-minutes", "0.03",
                 "--eval-every", "4"]) == 0
    recs = {a: read_metrics(out / a / "metrics.jsonl") for a in ("baseline", "preln", "pld")}
    walls = [recs[a][-1]["wall"] for a in recs]
    # every arm got the same training time, to within one step of the slowest arm
    longest_step = max(r["step_time"] for rs in recs.values() for r in rs)
    assert max(walls) - min(walls) <= longest_step + 1e-9
    # validation at the same sample counts for every arm (the shorter list is a prefix of the longer)
    evals = {a: [r["samples"] for r in rs if "val_loss" in r] for a, rs in recs.items()}
    shortest = min(evals.values(), key=len)
    assert all(v[:len(shortest) - 1] == shortest[:-1] for v in evals.values())  # the last is the budget's end
    assert json.loads((out / "compare.json").read_text())["arms"] == ["baseline", "preln", "pld"]


def _cli(*args):
    return subprocess.Popen([sys.executable, "-m", "pldrop", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.mark.slow
def test_lockstep_resume_after_sigkill_is_exact(tmp_path):
    args = ["compare", "--corpus", CORPUS, *TINY, "--arms", "baseline", "pld", "--max-steps", "12",
            "--save-every", "2", "--eval-every", "3", "model.dropout=0.1"]
    full = tmp_path / "full"
    p = _cli(*args, "--out", str(full))
    assert p.wait(timeout=300) == 0, p.stderr.read()

    killed = tmp_path / "killed"
    p = _cli(*args, "--out", str(killed))
    pointers = [killed / a / "checkpoints" / "latest.json" for a in ("baseline", "pld")]
    deadline = time.time() + 300
    while time.time() < deadline:
        if all(q.exists() and json.loads(q.read_text())["step"] >= 4 for q in pointers):
            break
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    steps = [json.loads(q.read_text())["step"] for q in pointers]
    assert all(4 <= s < 12 for s in steps), steps

    p = _cli("compare", "--out", str(killed), "--resume", "--no-progress")
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    for arm in ("baseline", "pld"):
        assert _losses(killed / arm / "metrics.jsonl") == _losses(full / arm / "metrics.jsonl"), arm
    assert (killed / "report.md").is_file()


@pytest.mark.slow
def test_lockstep_ratio_is_insensitive_to_load(tmp_path):
    """A CPU-burning process during half of a run moves both arms' step times alike: the ratio of
    time per sample stays within 5 % of the ratio measured without it."""
    def ratio(out, burn: bool) -> float:
        p = _cli("compare", "--corpus", CORPUS, "--out", str(out), "--preset", "narrow", "--batch-size", "8",
                 "--no-progress", "data.vocab_size=400", "data.val_max_seqs=8", "data.seq_len=64",
                 "--arms", "preln", "pld", "--max-minutes", "0.2", "--eval-every", "1000", "--threads", "1",
                 "pld.fixed=true")
        burner = None
        if burn:
            time.sleep(4.0)  # data preparation, then about half the run under load
            burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            assert p.wait(timeout=300) == 0, p.stderr.read()
        finally:
            if burner is not None:
                burner.kill()
                burner.wait()
        per_sample = {}
        for arm in ("preln", "pld"):
            recs = read_metrics(out / arm / "metrics.jsonl")[1:]  # the first step warms up
            per_sample[arm] = sum(r["step_time"] for r in recs) / (recs[-1]["samples"] - recs[0]["samples"] + 8)
        return per_sample["pld"] / per_sample["preln"]

    quiet = ratio(tmp_path / "quiet", burn=False)
    loaded = ratio(tmp_path / "loaded", burn=True)
    assert quiet < 0.97  # θ held at 0.5: PLD runs fewer blocks, its steps are cheaper
    assert abs(loaded / quiet - 1) < 0.05, (quiet, loaded)


def test_bf16_run_tracks_the_fp32_run(tmp_path, capsys):
    """A short bf16-autocast run's losses stay within 2 % of the fp32 run's, step by step (same data,
    init and gates); the precision used is recorded in pldrop.json and summary.json."""
    runs = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        assert main(["pretrain", "--corpus", CORPUS, "--out", str(out), *TINY, "--max-steps", "10", "--eval-every", "5",
                     f"optim.precision={precision}"]) == 0
        runs[precision] = read_metrics(out / "metrics.jsonl")
        assert json.loads((out / "pldrop.json").read_text())["precision"] == precision
        assert json.loads((out / "summary.json").read_text())["precision"] == precision
    for a, b in zip(runs["fp32"], runs["bf16"]):
        assert b["loss"] == pytest.approx(a["loss"], rel=0.02), (a["step"], a["loss"], b["loss"])
        assert b["blocks_run"] == a["blocks_run"]  # the same gates
    assert runs["bf16"][-1]["val_loss"] == pytest.approx(runs["fp32"][-1]["val_loss"], rel=0.02)
    assert [r["loss"] for r in runs["bf16"]] != [r["loss"] for r in runs["fp32"]]  # bf16 really ran


def _signals_during(monkeypatch, where: str, count: int):
    """Send ``count`` SIGTERMs to this process when compare reaches ``where`` (after training)."""
    import os

    import pldrop.train.compare as compare
    from pldrop.train.run import PretrainRun

    if where == "report":
        real = compare.write_report

        def hooked(*a, **k):
            for _ in range(count):
                os.kill(os.getpid(), signal.SIGTERM)
            return real(*a, **k)

        monkeypatch.setattr(compare, "write_report", hooked)
    else:  # the first arm's final save
        real_finish = PretrainRun.finish
        sent = []

        def finish(self):
            if not sent:
                sent.append(1)
                for _ in range(count):
                    os.kill(os.getpid(), signal.SIGTERM)
            return real_finish(self)

        monkeypatch.setattr(PretrainRun, "finish", finish)


@pytest.mark.parametrize("where, count, rc, needle", [
    ("report", 1, 0, "SIGTERM arrived after training had finished; the models were saved and the report written"),
    ("models", 1, 0, "SIGTERM arrived after training had finished"),
    ("report", 2, 143, "stopped at once (second signal) while the report was written; training had finished: "
                       "pldrop compare --resume --out"),
    ("models", 2, 143, "stopped at once (second signal) while the models were saved; training had finished: "
                       "pldrop compare --resume --out"),
])
def test_signals_after_training_finish_or_stop_and_say_which(tmp_path, capsys, monkeypatch, where, count, rc, needle):
    """Issue 23 item 9: one SIGTERM during the final report was ignored (rc 0, nothing said), a second
    printed an 'Exception ignored' traceback and still exited 0."""
    out = tmp_path / "cmp"
    _signals_during(monkeypatch, where, count)
    got = main(["compare", "--corpus", CORPUS, "--out", str(out), *TINY, "--arms", "baseline", "pld",
                "--max-steps", "2", "--eval-every", "2"])
    err = capsys.readouterr().err
    assert got == rc, err
    assert needle in err and "Exception ignored" not in err and "Traceback" not in err, err
    assert (out / "report.md").is_file() == (rc == 0)
    monkeypatch.undo()
    monkeypatch.setenv("PLDROP_CACHE", str(tmp_path.parent / "pldrop-cache"))
    if rc:  # the advice works: the comparison is completed without training again
        import re

        advice = re.search(r"pldrop compare (--resume --out \S+)", err).group(1).split()
        assert main(["compare", *advice, "--no-progress"]) == 0
        assert (out / "report.md").is_file()
        assert [r["step"] for r in read_metrics(out / "pld" / "metrics.jsonl")] == [1, 2]


def test_compare_resume_on_a_changed_corpus_advises_no_flag_compare_lacks(tmp_path, capsys):
    """Issue 23 item 9: compare advised --allow-data-change, which it does not take."""
    corpus = tmp_path / "c.txt"
    corpus.write_text(Path(CORPUS).read_text())
    out = tmp_path / "cmp"
    assert main(["compare", "--corpus", str(corpus), "--out", str(out), *TINY, "--arms", "baseline", "pld",
                 "--max-steps", "2", "--eval-every", "2"]) == 0
    corpus.write_text(Path(CORPUS).read_text() + "\n\nA new document about something else entirely.\n")
    capsys.readouterr()
    assert main(["compare", "--out", str(out), "--resume", "--max-steps", "3", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "the corpus changed" in err and "--allow-data-change" not in err, err
