"""Run folders: what --out / --overwrite / --resume may touch, staging and swap, locks, stale temporaries."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pldrop.errors import UserError
from pldrop.train.rundir import (LOCK, MANIFEST, MARKER, RunLock, check_out, collect_stale_tmp, foreign_files,
                                 is_run_folder, mark_run_folder, record, restore_swapped, staged)

ROOT_IGNORES_CHMOD = os.geteuid() == 0 if hasattr(os, "geteuid") else False


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _ours(path: Path, text: str = "x", append: bool = False) -> Path:
    """A file written as pldrop writes one: recorded in its run folder's manifest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    record(path, append=append)
    return path


def _run_folder(path: Path, extra: dict[str, str] = ()) -> Path:
    """A finished-looking pldrop run folder (what pldrop wrote recorded; ``extra``: the user's files)."""
    path.mkdir(parents=True, exist_ok=True)
    mark_run_folder(path, "pldrop pretrain --out x")
    for name in ("config.yaml", "pldrop.json", "summary.json", "CREDITS.md", "tokenizer.json",
                 "model.safetensors", "config.json", "val_loss.png", "checkpoints/latest.json",
                 "checkpoints/step-0000010/state.json"):
        _ours(path / name)
    (path / LOCK).write_text("123\n")
    _ours(path / "metrics.jsonl", '{"step": 1}\n', append=True)
    _ours(path / "tb" / "events.out.tfevents.1.host", append=True)
    for name, text in dict(extra).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    return path


def _old_run(path: Path) -> Path:
    out = _run_folder(path)
    _ours(out / "summary.json", "old")
    return out


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# (name, set-up returning (out, inputs, kwargs), expected message part); every row must raise and change nothing
def _case_thesis(tmp):
    out = _run_folder(tmp / "run", {"thesis.tex": "my thesis"})
    return out, [], dict(overwrite=True)


def _case_not_pldrop(tmp):
    out = tmp / "mine"
    out.mkdir()
    (out / "notes.md").write_text("mine")
    return out, [], dict(overwrite=True)


def _case_user_png(tmp):
    return _run_folder(tmp / "run", {"holiday.png": "p"}), [], dict(overwrite=True)


def _case_nested_user_file(tmp):
    return _run_folder(tmp / "run", {"checkpoints/keep-me.txt": "x"}), [], dict(overwrite=True)


def _case_out_is_corpus_folder(tmp):
    out = _run_folder(tmp / "d")
    (out / "corpus.txt").write_text("text")
    return out, [out], dict(overwrite=True)


def _case_corpus_inside_out(tmp):
    out = _run_folder(tmp / "run")
    (out / "tb" / "c.txt").write_text("text")
    return out, [out / "tb" / "c.txt"], dict(overwrite=True)


def _case_config_inside_out(tmp):
    out = _run_folder(tmp / "run")
    return out, [out / "config.yaml"], dict(overwrite=True)


def _case_input_symlink_into_out(tmp):
    out = _run_folder(tmp / "run")
    (tmp / "link.txt").symlink_to(out / "CREDITS.md")
    return out, [tmp / "link.txt"], dict(overwrite=True)


def _case_out_inside_corpus_folder(tmp):
    (tmp / "corpus").mkdir()
    (tmp / "corpus" / "a.txt").write_text("text")
    return tmp / "corpus" / "run", [tmp / "corpus"], {}


def _case_empty(tmp):
    return "", [], dict(overwrite=True)


def _case_dot(tmp):
    return ".", [], dict(overwrite=True)


def _case_symlink(tmp):
    target = _run_folder(tmp / "real")
    (tmp / "link").symlink_to(target)
    return tmp / "link", [], dict(overwrite=True)


def _case_symlink_inside(tmp):
    out = _run_folder(tmp / "run")
    (tmp / "precious").mkdir()
    (out / "model.safetensors").unlink()
    (out / "model.safetensors").symlink_to(tmp / "precious")
    return out, [], dict(overwrite=True)


def _case_file(tmp):
    (tmp / "f").write_text("data")
    return tmp / "f", [], dict(overwrite=True)


def _case_under_file(tmp):
    (tmp / "f").write_text("data")
    return tmp / "f" / "run", [], {}


def _case_exists_no_flag(tmp):
    return _run_folder(tmp / "run"), [], {}


def _case_both_flags(tmp):
    return _run_folder(tmp / "run"), [], dict(overwrite=True, resume=True)


def _case_resume_not_run(tmp):
    out = tmp / "x"
    out.mkdir()
    (out / "a.txt").write_text("a")
    return out, [], dict(resume=True)


def _case_resume_missing(tmp):
    return tmp / "nothing", [], dict(resume=True)


CASES = [
    ("thesis.tex in the run folder", _case_thesis, "thesis.tex"),
    ("a folder pldrop did not make", _case_not_pldrop, "not a pldrop run folder"),
    ("a user's picture in a run folder", _case_user_png, "holiday.png"),
    ("a user file inside checkpoints/", _case_nested_user_file, "keep-me.txt"),
    ("--out equals the corpus folder", _case_out_is_corpus_folder, "holds the run's input"),
    ("the corpus inside --out", _case_corpus_inside_out, "holds the run's input"),
    ("the config file inside --out", _case_config_inside_out, "holds the run's input"),
    ("an input linked into --out", _case_input_symlink_into_out, "holds the run's input"),
    ("--out inside the corpus folder", _case_out_inside_corpus_folder, "inside the run's input folder"),
    ("--out ''", _case_empty, "--out is empty"),
    ("--out .", _case_dot, "current folder"),
    ("--out a symlink", _case_symlink, "symbolic link"),
    ("a symlink inside the run folder", _case_symlink_inside, "model.safetensors"),
    ("--out an existing file", _case_file, "is a file"),
    ("--out below a file", _case_under_file, "is a file"),
    ("existing run, neither flag", _case_exists_no_flag, "--resume to continue it or --overwrite"),
    ("--resume with --overwrite", _case_both_flags, "exclude each other"),
    ("--resume of a folder pldrop did not make", _case_resume_not_run, "not a pldrop run folder"),
    ("--resume of a missing folder", _case_resume_missing, "not a pldrop run folder"),
]


@pytest.mark.parametrize("setup,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_check_out_refuses_hostile_cases(tmp_path, monkeypatch, setup, expected):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "keep.txt").write_text("the current folder's file")
    monkeypatch.chdir(cwd)
    out, inputs, kw = setup(tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(UserError) as e:
        check_out(out, resume=kw.get("resume", False), overwrite=kw.get("overwrite", False), inputs=inputs)
    msg = str(e.value)
    assert expected in msg and "\n" not in msg
    assert _snapshot(tmp_path) == before  # nothing written, nothing removed


def test_read_only_parent_is_refused(read_only_dir):
    with pytest.raises(UserError, match="not writable"):
        check_out(read_only_dir / "run", resume=False, overwrite=False)


@pytest.mark.parametrize("kind", ["missing", "empty", "run"])
def test_check_out_accepts(tmp_path, kind):
    out = tmp_path / "run"
    if kind == "empty":
        out.mkdir()
    elif kind == "run":
        _run_folder(out)
    check_out(out, resume=False, overwrite=kind == "run", inputs=[tmp_path / "corpus.txt"])
    if kind == "run":
        check_out(out, resume=True, overwrite=False)


def test_old_run_folders_without_marker_are_run_folders(tmp_path):
    _run_folder(tmp_path)
    os.remove(tmp_path / MARKER)
    assert is_run_folder(tmp_path) and foreign_files(tmp_path) == []
    os.remove(tmp_path / "pldrop.json")
    assert not is_run_folder(tmp_path)


@pytest.mark.parametrize("where", ["run", "arm"])
def test_a_folder_without_a_manifest_is_never_replaced(tmp_path, where):
    """pldrop before the manifest: its files cannot be told from the user's, so --overwrite refuses,
    names the folder and says what to do; --resume still works."""
    out = _run_folder(tmp_path / "cmp")
    arm = _run_folder(out / "pld")
    old = out if where == "run" else arm
    os.remove(old / MANIFEST)
    assert foreign_files(old)  # everything but the bookkeeping is foreign there
    before = _snapshot(tmp_path)
    with pytest.raises(UserError, match="kept no record") as e:
        check_out(out, resume=False, overwrite=True)
    assert str(old) in str(e.value) and "\n" not in str(e.value)
    assert _snapshot(tmp_path) == before
    check_out(out, resume=True, overwrite=False)
    record(old / "config.yaml")  # a folder without a manifest stays without one
    assert not (old / MANIFEST).exists()


def test_compare_folder_with_arms(tmp_path):
    cmp = tmp_path / "cmp"
    cmp.mkdir()
    mark_run_folder(cmp, "pldrop compare")
    for f in ("compare.json", "report.md", "results.json", "val_loss.png", "val_accuracy.png", "speedup.png"):
        _ours(cmp / f)
    _run_folder(cmp / "baseline")
    _run_folder(cmp / "pld")
    assert foreign_files(cmp) == []
    (cmp / "pld" / "draft.docx").write_text("x")
    assert foreign_files(cmp) == [cmp / "pld" / "draft.docx"]
    info = json.loads((cmp / MARKER).read_text())
    assert info["command"] == "pldrop compare" and "pldrop" in info and "created" in info


def test_staged_commit_swaps_and_removes_only_the_old_run(tmp_path):
    out = _old_run(tmp_path / "run")
    st = staged(out)
    assert st.path.is_dir() and st.path.parent == tmp_path and st.path.name.startswith(".run.pldrop-new-")
    assert _snapshot(out)["summary.json"] == b"old"  # untouched until commit
    mark_run_folder(st.path, "new")
    _ours(st.path / "summary.json", "new")
    st.commit()
    assert (out / "summary.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging, no old copy left


def test_staged_commit_refuses_when_a_foreign_file_appeared(tmp_path):
    out = _run_folder(tmp_path / "run")
    st = staged(out)
    (st.path / "summary.json").write_text("new")
    (out / "added-meanwhile.txt").write_text("x")
    with pytest.raises(UserError, match="added-meanwhile.txt"):
        st.commit()
    assert (out / "added-meanwhile.txt").is_file() and (st.path / "summary.json").is_file()
    st.abort()  # the caller's clean-up after the failed commit keeps the new run the message names
    assert (st.path / "summary.json").is_file()


def test_staged_abort_and_context_manager(tmp_path):
    out = _run_folder(tmp_path / "run")
    before = _snapshot(out)
    with pytest.raises(RuntimeError):
        with staged(out) as st:
            mark_run_folder(st.path, "new")
            _ours(st.path / "summary.json", "new")
            raise RuntimeError("the run failed")
    assert not st.path.exists() and _snapshot(out) == before
    with staged(out) as st:
        mark_run_folder(st.path, "new")
        _ours(st.path / "summary.json", "new")
    assert (out / "summary.json").read_text() == "new" and not st.path.exists()


def test_abort_keeps_a_staging_folder_with_foreign_files(tmp_path):
    out = _run_folder(tmp_path / "run")
    st = staged(out)
    (st.path / "user.tex").write_text("x")
    st.abort()
    assert (st.path / "user.tex").is_file()


KILLED = textwrap.dedent("""
    import os, signal, sys
    from pldrop.train.rundir import mark_run_folder, record, staged
    st = staged(sys.argv[1])
    mark_run_folder(st.path, "new")
    (st.path / "summary.json").write_text("new")
    record(st.path / "summary.json")
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_kill_9_before_commit_leaves_the_old_run_and_the_staging_is_collected(tmp_path):
    out = _old_run(tmp_path / "run")
    before = _snapshot(out)
    p = subprocess.Popen([sys.executable, "-c", KILLED, str(out)])
    assert p.wait() == -signal.SIGKILL
    assert _snapshot(out) == before
    left = [e for e in tmp_path.iterdir() if e.name != "run"]
    assert [e.name for e in left] == [f".run.pldrop-new-{p.pid}"]
    st = staged(out)  # the next --overwrite collects the dead process's staging folder
    assert not left[0].exists()
    st.abort()


def test_kill_between_the_two_renames_is_repaired(tmp_path):
    out = _old_run(tmp_path / "run")
    before = _snapshot(out)
    dead = _dead_pid()
    new = tmp_path / f".run.pldrop-new-{dead}"
    new.mkdir()
    os.rename(out, tmp_path / f".run.pldrop-old-{dead}")  # the state a kill between the renames leaves
    check_out(out, resume=True, overwrite=False)  # renames the old run back first
    assert _snapshot(out) == before
    assert restore_swapped(out) is None


def test_run_lock_excludes_a_second_writer_in_process(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with RunLock(out):
        assert (out / LOCK).read_text().strip() == str(os.getpid())
        with pytest.raises(UserError, match=rf"in use by another pldrop process \(PID {os.getpid()}\)"):
            with RunLock(out):
                pass
    assert not (out / LOCK).exists()  # a clean exit leaves no lock file
    with RunLock(out):  # released
        pass


HOLD = textwrap.dedent("""
    import sys, time
    from pldrop.train.rundir import RunLock
    with RunLock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(60)
""")


def test_run_lock_across_processes_and_after_kill_9(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=f"PID {p.pid}"):
            RunLock(out).__enter__()
    finally:
        p.kill()
        p.wait()
    assert (out / LOCK).is_file()  # a stale lock file...
    with RunLock(out):  # ...does not block: the kernel dropped the dead holder's lock
        pass
    assert not (out / LOCK).exists()


def test_run_lock_file_replaced_while_waiting(tmp_path):
    """A process that opened the lock file just before its holder removed it must not get in."""
    import fcntl

    out = tmp_path / "run"
    out.mkdir()
    first = RunLock(out).__enter__()
    early = os.open(out / LOCK, os.O_RDWR)  # opened before the holder's exit...
    first.__exit__(None, None, None)  # ...which removes the file
    fcntl.flock(early, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the old inode can be locked now, but it is gone
    with RunLock(out) as lock:  # a new process locks a new file, and so holds the folder
        assert os.fstat(lock.fd).st_ino != os.fstat(early).st_ino
    os.close(early)


def test_collect_stale_tmp_removes_dead_pids_only(tmp_path):
    dead, alive = _dead_pid(), os.getppid()
    entries = {
        f".step-0000020.tmp-{dead}": "dir",
        f".latest.json.tmp-{dead}": "file",
        f".abc.tmp-{dead}-1f2e3d4c": "dir",  # the cache's naming (pid, then a random tag)
        f".step-0000030.tmp-{alive}": "dir",
        f".step-0000040.tmp-{os.getpid()}": "dir",
        "step-0000010": "dir",
        "notes.tmp-x": "file",
        "thesis.tmp-1": "file",  # not hidden: a user's file, whatever its name says
    }
    for name, kind in entries.items():
        (tmp_path / name).mkdir() if kind == "dir" else (tmp_path / name).write_text("x")
    removed = collect_stale_tmp(tmp_path)
    assert sorted(p.name for p in removed) == sorted(n for n in entries if str(dead) in n)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(n for n in entries if str(dead) not in n)
    collect_stale_tmp(tmp_path, include_self=True)
    assert not (tmp_path / f".step-0000040.tmp-{os.getpid()}").exists()
    assert collect_stale_tmp(tmp_path / "missing") == []


def test_unwritable_parent_is_refused_even_as_root(tmp_path, monkeypatch):
    """The same check with os.access answering as it does for a non-root user (root passes chmod)."""
    import pldrop.train.rundir as rundir

    real_access = os.access
    monkeypatch.setattr(rundir.os, "access", lambda p, mode: False if Path(p) == tmp_path else real_access(p, mode))
    with pytest.raises(UserError, match="is not writable"):
        check_out(tmp_path / "run", resume=False, overwrite=False)
    out = _run_folder(tmp_path / "run")
    with pytest.raises(UserError, match="written beside"):  # --overwrite stages beside --out
        check_out(out, resume=False, overwrite=True)


def test_run_lock_create_claims_a_new_folder(tmp_path):
    out = tmp_path / "a" / "run"
    with RunLock(out, create=True):
        assert out.is_dir()
        (out / "config.yaml").write_text("x")  # the first process writes its run
    with pytest.raises(UserError, match="created by another process meanwhile"):
        with RunLock(out, create=True):  # a second one, started at the same moment, must not join it
            pass
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml"]


# --- end to end: the CLI on the tiny preset (issue 23) -------------------------------------------

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpus" / "tiny.txt"
TINY = ["--corpus", str(CORPUS), "--preset", "tiny", "--eval-every", "2", "--no-progress", "data.vocab_size=400"]


def _cli(*argv, cache=None, check=None):
    env = {**os.environ, "PLDROP_CACHE": str(cache)} if cache else None
    p = subprocess.run([sys.executable, "-m", "pldrop", *map(str, argv)], capture_output=True, text=True, env=env,
                       timeout=600)
    if check is not None:
        assert p.returncode == check, p.stderr[-2000:]
    return p


@pytest.fixture(scope="module")
def finished_compare(tmp_path_factory):
    """A finished tiny comparison (two arms), copied by each test that changes it."""
    root = tmp_path_factory.mktemp("cmp")
    _cli("compare", *TINY, "--max-steps", "4", "--arms", "preln", "pld", "--out", root / "z", cache=root / "cache",
         check=0)
    return root


# (id, what the user does to the finished comparison z, the file the refusal names)
USER_FILES = [
    ("a user's file named like a plot", lambda z: (z / "val_loss_zoomed_by_me.png").write_bytes(
        (z / "val_loss.png").read_bytes()), "val_loss_zoomed_by_me.png"),
    ("a user's file in a checkpoint folder", lambda z: (z / "pld" / "checkpoints" / "step-0000004" / "notes.txt")
     .write_text("mine"), "notes.txt"),
    ("a plot the user edited", lambda z: (z / "val_loss.png").write_bytes(b"my own picture"), "val_loss.png"),
    ("metrics.jsonl the user edited", lambda z: (z / "pld" / "metrics.jsonl").write_text('{"step": 1}\n'),
     "metrics.jsonl"),
    ("a line the user appended to metrics.jsonl", lambda z: open(z / "preln" / "metrics.jsonl", "a").write("x\n"),
     "metrics.jsonl"),
    ("an empty folder of the user's", lambda z: (z / "pld" / "mine").mkdir(), "mine"),
]


@pytest.mark.parametrize("change,name", [u[1:] for u in USER_FILES], ids=[u[0] for u in USER_FILES])
def test_overwrite_keeps_every_file_pldrop_did_not_write(finished_compare, tmp_path, change, name):
    """Issue 23 item 1: --overwrite decided by name patterns and deleted a user's val_loss_*.png or a file
    put in checkpoints/step-N/; now only what the manifests record, unchanged, is pldrop's."""
    import shutil

    z = tmp_path / "z"
    shutil.copytree(finished_compare / "z", z, symlinks=True)
    assert foreign_files(z) == []
    change(z)
    before = _snapshot(tmp_path)
    p = _cli("compare", *TINY, "--max-steps", "4", "--arms", "preln", "pld", "--out", z, "--overwrite",
             cache=finished_compare / "cache", check=2)
    err = p.stderr.strip()
    assert len(err.splitlines()) == 1 and name in err and "did not write" in err, err
    assert _snapshot(tmp_path) == before


def test_overwrite_replaces_a_finished_comparison(finished_compare, tmp_path):
    import shutil

    z = tmp_path / "z"
    shutil.copytree(finished_compare / "z", z, symlinks=True)
    _cli("compare", *TINY, "--max-steps", "2", "--arms", "preln", "pld", "--out", z, "--overwrite",
         cache=finished_compare / "cache", check=0)
    assert json.loads((z / "pld" / "summary.json").read_text())["steps"] == 2
    assert foreign_files(z) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["z"]


@pytest.mark.parametrize("command", ["pretrain", "compare"])
def test_sigterm_during_overwrite_then_overwrite_then_resume(finished_compare, tmp_path, command):
    """Issue 23 item 2: the staging folder of an --overwrite stopped by SIGTERM was deleted by the next
    --overwrite, and its advice (--resume --out .r.pldrop-new-PID) finished the run in a hidden folder.
    Now the staged run is kept, the next --overwrite refuses, and --resume --out r finishes the swap."""
    cache = finished_compare / "cache"
    r = tmp_path / "r"
    arms = ["--arms", "preln", "pld"] if command == "compare" else []
    _cli(command, *TINY, *arms, "--max-steps", "2", "--out", r, cache=cache, check=0)
    old = _snapshot(r)
    # never finishes by itself: SIGTERM once the new run has saved a checkpoint
    long = [command, *TINY, *arms, "--max-steps", "100000", "--save-every", "1", "--out", r, "--overwrite"]
    arm = "pld/" if command == "compare" else ""
    p = subprocess.Popen([sys.executable, "-m", "pldrop", *map(str, long)], stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "PLDROP_CACHE": str(cache)})
    ready = tmp_path / f".r.pldrop-new-{p.pid}" / f"{arm}checkpoints" / "latest.json"  # a file the run writes
    while not ready.exists():
        assert p.poll() is None, p.stderr.read()[-2000:]
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=600)
    assert p.returncode == 143, err
    staging = tmp_path / f".r.pldrop-new-{p.pid}"
    assert f"--resume --out {r}" in err and str(staging) in err and len(err.strip().splitlines()) == 1, err
    assert _snapshot(r) == old and staging.is_dir()
    # the next --overwrite (or a new run of r) keeps the interrupted one and says how to go on
    again = _cli(command, *TINY, *arms, "--max-steps", "2", "--out", r, "--overwrite", cache=cache, check=2)
    assert "--resume --out" in again.stderr and str(staging) in again.stderr and staging.is_dir(), again.stderr
    # following the message's advice finishes the new run and swaps it into r
    _cli(command, "--resume", "--out", r, "--max-steps", "3", "--no-progress", cache=cache, check=0)
    assert sorted(e.name for e in tmp_path.iterdir()) == ["r"]
    summary = json.loads((r / f"{arm}summary.json").read_text())
    assert summary["steps"] == 3 and foreign_files(r) == []
    assert "max_steps" in (r / f"{arm}config.yaml").read_text()


def test_a_staging_folder_a_live_process_holds_is_not_collected(tmp_path):
    """The lock decides, not the PID in the name: a process resuming '.r.pldrop-new-<dead PID>' keeps it."""
    out = _run_folder(tmp_path / "r")
    held = tmp_path / f".r.pldrop-new-{_dead_pid()}"
    held.mkdir()
    mark_run_folder(held, "pldrop pretrain --overwrite")
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(held)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "locked"
        st = staged(out)  # an --overwrite of r collects dead processes' staging folders...
        assert held.is_dir()  # ...but not one a live process holds
        st.abort()
    finally:
        p.kill()
        p.wait()
    st = staged(out)  # released: nothing of the user's, no checkpoint -> collected
    assert not held.exists()
    st.abort()


@pytest.mark.parametrize("name", [LOCK, MARKER, MANIFEST])
@pytest.mark.parametrize("command", ["report-only", "resume", "overwrite"])
def test_linked_lock_marker_or_manifest_is_refused_target_untouched(finished_compare, tmp_path, name, command):
    """Issue 23 item 4: the lock followed a symlink and wrote a PID into its target."""
    import shutil

    z = tmp_path / "z"
    shutil.copytree(finished_compare / "z", z, symlinks=True)
    important = tmp_path / "important.txt"
    important.write_text("precious\n")
    (z / name).unlink(missing_ok=True)
    (z / name).symlink_to(important)
    argv = {"report-only": ["compare", "--report-only", "--out", z],
            "resume": ["compare", "--resume", "--out", z, "--no-progress"],
            "overwrite": ["compare", *TINY, "--max-steps", "2", "--arms", "preln", "pld", "--out", z, "--overwrite"]}
    p = _cli(*argv[command], cache=finished_compare / "cache", check=2)
    err = p.stderr.strip()
    assert len(err.splitlines()) == 1 and "link" in err, err
    assert important.read_text() == "precious\n" and (z / name).is_symlink()


def test_open_own_refuses_links_and_other_files(tmp_path):
    from pldrop.train.rundir import open_own

    (tmp_path / "target").write_text("keep")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    for name, words in (("link", "symbolic link"), ("fifo", "not a regular file"), ("dir", "not a regular file")):
        with pytest.raises(UserError, match=words):
            open_own(tmp_path / name, os.O_RDWR | os.O_CREAT)
    assert (tmp_path / "target").read_text() == "keep"
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / MARKER).symlink_to(tmp_path / "target")
    with pytest.raises(UserError, match="symbolic link"):
        mark_run_folder(tmp_path / "m", "x")
    assert (tmp_path / "target").read_text() == "keep"


def test_manifest_survives_a_cut_last_line(tmp_path):
    """A kill in the middle of an append leaves a damaged last line: it is ignored, later lines count."""
    out = _run_folder(tmp_path / "run")
    with open(out / MANIFEST, "a") as f:
        f.write('{"path": "summary.json", "si')  # cut short
    _ours(out / "late.txt")
    assert foreign_files(out) == []
