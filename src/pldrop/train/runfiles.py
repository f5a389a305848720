"""Files of a run folder: JSON without NaN, what changed between configs, metrics after a kill."""

from __future__ import annotations

import datetime
import json
import math
from pathlib import Path
from typing import Any

from ..errors import UserError
from .checkpoint import atomic_write_text


def finite_or_none(d: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN: non-finite floats become None (``json.dumps(..., allow_nan=False)`` then holds).

    >>> finite_or_none({"a": float("nan"), "b": 1.5, "c": "x"})
    {'a': None, 'b': 1.5, 'c': 'x'}
    """
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def _get(d: dict, dotted: str):
    for k in dotted.split("."):
        d = d.get(k) if isinstance(d, dict) else None
    return d


def config_changes(saved: dict, now: dict, prefix: str = "") -> dict[str, list]:
    """Dotted keys whose value differs between two config dicts: ``{key: [saved, now]}``.

    >>> config_changes({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}})
    {'a.c': [2, 3]}
    """
    out: dict[str, list] = {}
    for k in sorted(set(saved) | set(now)):
        a, b = saved.get(k), now.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out.update(config_changes(a, b, f"{prefix}{k}."))
        elif a != b:
            out[f"{prefix}{k}"] = [a, b]
    return out


# --- run-folder files -------------------------------------------------------------------------


def finished_summary(out: Path, budget) -> dict[str, Any] | None:
    """``summary.json`` of the run in ``out`` if it finished at its latest checkpoint with ``budget``
    already spent (a ``--resume`` with nothing to train), else None.

    A run killed between its last checkpoint and ``summary.json``, or trained past the step its
    summary names, is not finished: resuming it trains or writes its final files.
    """
    try:
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        pointer = json.loads((out / "checkpoints" / "latest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or not isinstance(pointer, dict):
        return None
    steps, samples, secs = summary.get("steps"), summary.get("samples"), summary.get("train_time_s")
    if not (isinstance(steps, int) and isinstance(samples, int) and isinstance(secs, (int, float))):
        return None
    from .finished import budget_reached

    if pointer.get("step") != steps or not budget_reached(budget, summary):
        return None
    return summary


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{str(path)!r} is damaged ({e}); it is not a readable pldrop file") from None
    if not isinstance(data, dict):
        raise UserError(f"{str(path)!r} is damaged: not a JSON object")
    return data


def _mark(out: Path, command: str | None) -> None:
    from .rundir import mark_run_folder

    from .command_line import command_line

    mark_run_folder(out, command or command_line())


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop lines logged after the checkpoint we resume from (they will be logged again); a damaged
    last line (a kill mid-write) is dropped too."""
    if not path.is_file():
        return
    keep = []
    for ln in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not ln.strip():
            continue
        try:
            rec = json.loads(ln)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] <= step:
            keep.append(ln)
    atomic_write_text(path, "".join(ln + "\n" for ln in keep))
