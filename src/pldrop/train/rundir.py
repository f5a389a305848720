"""Run folders that never cost a user data: what pldrop may replace, and how.

- Every run folder pldrop makes holds a marker, ``.pldrop-run`` (JSON: version, time, command),
  and a manifest, ``.pldrop-files.jsonl``: one line per file pldrop wrote there (path relative to
  the folder, size, SHA-256), appended as each file is made by the shared write helpers
  (:func:`record`; ``atomic_write_text``, checkpoints, plots, ``save_pretrained``, copies). Files
  pldrop keeps appending to (``metrics.jsonl``, TensorBoard events) are recorded as such and stay
  pldrop's while their recorded first bytes are unchanged, so a kill between two records does not
  make them foreign. A run folder inside another (a comparison's arms, a report's runs) has its
  own. The manifest is only appended to; a line a kill cut short is ignored.
- ``--overwrite`` replaces only a pldrop run folder that holds nothing but what its manifests
  record, unchanged (:func:`foreign_files`: a user's file is foreign whatever its name, and so is a
  recorded file the user edited), that holds none of the run's inputs (corpus, tokenizer,
  config), and only after every input was checked and the data prepared; the new run is written
  beside the old one (:class:`Staged`) and swapped in at the end, so a failed or killed run leaves
  the old one as it was. A folder made before pldrop kept a manifest is never replaced: pldrop
  cannot tell its files from the user's, and says so.
- A staged run that saved a checkpoint (SIGTERM, a failure mid-run) is a run: it is kept, the
  next ``--overwrite`` or new run of that ``--out`` is refused, and ``--resume --out <out>``
  continues it and swaps it in when it finishes (:meth:`Staged.adopt`).
- One process at a time per folder (:class:`RunLock`, ``flock`` on ``.pldrop.lock``); nothing a
  live process holds (its lock) is removed. Lock, marker and manifest are opened without
  following links (:func:`open_own`): a link there is refused in one line, its target untouched.
- Temporary entries of killed processes (``*.tmp-PID…``) are collected when their PID is gone
  (:func:`collect_stale_tmp`).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import hashlib
import json
import os
import re
import shutil
import stat
import sys
from pathlib import Path

from ..errors import UserError

MARKER = ".pldrop-run"
LOCK = ".pldrop.lock"
MANIFEST = ".pldrop-files.jsonl"  # what pldrop wrote in the run folder: one JSON object a line, appended
CONTROL = (MARKER, LOCK, MANIFEST)  # the bookkeeping files of a run folder


# --- files opened without following links ------------------------------------------------------


def open_own(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` of one of pldrop's own bookkeeping files (lock, marker, manifest) that never
    follows a symbolic link and accepts only a regular file: a link or anything else at ``path``
    is a one-line refusal and its target is left untouched."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UserError(f"{str(path)!r} is a symbolic link; pldrop writes its own files only, never through a "
                            "link -- remove the link") from None
        if e.errno in (errno.EISDIR, errno.ENXIO, errno.ENODEV):
            raise UserError(f"{str(path)!r} is not a regular file; remove it") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UserError(f"{str(path)!r} is not a regular file; remove it")
    return fd


def check_control_files(folder: Path) -> None:
    """Refuse a run folder whose lock, marker or manifest is a link or not a regular file."""
    for name in CONTROL:
        p = Path(folder) / name
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue
        except OSError:
            continue  # e.g. a file given as the folder: the caller says what is wrong with it
        if stat.S_ISLNK(st.st_mode):
            raise UserError(f"{str(p)!r} is a symbolic link; pldrop writes its own files only, never through a "
                            "link -- remove the link")
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{str(p)!r} is not a regular file; remove it")


# --- the manifest: what pldrop wrote -----------------------------------------------------------


def _has_marker(folder: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(folder / MARKER).st_mode)
    except OSError:
        return False


def run_root(path: Path) -> Path | None:
    """The run folder ``path`` lies in: the nearest folder above it holding the marker."""
    path = Path(os.path.abspath(path))
    for folder in path.parents:
        if os.path.lexists(folder / MARKER):
            return folder if _has_marker(folder) else None  # a linked marker: no run folder (refused elsewhere)
    return None


def _digest(path: Path, size: int | None = None) -> tuple[int, str]:
    """(bytes read, SHA-256 of them): the whole file, or its first ``size`` bytes."""
    h, n = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while size is None or n < size:
            chunk = f.read(1 << 20 if size is None else min(1 << 20, size - n))
            if not chunk:
                break
            h.update(chunk)
            n += len(chunk)
    return n, h.hexdigest()


def record(path: Path, *, append: bool = False, temporary: bool = False, sha256: str | None = None) -> None:
    """Record in its run folder's manifest that pldrop wrote ``path`` (a file, or a folder).

    Call it right after writing (a temporary: right before). The manifest lives in the nearest
    folder above ``path`` holding the marker, paths relative to it, so it survives the swap of a
    staged run; a folder without a manifest (made before pldrop kept one) stays unrecorded.

    Args:
        path: what was written.
        append: a file pldrop goes on appending to (metrics.jsonl, TensorBoard events): it stays
            pldrop's while its first recorded bytes are unchanged, so a kill between two records
            does not make it foreign; record it again at checkpoints and at the end.
        temporary: a temporary name (``.x.tmp-PID``) about to be written and renamed: whatever a
            kill leaves under it is pldrop's.
        sha256: the file's SHA-256 when the caller just computed it (spares reading it again).
    """
    path = Path(os.path.abspath(path))
    root = run_root(path)
    if root is None or not os.path.lexists(root / MANIFEST):
        return
    entry: dict = {"path": path.relative_to(root).as_posix()}
    if temporary:
        entry["tmp"] = True
    elif path.is_dir() and not path.is_symlink():
        entry["dir"] = True
    else:
        entry["size"], entry["sha256"] = (path.stat().st_size, sha256) if sha256 else _digest(path)
        if append:
            entry["append"] = True
    _append(root / MANIFEST, json.dumps(entry, ensure_ascii=False))


def _file_states(folder: Path, recursive: bool = False) -> dict[str, tuple]:
    """Regular files of ``folder`` (relative path -> inode, size, mtime), links not followed."""
    states: dict[str, tuple] = {}
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return states
    for e in entries:
        if e.is_file(follow_symlinks=False):
            st = e.stat(follow_symlinks=False)
            states[e.name] = (e.inode(), st.st_size, st.st_mtime_ns)
        elif recursive and e.is_dir(follow_symlinks=False):
            states.update({f"{e.name}/{k}": v for k, v in _file_states(Path(e.path), True).items()})
    return states


@contextlib.contextmanager
def recording(folder: Path, append: bool = False, recursive: bool = False):
    """Record the files a library call or a sub-command makes or changes in ``folder``
    (``save_pretrained``, a TensorBoard writer, ``pldrop evaluate``), with ``append`` as in
    :func:`record`; yields the list of them, filled when the block ends (also when it fails: a
    half-written file is pldrop's too). Files that were there before and are unchanged are not
    recorded: they stay whatever they were."""
    folder = Path(folder)
    existed, before, made = folder.is_dir(), _file_states(folder, recursive), []
    try:
        yield made
    finally:
        if not existed and folder.is_dir():
            record(folder)
        for name, state in sorted(_file_states(folder, recursive).items()):
            if before.get(name) != state and name not in CONTROL:
                record(folder / name, append=append)
                made.append(folder / name)


def _append(manifest: Path, line: str) -> None:
    fd = open_own(manifest, os.O_RDWR | os.O_APPEND)
    try:
        size = os.fstat(fd).st_size
        lead = "\n" if size and os.pread(fd, 1, size - 1) != b"\n" else ""  # a line cut by a kill stays apart
        os.write(fd, (lead + line + "\n").encode("utf-8"))
    finally:
        os.close(fd)


def read_manifest(folder: Path) -> dict[str, dict] | None:
    """The last record of each path in ``folder``'s manifest, or None when it has none; damaged lines
    (a kill in the middle of an append) are left out."""
    path = Path(folder) / MANIFEST
    if not os.path.lexists(path):
        return None
    fd = open_own(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as f:
        text = f.read().decode("utf-8", errors="replace")
    entries: dict[str, dict] = {}
    for ln in text.splitlines():
        try:
            e = json.loads(ln)
        except ValueError:
            continue
        if isinstance(e, dict) and isinstance(e.get("path"), str):
            entries[e["path"]] = e
    return entries


def _as_recorded(path: Path, e: dict | None) -> bool:
    """Whether the file at ``path`` is what its record says pldrop wrote."""
    if e is None or not isinstance(e.get("size"), int) or not isinstance(e.get("sha256"), str):
        return False
    size = path.stat().st_size
    if size < e["size"] or (size != e["size"] and not e.get("append")):
        return False
    return _digest(path, e["size"]) == (e["size"], e["sha256"])


def unrecorded_run_folders(folder: Path) -> list[Path]:
    """``folder`` and the run folders inside it that keep no manifest (made before pldrop kept one)."""
    folder = Path(folder)
    found = [folder] if not os.path.lexists(folder / MANIFEST) else []
    for sub in sorted(folder.rglob(MARKER)):
        if sub.parent != folder and _has_marker(sub.parent) and not os.path.lexists(sub.parent / MANIFEST):
            found.append(sub.parent)
    return found


def is_run_folder(folder: Path) -> bool:
    """A folder pldrop made: its marker, or (runs made before the marker) config.yaml + pldrop.json,
    or compare.json / report.json."""
    folder = Path(folder)
    return ((folder / MARKER).is_file() or ((folder / "config.yaml").is_file() and (folder / "pldrop.json").is_file())
            or (folder / "compare.json").is_file() or (folder / "report.json").is_file()
            or ((folder / "results.json").is_file() and (folder / "report.md").is_file()))  # compare, before 0.2


def foreign_files(folder: Path) -> list[Path]:
    """Entries of ``folder`` (recursively) that pldrop did not write: everything its manifest does not
    record with the same size and SHA-256 (a file pldrop appends to: the same first bytes), links,
    and empty folders it did not make. Run folders inside (the arms of a comparison, a report's
    runs) are checked against their own manifests. The bookkeeping files are pldrop's; in a folder
    without a manifest everything else is foreign."""
    folder = Path(folder)
    found: list[Path] = []
    _scan(folder, folder, read_manifest(folder) or {}, found)
    return found


def _scan(root: Path, folder: Path, rec: dict[str, dict], found: list[Path]) -> None:
    for entry in sorted(folder.iterdir()):
        rel = entry.relative_to(root).as_posix()
        e = rec.get(rel)
        if entry.is_symlink():
            found.append(entry)
        elif folder == root and entry.name in CONTROL and entry.is_file():
            continue
        elif e is not None and e.get("tmp"):
            continue  # a temporary a killed process left: pldrop's, whatever it holds
        elif entry.is_dir():
            if _has_marker(entry):
                found += foreign_files(entry)
            elif any(entry.iterdir()):
                _scan(root, entry, rec, found)
            elif e is None or not e.get("dir"):
                found.append(entry)
        elif not entry.is_file() or not _as_recorded(entry, e):
            found.append(entry)


def mark_run_folder(out: Path, command: str, **extra) -> None:
    """Write the marker that says pldrop made ``out`` and start its manifest (:func:`record`)."""
    from .. import __version__

    out = Path(out)
    info = {"pldrop": __version__, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": command, **extra}
    fd = open_own(out / MARKER, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(info, indent=1) + "\n")
    os.close(open_own(out / MANIFEST, os.O_WRONLY | os.O_CREAT | os.O_APPEND))


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
        return True
    except ValueError:
        return False


def check_out(out: Path, *, resume: bool, overwrite: bool, inputs=(), resumable: bool = True) -> None:
    """Refuse, with one line, any ``--out`` pldrop must not write or replace. Writes nothing, except
    that a run a killed swap had moved aside is put back first (:func:`restore_swapped`).

    Args:
        out: the run folder asked for.
        resume: ``--resume`` (the folder must be a pldrop run folder).
        overwrite: ``--overwrite`` (the folder, if it exists, must be one pldrop may replace).
        inputs: files and folders the run reads (corpus files and folders, tokenizer folder, config
            files, cache folder): ``out`` may not be one of them, hold one, or lie inside one.
        resumable: the command has ``--resume`` (its refusals advise only flags it takes).
    """
    if str(out).strip() == "":
        raise UserError("--out is empty; give the run folder to create, e.g. --out runs/my-run")
    if resume and overwrite:
        raise UserError("--resume and --overwrite exclude each other")
    out = Path(out)
    if out.resolve() == Path.cwd().resolve() or out.name in ("", ".", ".."):
        raise UserError(f"--out {str(out)!r} is the current folder or its parent; give a folder of its own, "
                        "e.g. --out runs/my-run")
    restore_swapped(out)
    if out.is_symlink():
        raise UserError(f"--out {str(out)!r} is a symbolic link; give the folder itself")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {str(out)!r} is a file, not a folder")
    real = out.resolve()
    parent = next((p for p in (real, *real.parents) if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise UserError(f"--out {str(out)!r}: {str(parent)!r} is a file, not a folder")
    if parent is None or not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"--out {str(out)!r}: {str(parent)!r} is not writable")
    if overwrite and out.is_dir() and not os.access(real.parent, os.W_OK | os.X_OK):
        raise UserError(f"--overwrite: the new run is written beside {str(out)!r}, but {str(real.parent)!r} "
                        "is not writable")
    if out.is_dir():
        check_control_files(out)
    if resume:
        if pending_run(out) is not None:  # the interrupted replacement of out: it continues (Staged.adopt)
            return
        if not out.is_dir() or not is_run_folder(out):
            raise UserError(f"--resume: {str(out)!r} is not a pldrop run folder (no config.yaml / {MARKER})")
        return
    pending = pending_run(out, held_too=True)
    if pending is not None:
        raise UserError(f"{str(pending)!r} holds an unfinished run meant to replace {str(out)!r} (it has a "
                        f"checkpoint): continue it with --resume --out {out}, or remove that folder to start afresh")
    for given in inputs:  # a resumed run may read its own tokenizer; a new one must not write over its inputs
        p = Path(given).expanduser().resolve()
        if real == p or _inside(p, real):
            raise UserError(f"--out {str(out)!r} holds the run's input {str(given)!r}; choose another folder")
        if p.is_dir() and _inside(real, p):  # e.g. --corpus d --out d/run: next time d/run/vocab.txt is corpus
            raise UserError(f"--out {str(out)!r} is inside the run's input folder {str(given)!r}; the run's files "
                            "would mix with its input -- choose a folder outside it")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        how = "pass --resume to continue it or --overwrite to replace it" if resumable else \
            "pass --overwrite to replace it or choose another --out"
        raise UserError(f"run folder {str(out)!r} already exists; {how}")
    cwd = Path.cwd().resolve()
    if real == cwd or _inside(cwd, real) or real in (Path.home().resolve(), Path(real.anchor)):
        raise UserError(f"--overwrite: {str(out)!r} is the current, home or root folder (or holds it); refusing")
    if not is_run_folder(out):
        raise UserError(f"--overwrite: {str(out)!r} is not a pldrop run folder (no {MARKER}); pldrop replaces "
                        "only folders it made -- remove it yourself or choose another --out")
    legacy = unrecorded_run_folders(out)
    if legacy:
        raise UserError(f"--overwrite: {str(legacy[0])!r} was made by a pldrop that kept no record of the files it "
                        f"wrote ({MANIFEST}), so its files cannot be told from yours; remove it yourself (keeping what "
                        "you want) or choose another --out")
    alien = foreign_files(out)
    if alien:
        more = f" (and {len(alien) - 1} more)" if len(alien) > 1 else ""
        raise UserError(f"--overwrite: {str(out)!r} holds {str(alien[0])!r}{more}, which pldrop did not write; "
                        "move it away first or choose another --out")


def _swap_names(out: Path) -> re.Pattern:
    return re.compile(rf"^\.{re.escape(out.name)}\.pldrop-(new|old)-(\d+)$")


def staging_target(out: Path) -> Path:
    """The run a staging folder (``.<name>.pldrop-new-PID``) replaces; any other folder itself.

    >>> str(staging_target(Path("runs/.r.pldrop-new-42"))), str(staging_target(Path("runs/r")))
    ('runs/r', 'runs/r')
    """
    m = re.fullmatch(r"\.(.+)\.pldrop-new-\d+", Path(out).name)
    return Path(out).parent / m.group(1) if m else Path(out)


def has_checkpoint(folder: Path) -> bool:
    """A run (or a comparison's arm) in ``folder`` saved a checkpoint: it can be resumed."""
    folder = Path(folder)
    subs = [folder] + [p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()] if folder.is_dir() else []
    return any((p / "checkpoints" / "latest.json").is_file() for p in subs)


def lock_held(folder: Path) -> bool:
    """Whether a live process holds ``folder``'s lock (the kernel's ``flock``, not a PID in a name)."""
    import fcntl

    try:
        fd = os.open(Path(folder) / LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def _staging_folders(out: Path) -> list[tuple[Path, int]]:
    """``out``'s staging folders (``.<name>.pldrop-new-PID``) with their PIDs, newest first."""
    out = Path(out)
    if not out.parent.is_dir():
        return []
    pattern = _swap_names(out)
    found = []
    for entry in out.parent.iterdir():
        m = pattern.match(entry.name)
        if m and m.group(1) == "new" and entry.is_dir() and not entry.is_symlink():
            found.append((entry.stat().st_mtime, entry, int(m.group(2))))
    return [(e, pid) for _, e, pid in sorted(found, key=lambda t: t[0], reverse=True)]


def pending_run(out: Path, held_too: bool = False) -> Path | None:
    """The newest staging folder of ``out`` that holds a checkpoint: an ``--overwrite`` run that was
    interrupted (SIGTERM, a failure after its first checkpoint) and that ``--resume --out out``
    continues. Skipped unless ``held_too``: one a live process writes (its lock is held)."""
    for entry, pid in _staging_folders(out):
        if pid != os.getpid() and has_checkpoint(entry) and (held_too or not lock_held(entry)):
            return entry
    return None


def restore_swapped(out: Path) -> Path | None:
    """Put back a run that a killed :meth:`Staged.commit` had moved aside.

    A kill between the two renames of a swap leaves no ``out`` but ``.<name>.pldrop-old-PID``
    (the previous run) of a dead process; it is renamed back to ``out`` (the new run stays in its
    staging folder, which ``--resume`` continues). Returns the restored folder, or None.
    """
    out = Path(out)
    if out.exists() or out.is_symlink() or not out.parent.is_dir():
        return None
    pattern = _swap_names(out)
    for entry in sorted(out.parent.iterdir()):
        m = pattern.match(entry.name)
        if m and m.group(1) == "old" and entry.is_dir() and not entry.is_symlink() and not pid_alive(int(m.group(2))):
            os.rename(entry, out)
            return out
    return None


class Staged:
    """A new run written beside ``out`` and swapped in by :meth:`commit`.

    ``path`` is ``<parent>/.<name>.pldrop-new-<pid>``, an empty folder made here (or, with
    :meth:`adopt`, the interrupted staging folder of an earlier process, renamed to this
    process's PID under its lock). :meth:`commit` checks ``out`` again (nothing foreign appeared),
    renames it to ``.<name>.pldrop-old-<pid>``, renames ``path`` to ``out`` and only then removes
    the old folder. :meth:`abort` removes the staging folder only if it holds nothing but
    pldrop's files and no checkpoint (a staged run with a checkpoint is a run: ``--resume --out
    <out>`` continues it), and leaves ``out`` untouched.

    A kill at any moment leaves the old run intact: before the first rename ``out`` is the old
    run; between the renames the old run is ``.<name>.pldrop-old-<pid>`` and the next
    :func:`check_out` renames it back (:func:`restore_swapped`); after the second rename ``out``
    is the new run. Staging folders of dead processes that hold no checkpoint, only pldrop's files
    and no lock a live process holds are collected by the next ``Staged``.
    """

    def __init__(self, out: Path, _adopted: tuple[Path, "RunLock"] | None = None):
        self.out = Path(out)
        self.path = self.out.parent / f".{self.out.name}.pldrop-new-{os.getpid()}"
        self.kept = False
        self.lock: RunLock | None = None
        restore_swapped(self.out)
        if _adopted is not None:
            self.path, self.lock = _adopted
            return
        if self.out.exists():  # a dead process's staging (new) or replaced run (old): out is intact, they go
            collect_stale_tmp(self.out.parent, pattern=_swap_names(self.out), keep=_keep_staging)
        if self.path.exists():  # left by an earlier process with our PID (PID reuse)
            if foreign_files(self.path) or has_checkpoint(self.path) or lock_held(self.path):
                raise UserError(f"{str(self.path)!r} exists and holds a run or files pldrop did not write; remove it")
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)

    @classmethod
    def adopt(cls, out: Path, folder: Path) -> "Staged":
        """Continue the interrupted staging folder ``folder`` of ``out`` in this process: lock it (one
        line if another process holds it), rename it to this process's staging name and keep the lock
        until :meth:`commit` or :meth:`abort`."""
        out, folder = Path(out), Path(folder)
        lock = RunLock(folder).__enter__()
        mine = out.parent / f".{out.name}.pldrop-new-{os.getpid()}"
        if folder != mine:
            if os.path.lexists(mine):
                lock.__exit__(None, None, None)
                raise UserError(f"{str(mine)!r} exists (an earlier process with this PID); remove it")
            os.rename(folder, mine)  # held under its lock: nobody else adopts or collects it meanwhile
            lock.path = mine / LOCK
        print(f"pldrop: continuing the interrupted --overwrite run {str(folder)!r}; it replaces {str(out)!r} when "
              "it finishes", file=sys.stderr)
        return cls(out, _adopted=(mine, lock))

    def commit(self) -> None:
        """Swap the staged run into ``out``; the old run is removed only once the new one is in place."""
        old = self.out.parent / f".{self.out.name}.pldrop-old-{os.getpid()}"
        if self.out.exists():
            alien = foreign_files(self.out) if self.out.is_dir() and not self.out.is_symlink() else [self.out]
            if alien:  # someone put a file there while we trained: keep both, say where
                self.kept = True  # a later abort() must not remove the new run the message points to
                raise UserError(f"--overwrite: {str(alien[0])!r} appeared in {str(self.out)!r} during the run; the "
                                f"old run is left as it was and the new one is in {str(self.path)!r}")
            os.rename(self.out, old)
        os.rename(self.path, self.out)
        if self.lock is not None:  # it moved with the folder: remove it from there and release it
            self.lock.path = self.out / LOCK
            self.lock.__exit__(None, None, None)
            self.lock = None
        if old.exists():
            shutil.rmtree(old)

    def abort(self) -> None:
        """Remove the staging folder (only if it holds nothing but pldrop's files and no checkpoint, and
        :meth:`commit` did not refuse and point the user to it); ``out`` is untouched."""
        if (not self.kept and self.path.is_dir() and not self.path.is_symlink() and not has_checkpoint(self.path)
                and not foreign_files(self.path)):
            shutil.rmtree(self.path)
        if self.lock is not None:
            self.lock.__exit__(None, None, None)
            self.lock = None

    def __enter__(self) -> "Staged":
        return self

    def __exit__(self, exc_type, *exc) -> bool:
        """Commit when the block ends normally, abort when it raises."""
        if exc_type is None:
            self.commit()
        else:
            self.abort()
        return False


def _keep_staging(entry: Path) -> bool:
    """A dead process's staging or replaced folder that must stay: it holds a run to resume, a file
    pldrop did not write, or a live process holds its lock."""
    if not entry.is_dir() or lock_held(entry):
        return True
    return (".pldrop-new-" in entry.name and has_checkpoint(entry)) or bool(foreign_files(entry))


def staged(out: Path) -> Staged:
    """A :class:`Staged` replacement for ``out`` (its staging folder is created)."""
    return Staged(out)


def resume_staged(out: Path) -> Staged | None:
    """``--resume --out out``: the interrupted ``--overwrite`` run of ``out``, adopted (:meth:`Staged.adopt`),
    or None when there is none."""
    pending = pending_run(out, held_too=True)
    return Staged.adopt(out, pending) if pending is not None else None


def resume_folder(out: Path) -> Path:
    """The folder ``--resume --out out`` continues: the interrupted replacement of ``out`` (see
    :func:`pending_run`) if there is one, else ``out``."""
    return pending_run(out, held_too=True) or Path(out)


class RunLock:
    """Hold ``<out>/.pldrop.lock`` (``flock``) while a process writes ``out``; a second process gets
    a one-line error naming the holder's PID. The kernel drops the lock when the holder dies, so a
    kill leaves no stale lock; a clean exit removes the file.

    The file is removed while still locked, and a process that locked a file after it was removed
    (it had opened it just before) sees that the path no longer leads to its file and tries again,
    so removing it never lets two processes in.

    Args:
        out: the run folder.
        create: make ``out`` if missing (a new run), and after locking require it to hold nothing
            else -- of two processes starting the same new ``--out`` at once, the second gets a
            one-line error instead of writing into the first one's run. Take it right before the
            first file is written (after the data and model are ready), so that a failure before
            leaves no folder behind.
    """

    def __init__(self, out: Path, create: bool = False):
        self.path = Path(out) / LOCK
        self.create = create
        self.fd: int | None = None

    def __enter__(self) -> "RunLock":
        if self.create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        check_control_files(self.path.parent)
        self._lock()
        if self.create and any(p.name != LOCK for p in self.path.parent.iterdir()):
            self.__exit__(None, None, None)
            raise UserError(f"run folder {str(self.path.parent)!r} was created by another process meanwhile; "
                            "choose another --out")
        return self

    def _lock(self) -> None:
        import fcntl

        for _ in range(100):
            fd = open_own(self.path, os.O_RDWR | os.O_CREAT)  # never through a link
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise UserError(f"{str(self.path.parent)!r} is in use by another pldrop process (PID {holder}); "
                                "wait for it or choose another --out") from None
            if self._same_file(fd):
                self.fd = fd
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                return
            os.close(fd)  # locked a file its holder had just removed: take the new one
        raise UserError(f"cannot lock {str(self.path)!r}: it keeps being replaced")

    def _same_file(self, fd: int) -> bool:
        try:
            a, b = os.fstat(fd), os.lstat(self.path)
        except FileNotFoundError:
            return False
        return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)

    def __exit__(self, *exc) -> bool:
        if self.fd is not None:
            if self._same_file(self.fd):  # still ours (a swap may have moved the folder away)
                try:
                    os.unlink(self.path)
                except OSError:
                    pass
            os.close(self.fd)  # releases the flock
            self.fd = None
        return False


_TMP = re.compile(r"^\..+\.tmp-(\d+)(?:-[0-9a-f]{8})?$")  # pldrop's temporaries: hidden, PID last or before a tag


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists (on this machine).

    >>> pid_alive(os.getpid())
    True
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def collect_stale_tmp(folder: Path, pattern: re.Pattern = _TMP, include_self: bool = False,
                      keep=None) -> list[Path]:
    """Remove entries of ``folder`` whose name carries the PID of a dead process (``*.tmp-PID…``, or
    ``pattern``'s last group); returns what was removed. Entries of live processes are kept, and this
    process's own unless ``include_self`` (cleaning up after a failed write), and those for which
    ``keep(entry)`` is true."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        m = pattern.search(entry.name)
        if not m or entry.is_symlink():
            continue
        pid = int(m.groups()[-1])
        if pid == os.getpid() and include_self:
            pass
        elif pid == os.getpid() or pid_alive(pid):
            continue
        if keep is not None and keep(entry):
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed
