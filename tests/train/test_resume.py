"""--resume continues the same run: a longer budget extends the schedules, changes are recorded,
a changed corpus is refused, a finished run keeps its validation, signals at any moment leave a
folder --resume accepts."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pldrop.cli import main
from pldrop.train.analysis import read_metrics

FIXTURE = Path(__file__).parents[1] / "fixtures" / "corpus" / "tiny.txt"
TINY = ["--preset", "tiny", "--batch-size", "8", "--no-progress", "data.vocab_size=400", "data.val_max_seqs=16"]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PLDROP_CACHE", str(tmp_path_factory.getbasetemp() / "pldrop-cache"))


def _run(out, *extra, corpus=FIXTURE):
    return main(["pretrain", "--corpus", str(corpus), "--out", str(out), *TINY, *extra])


def test_resume_with_a_larger_budget_extends_the_schedules(tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(out, "--max-steps", "4", "--eval-every", "2") == 0
    capsys.readouterr()
    assert main(["pretrain", "--out", str(out), "--resume", "--max-steps", "8", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "horizon of 8 steps (was 4)" in err
    recs = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in recs] == list(range(1, 9))
    # the extra steps train: lr > 0 until the new horizon, θ keeps decaying
    assert all(r["lr"] > 0 for r in recs[4:7])
    assert recs[4]["horizon"] == 8
    info = json.loads((out / "pldrop.json").read_text())
    assert info["horizon_steps"] == 8 and info["gamma"] == pytest.approx(100 / 8)
    changed = info["resumes"][-1]["changed"]
    assert info["resumes"][-1]["at_step"] == 4
    assert changed["budget.max_steps"] == [4, 8] and changed["horizon_steps"] == [4, 8]
    # the folder never contradicts itself: config.yaml holds the budget that was trained
    assert yaml.safe_load((out / "config.yaml").read_text())["budget"]["max_steps"] == 8


def test_resume_refuses_a_changed_corpus_unless_allowed(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(FIXTURE.read_text())
    out = tmp_path / "run"
    assert _run(out, "--max-steps", "2", corpus=corpus) == 0
    corpus.write_text(FIXTURE.read_text() + "\n\nA new document appended after the run started, with new words.\n")
    capsys.readouterr()
    assert main(["pretrain", "--out", str(out), "--resume", "--max-steps", "4", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "corpus changed" in err and "--allow-data-change" in err and len(err.strip().splitlines()) == 1
    assert main(["pretrain", "--out", str(out), "--resume", "--max-steps", "4", "--no-progress",
                 "--allow-data-change"]) == 0
    info = json.loads((out / "pldrop.json").read_text())
    assert "corpus_fingerprint" in info["resumes"][-1]["changed"]


def test_resuming_a_finished_run_keeps_its_validation(tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(out, "--max-steps", "3") == 0
    before = json.loads((out / "summary.json").read_text())
    assert main(["pretrain", "--out", str(out), "--resume", "--no-progress"]) == 0
    after = json.loads((out / "summary.json").read_text())
    assert after["val_loss"] == before["val_loss"] and after["steps"] == 3
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3]


def _snapshot(folder):
    """Every file under ``folder`` with its bytes and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("budget", [["--max-steps", "2"], ["--max-steps", "4"], [], ["--max-samples", "8"]])
def test_resume_with_a_budget_at_or_below_the_steps_done_changes_nothing(tmp_path, capsys, budget):
    out = tmp_path / "run"
    assert _run(out, "--max-steps", "4", "--eval-every", "2") == 0
    before = _snapshot(out)
    capsys.readouterr()
    assert main(["pretrain", "--out", str(out), "--resume", "--no-progress", *budget]) == 0
    cap = capsys.readouterr()
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and "already at step 4" in lines[0] and "nothing to do" in lines[0], cap.err
    assert "horizon" not in cap.err and cap.out == ""
    assert _snapshot(out) == before  # byte-identical, not even rewritten (no new TensorBoard file either)


def test_resume_of_a_run_killed_before_its_summary_still_finishes_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(out, "--max-steps", "4") == 0
    (out / "summary.json").unlink()  # killed between the last checkpoint and the final files
    assert main(["pretrain", "--out", str(out), "--resume", "--no-progress"]) == 0
    assert "nothing to do" not in capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["steps"] == 4


def test_damaged_last_metrics_line_is_dropped_on_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(out, "--max-steps", "4", "--save-every", "2") == 0
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "loss": 1.2')  # a kill in the middle of a line
    assert main(["pretrain", "--out", str(out), "--resume", "--max-steps", "6", "--no-progress"]) == 0
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == list(range(1, 7))


def test_summary_json_is_valid_json_without_nan(tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(out, "--max-steps", "2") == 0
    text = (out / "summary.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in summary.json"))


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 0.3, 1.0, 2.5])
def test_sigterm_at_any_moment_leaves_a_resumable_folder(tmp_path, delay):
    """SIGTERM while the process imports, prepares data, builds the model or trains: exit 143, one
    message on stderr, and the folder (if any) continues with --resume to the same losses."""
    out = tmp_path / "run"
    args = ["pretrain", "--corpus", str(FIXTURE), *TINY, "--max-steps", "6", "--save-every", "2"]
    p = subprocess.Popen([sys.executable, "-m", "pldrop", *args, "--out", str(out)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode in (143, 0, -signal.SIGTERM), err  # 0: it finished before the signal
    if p.returncode == -signal.SIGTERM:  # the interpreter had not yet imported pldrop: nothing written
        assert not out.exists()
    assert "Traceback" not in err, err
    if p.returncode == 143:
        assert "SIGTERM" in err
    if out.exists() and (out / "config.yaml").exists() and not (out / "summary.json").exists():
        r = subprocess.run([sys.executable, "-m", "pldrop", "pretrain", "--out", str(out), "--resume",
                            "--no-progress"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    elif out.exists() and not (out / "summary.json").exists():
        assert not any(out.iterdir()), sorted(p.name for p in out.iterdir())
    if (out / "summary.json").exists():
        full = tmp_path / "full"
        assert subprocess.run([sys.executable, "-m", "pldrop", *args, "--out", str(full)], capture_output=True,
                              timeout=120).returncode == 0
        assert ([r["loss"] for r in read_metrics(out / "metrics.jsonl")]
                == [r["loss"] for r in read_metrics(full / "metrics.jsonl")])


def test_a_signal_in_a_callback_is_not_printed_as_an_ignored_exception():
    """A SIGTERM landing in a callback Python cannot raise from (e.g. an import lock's weakref callback)
    used to print 'Exception ignored ... Traceback'; the flag holds it, so it is dropped silently."""
    import types

    from pldrop.train.loop import StopSignal
    from pldrop.train.run import Interrupted

    seen = []
    outer = sys.unraisablehook
    sys.unraisablehook = lambda info: seen.append(info.exc_value)  # stands for Python's (or pytest's) own
    try:
        stop = StopSignal(immediate=True)
        stop.signal = signal.SIGTERM
        sys.unraisablehook(types.SimpleNamespace(exc_type=Interrupted, exc_value=Interrupted("SIGTERM", "x"),
                                                 exc_traceback=None, err_msg=None, object=None))
        assert seen == []  # ours: dropped
        other = ValueError("not ours")
        sys.unraisablehook(types.SimpleNamespace(exc_type=ValueError, exc_value=other, exc_traceback=None,
                                                 err_msg=None, object=None))
        assert seen == [other]  # anything else still reaches the hook before ours
        stop.restore()
        sys.unraisablehook(types.SimpleNamespace(exc_type=ValueError, exc_value=other, exc_traceback=None,
                                                 err_msg=None, object=None))
        assert seen == [other, other]  # restored
    finally:
        sys.unraisablehook = outer
