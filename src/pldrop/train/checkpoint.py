"""Checkpoints that survive a kill at any moment and never unpickle arbitrary objects.

Layout under ``<run>/checkpoints/``: one folder per checkpoint (``step-000120/`` with
``model.safetensors``, ``optimizer.pt``, ``rng.pt`` and ``state.json``) and ``latest.json``
naming the newest complete one. A checkpoint folder is written under a temporary name and
renamed into place, then ``latest.json`` is replaced atomically (temporary file, then
``os.replace``); only then are older folders removed. A kill at any point leaves the last
good checkpoint in place. ``manifest.json``, written last, records the SHA-256 of every file,
``state.json`` included, so a truncated or edited file is refused on load; tensors load through
safetensors and ``torch.load(weights_only=True)``, never plain pickle. Checkpoints written before
``manifest.json`` existed are still accepted: their ``state.json`` lists the other files' hashes,
which are checked, but ``state.json`` itself is not covered. Temporary folders and files of killed
saves (``.step-N.tmp-PID``, ``.latest.json.tmp-PID``) are removed by the next save once their
process is gone.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file

from ..data.wheels import sha256_file as _sha256
from ..errors import UserError

FILES = ("model.safetensors", "optimizer.pt", "rng.pt")
MANIFEST = "manifest.json"  # SHA-256 of FILES and state.json


def _fsync_write(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old or the new content, never a mix; recorded in
    the run folder's manifest (:func:`pldrop.train.rundir.record`)."""
    from .rundir import record

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    record(tmp, temporary=True)
    _fsync_write(tmp, text)
    os.replace(tmp, path)
    record(path)


def write_error(e: BaseException, where: Path) -> OSError:
    """The OSError a failed write really is.

    ``torch.save`` reports a full disk as ``RuntimeError`` (``[enforce fail at inline_container.cc:…]
    unexpected pos …``, ``basic_ios::clear: iostream error``, ``PytorchStreamWriter failed writing
    file …``) and safetensors as ``SafetensorError`` (``Error while serializing: I/O error: No space
    left on device (os error 28)``), so an ``except OSError`` misses both. The errno is the one the
    message names, else ENOSPC when ``where``'s file system is (nearly) full, else EIO with the
    message.

    >>> write_error(RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"),
    ...             Path(".")).strerror
    'No space left on device'
    """
    text = " ".join(str(e).split())
    m = re.search(r"os error (\d+)", text)
    if m:
        code = int(m.group(1))
    else:
        try:
            free = shutil.disk_usage(next(p for p in (Path(where), *Path(where).parents) if p.exists())).free
        except (OSError, StopIteration):
            free = None
        code = errno.ENOSPC if free is not None and free < 1 << 20 else errno.EIO
    reason = os.strerror(code) if code != errno.EIO else f"write failed: {text[:200]}"
    return OSError(code, reason, str(where))


def _written(write: Callable[[], Any], path: Path) -> None:
    """Run ``write`` (a torch.save or safetensors save of ``path``); a failed write raises OSError."""
    from safetensors import SafetensorError

    try:
        write()
    except (RuntimeError, SafetensorError) as e:
        raise write_error(e, path) from None


def save_checkpoint(root: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict[str, Any], keep: int = 2) -> Path:
    """Write a checkpoint for ``state['step']`` under ``root`` and point ``latest.json`` at it."""
    from .rundir import collect_stale_tmp, record

    if not root.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        record(root)
    collect_stale_tmp(root)  # half-written checkpoints of killed processes (disk full, kill -9)
    name = f"step-{int(state['step']):07d}"
    tmp = root / f".{name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    record(tmp, temporary=True)
    tmp.mkdir()
    try:  # a failure (a full disk) leaves no temporary folder behind, and the earlier checkpoints as they were
        # clone: tied weights (embeddings / decoder) share storage, which safetensors refuses
        tensors = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
        _written(lambda: save_file(tensors, str(tmp / "model.safetensors")), tmp / "model.safetensors")
        _written(lambda: torch.save(optimizer.state_dict(), tmp / "optimizer.pt"), tmp / "optimizer.pt")
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        _written(lambda: torch.save(rng, tmp / "rng.pt"), tmp / "rng.pt")
        state = dict(state, files={f: _sha256(tmp / f) for f in FILES})
        _fsync_write(tmp / "state.json", json.dumps(state, indent=1))
        sums = {**state["files"], "state.json": _sha256(tmp / "state.json")}
        _fsync_write(tmp / MANIFEST, json.dumps({"sha256": sums}, indent=1))
        final = root / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for f in (*FILES, "state.json", MANIFEST):
            record(final / f, sha256=sums.get(f))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(root / "latest.json", json.dumps({"checkpoint": name, "step": state["step"]}))
    old = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and p.name != name)
    for p in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    """The folder ``latest.json`` names, or None when there is no checkpoint."""
    pointer = root / "latest.json"
    if not pointer.is_file():
        return None
    try:
        name = json.loads(pointer.read_text(encoding="utf-8"))["checkpoint"]
    except (OSError, ValueError, KeyError, TypeError, IndexError):  # ValueError: JSON or UTF-8
        raise UserError(f"checkpoint pointer {str(pointer)!r} is damaged; remove it to restart from scratch") from None
    if not isinstance(name, str) or not re.fullmatch(r"step-\d+", name):
        raise UserError(f"checkpoint pointer {str(pointer)!r} is damaged (names {name!r}, not a step-N folder); "
                        "remove it to restart from scratch")
    path = root / name
    if not path.is_dir():
        raise UserError(f"{str(pointer)!r} names {name!r}, which is missing")
    return path


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    restore: Callable[[dict, dict], None] | None = None) -> dict[str, Any]:
    """Restore model, optimizer and RNG from ``path``; returns ``state.json``'s content.

    Every file is checked against ``manifest.json`` first (``state.json`` included); a checkpoint
    without one (pldrop before 0.2) is checked against the hashes its ``state.json`` lists.
    ``restore(weights, optimizer_state)`` puts the loaded full state in place of the default
    ``model.load_state_dict`` / ``optimizer.load_state_dict`` (FSDP2: each rank keeps its shard).
    """
    manifest = path / MANIFEST
    if manifest.exists():
        try:
            sums = json.loads(manifest.read_text(encoding="utf-8"))["sha256"]
            expected = {f: sums[f] for f in (*FILES, "state.json")}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"checkpoint {str(path)!r} is damaged: {MANIFEST} unreadable ({e})") from None
        for f, digest in expected.items():
            if not (path / f).is_file() or _sha256(path / f) != digest:
                raise UserError(f"checkpoint {str(path)!r} is damaged: {f} is missing, truncated or modified")
    try:
        state = json.loads((path / "state.json").read_text())
        files = state["files"]
        if not isinstance(state, dict) or not isinstance(files, dict):
            raise TypeError("not a JSON object")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"checkpoint {str(path)!r} is damaged: state.json unreadable ({e})") from None
    for f in FILES if not manifest.exists() else ():
        if not (path / f).is_file() or _sha256(path / f) != files.get(f):
            raise UserError(f"checkpoint {str(path)!r} is damaged: {f} is missing, truncated or modified")
    try:
        tensors = load_file(str(path / "model.safetensors"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about the pickle protocol before refusing
            opt_state = torch.load(path / "optimizer.pt", weights_only=True)
            rng = torch.load(path / "rng.pt", weights_only=True)
        if restore is None:
            model.load_state_dict(tensors, strict=True)
            optimizer.load_state_dict(opt_state)
        else:
            restore(tensors, opt_state)
    except pickle.UnpicklingError:
        raise UserError(f"checkpoint {str(path)!r} cannot be loaded: it holds objects other than tensors and "
                        "plain data, which pldrop refuses to unpickle") from None
    except Exception as e:  # noqa: BLE001 - any failure here means an unusable checkpoint
        raise UserError(f"checkpoint {str(path)!r} cannot be loaded: {str(e).splitlines()[0][:300]}") from None
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return state
