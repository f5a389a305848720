"""Run folders that never cost a user data: what pldrop may replace, and how.

- Every run folder pldrop makes holds a marker, ``.pldrop-run`` (JSON: version, time, command).
- ``--overwrite`` replaces only a pldrop run folder that holds nothing pldrop did not write
  (:func:`foreign_files`), that holds none of the run's inputs (corpus, tokenizer, config), and
  only after every input was checked and the data prepared; the new run is written beside the
  old one (:class:`Staged`) and swapped in at the end, so a failed or killed run leaves the old
  one as it was.
- One process at a time per folder (:class:`RunLock`, ``flock`` on ``.pldrop.lock``).
- Temporary entries of killed processes (``*.tmp-PID…``) are collected when their PID is gone
  (:func:`collect_stale_tmp`).
"""

from __future__ import annotations

import datetime
import errno
import fnmatch
import json
import os
import re
import shutil
from pathlib import Path

from ..errors import UserError

MARKER = ".pldrop-run"
LOCK = ".pldrop.lock"

# What pldrop writes in a run folder (pretrain), a comparison folder (compare) and a report folder.
RUN_FILES = (
    MARKER, LOCK, "config.yaml", "config.json", "generation_config.json", "model.safetensors", "pldrop.json",
    "metrics.jsonl", "summary.json", "CREDITS.md", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "vocab.txt", "diverged.json", "compare.json", "report.md", "results.json",
    "report.json", "bench_step.json", "bench_step.md", "converge.json", "converge.md", ".*.tmp-*",
    # plots (compare, report, bench): named ones only, so a user's own picture is never taken for ours
    "val_loss*.png", "val_accuracy*.png", "speedup*.png", "theta_blocks*.png", "step*.png", "bench_step*.png",
    "converge_*.png", "ablations_*.png",
    # pldrop shrink (a model with fewer blocks, its tokenizer) and pldrop evaluate-depth
    "shrink.json", "vocab.json", "merges.txt", "added_tokens.json", "depth.json", "depth.md", "depth*.png",
)
TREES = {  # sub-folders pldrop writes, with what may be inside
    "checkpoints": ("latest.json", "step-*", ".*.tmp-*"),
    "tb": ("events.out.tfevents.*",),
}


def _matches(name: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def is_run_folder(folder: Path) -> bool:
    """A folder pldrop made: its marker, or (runs made before the marker) config.yaml + pldrop.json,
    or compare.json / report.json."""
    folder = Path(folder)
    return ((folder / MARKER).is_file() or ((folder / "config.yaml").is_file() and (folder / "pldrop.json").is_file())
            or (folder / "compare.json").is_file() or (folder / "report.json").is_file()
            or ((folder / "results.json").is_file() and (folder / "report.md").is_file()))  # compare, before 0.2


def foreign_files(folder: Path) -> list[Path]:
    """Entries of ``folder`` (recursively) that pldrop did not write; sub-folders that are pldrop run
    folders themselves (the arms of a comparison, a report's runs) are checked the same way."""
    folder = Path(folder)
    found: list[Path] = []
    for entry in sorted(folder.iterdir()):
        name = entry.name
        if entry.is_symlink():
            found.append(entry)
        elif entry.is_dir() and name in TREES:
            found += [p for p in _walk(entry) if not _matches(p.relative_to(entry).parts[0], TREES[name])]
        elif entry.is_dir() and (is_run_folder(entry) or name in ("runs", "downstream")):
            found += foreign_files(entry) if is_run_folder(entry) else _walk_runs(entry)
        elif entry.is_dir() and name.startswith(".") and ".tmp-" in name:
            continue
        elif entry.is_dir() or not _matches(name, RUN_FILES):
            found.append(entry)
    return found


def _walk(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() or p.is_symlink()]


def _walk_runs(folder: Path) -> list[Path]:
    out = []
    for entry in sorted(folder.iterdir()):
        if entry.is_dir() and not entry.is_symlink() and is_run_folder(entry):
            out += foreign_files(entry)
        elif entry.is_dir() and not entry.is_symlink():
            out += _walk_runs(entry)
        elif not _matches(entry.name, RUN_FILES):
            out.append(entry)
    return out


def mark_run_folder(out: Path, command: str) -> None:
    """Write the marker that says pldrop made ``out``."""
    from .. import __version__

    info = {"pldrop": __version__, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": command}
    (Path(out) / MARKER).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
        return True
    except ValueError:
        return False


def check_out(out: Path, *, resume: bool, overwrite: bool, inputs=()) -> None:
    """Refuse, with one line, any ``--out`` pldrop must not write or replace. Writes nothing, except
    that a run a killed swap had moved aside is put back first (:func:`restore_swapped`).

    Args:
        out: the run folder asked for.
        resume: ``--resume`` (the folder must be a pldrop run folder).
        overwrite: ``--overwrite`` (the folder, if it exists, must be one pldrop may replace).
        inputs: files and folders the run reads (corpus files and folders, tokenizer folder, config
            files, cache folder): ``out`` may not be one of them, hold one, or lie inside one.
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
    if resume:
        if not out.is_dir() or not is_run_folder(out):
            raise UserError(f"--resume: {str(out)!r} is not a pldrop run folder (no config.yaml / {MARKER})")
        return
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
        raise UserError(f"run folder {str(out)!r} already exists; pass --resume to continue it or --overwrite to "
                        "replace it")
    cwd = Path.cwd().resolve()
    if real == cwd or _inside(cwd, real) or real in (Path.home().resolve(), Path(real.anchor)):
        raise UserError(f"--overwrite: {str(out)!r} is the current, home or root folder (or holds it); refusing")
    if not is_run_folder(out):
        raise UserError(f"--overwrite: {str(out)!r} is not a pldrop run folder (no {MARKER}); pldrop replaces "
                        "only folders it made -- remove it yourself or choose another --out")
    alien = foreign_files(out)
    if alien:
        more = f" (and {len(alien) - 1} more)" if len(alien) > 1 else ""
        raise UserError(f"--overwrite: {str(out)!r} holds {str(alien[0])!r}{more}, which pldrop did not write; "
                        "move it away first or choose another --out")


def _swap_names(out: Path) -> re.Pattern:
    return re.compile(rf"^\.{re.escape(out.name)}\.pldrop-(new|old)-(\d+)$")


def restore_swapped(out: Path) -> Path | None:
    """Put back a run that a killed :meth:`Staged.commit` had moved aside.

    A kill between the two renames of a swap leaves no ``out`` but ``.<name>.pldrop-old-PID``
    (the previous run) of a dead process; it is renamed back to ``out`` (the new run stays in its
    staging folder). Returns the restored folder, or None.
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

    ``path`` is ``<parent>/.<name>.pldrop-new-<pid>``, an empty folder made here. :meth:`commit`
    checks ``out`` again (nothing foreign appeared), renames it to ``.<name>.pldrop-old-<pid>``,
    renames ``path`` to ``out`` and only then removes the old folder. :meth:`abort` removes the
    staging folder (if it holds only pldrop's files) and leaves ``out`` untouched.

    A kill at any moment leaves the old run intact: before the first rename ``out`` is the old
    run; between the renames the old run is ``.<name>.pldrop-old-<pid>`` and the next
    :func:`check_out` renames it back (:func:`restore_swapped`); after the second rename ``out``
    is the new run. Staging and old folders of dead processes are collected by the next ``Staged``.
    """

    def __init__(self, out: Path):
        self.out = Path(out)
        self.path = self.out.parent / f".{self.out.name}.pldrop-new-{os.getpid()}"
        self.kept = False
        restore_swapped(self.out)
        if self.out.exists():  # a dead process's staging (new) or replaced run (old): out is intact, they go
            collect_stale_tmp(self.out.parent, pattern=_swap_names(self.out))
        if self.path.exists():  # left by an earlier process with our PID (PID reuse)
            if foreign_files(self.path):
                raise UserError(f"{str(self.path)!r} exists and holds files pldrop did not write; remove it")
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)

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
        if old.exists():
            shutil.rmtree(old)

    def abort(self) -> None:
        """Remove the staging folder (only if it holds nothing but pldrop's files, and :meth:`commit` did
        not refuse and point the user to it); ``out`` is untouched."""
        if not self.kept and self.path.is_dir() and not self.path.is_symlink() and not foreign_files(self.path):
            shutil.rmtree(self.path)

    def __enter__(self) -> "Staged":
        return self

    def __exit__(self, exc_type, *exc) -> bool:
        """Commit when the block ends normally, abort when it raises."""
        if exc_type is None:
            self.commit()
        else:
            self.abort()
        return False


def staged(out: Path) -> Staged:
    """A :class:`Staged` replacement for ``out`` (its staging folder is created)."""
    return Staged(out)


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
        self._lock()
        if self.create and any(p.name != LOCK for p in self.path.parent.iterdir()):
            self.__exit__(None, None, None)
            raise UserError(f"run folder {str(self.path.parent)!r} was created by another process meanwhile; "
                            "choose another --out")
        return self

    def _lock(self) -> None:
        import fcntl

        for _ in range(100):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
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
            a, b = os.fstat(fd), os.stat(self.path)
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


def collect_stale_tmp(folder: Path, pattern: re.Pattern = _TMP, include_self: bool = False) -> list[Path]:
    """Remove entries of ``folder`` whose name carries the PID of a dead process (``*.tmp-PID…``, or
    ``pattern``'s last group); returns what was removed. Entries of live processes are kept, and this
    process's own unless ``include_self`` (cleaning up after a failed write)."""
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
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed
