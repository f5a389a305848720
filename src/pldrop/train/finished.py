"""Reading a comparison that says it finished, without taking its word for it.

``--report-only`` and ``--merge`` render what ran: each run's own ``config.yaml`` (the settings and
seed it trained with), ``summary.json`` (written when it finished) and ``metrics.jsonl`` (every
step it took), checked against one another -- never ``results.json``'s claim alone. A comparison
killed during a ``--resume`` with a larger budget still holds the old ``results.json``; its runs'
configs hold the new budget, which their summaries fall short of, or their metrics run past their
summaries. The folder is locked while it is read (:func:`hold`), so a group that a live process
trains or writes is refused, not read half-way.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
from pathlib import Path
from typing import Any

from ..errors import UserError

COMPARE_FILE = "compare.json"


def read_compare_file(out: Path, flag: str = "--resume") -> dict:
    """``compare.json``: known arms, each once; seeds a list of distinct integers (one line if not)."""
    from ..arms import ARMS

    path = Path(out) / COMPARE_FILE
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(saved, dict):
            raise ValueError("not a JSON object")
        arms, seeds = saved.get("arms"), saved.setdefault("seeds", [0])
        if not (isinstance(arms, list) and arms and all(isinstance(a, str) for a in arms)):
            raise ValueError(f"arms is {arms!r}, not a list of arm names")
        unknown = [a for a in arms if a not in ARMS]
        if unknown or len(set(arms)) != len(arms):
            raise ValueError(f"arms {arms!r}: each of {', '.join(ARMS)} at most once")
        if not (isinstance(seeds, list) and seeds and all(_int(s) and s >= 0 for s in seeds)
                and len(set(seeds)) == len(seeds)):
            raise ValueError(f"seeds is {seeds!r}, not a list of distinct integers >= 0")
        merged = saved.get("merged_from")
        if merged is not None and not (isinstance(merged, list) and all(isinstance(m, str) for m in merged)):
            raise ValueError(f"merged_from is {merged!r}, not a list of folders")
    except FileNotFoundError:
        raise UserError(f"{flag}: {str(out)!r} is not a pldrop compare folder (no {COMPARE_FILE})") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{flag}: {str(path)!r} is damaged ({e})") from None
    return saved


def _int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# meta keys the report reads, with the type each must have when present
META_TYPES = {"command": str, "protocol": str, "machine": dict, "load_start": list, "load_end": list,
              "groups": list, "summaries": dict, "baseline": str}


def check_results(res: Any) -> None:
    """Raise ValueError naming the first part of a ``results.json`` the report cannot use.

    >>> check_results({"meta": {}, "analysis": {"num_layers": 2, "unigram": None}})
    >>> check_results({"meta": 5, "analysis": {"num_layers": 2}})
    Traceback (most recent call last):
    ValueError: meta is 5, not a mapping
    >>> check_results({"meta": {}, "analysis": {"num_layers": 2, "unigram": "x"}})
    Traceback (most recent call last):
    ValueError: analysis.unigram is 'x', not {"loss": number, "accuracy": number}
    """
    if not isinstance(res, dict):
        raise ValueError("not a JSON object")
    meta, an = res.get("meta"), res.get("analysis")
    if not isinstance(meta, dict):
        raise ValueError(f"meta is {meta!r}, not a mapping")
    for key, tp in META_TYPES.items():
        if meta.get(key) is not None and not isinstance(meta[key], tp):
            raise ValueError(f"meta.{key} is {meta[key]!r}, not a {tp.__name__}")
    for key in ("load_start", "load_end"):
        if meta.get(key) is not None and not all(_number(x) for x in meta[key]):
            raise ValueError(f"meta.{key} is {meta[key]!r}, not a list of numbers")
    for g in meta.get("groups") or []:
        if not (isinstance(g, dict) and isinstance(g.get("seeds"), list) and isinstance(g.get("folder"), str)
                and isinstance(g.get("machine") or {}, dict) and isinstance(g.get("unigram") or {}, dict)):
            raise ValueError(f"meta.groups holds {g!r}, not a group of seeds")
    if not isinstance(an, dict):
        raise ValueError(f"analysis is {an!r}, not a mapping")
    if not (_int(an.get("num_layers")) and an["num_layers"] >= 1):
        raise ValueError(f"analysis.num_layers is {an.get('num_layers')!r}, not a number of blocks")
    uni = an.get("unigram")
    if uni is not None and not (isinstance(uni, dict) and _number(uni.get("loss")) and _number(uni.get("accuracy"))):
        raise ValueError(f'analysis.unigram is {uni!r}, not {{"loss": number, "accuracy": number}}')
    if res.get("depth") is not None:
        check_depth(res["depth"])
    if res.get("downstream") is not None:
        from ..reporting.compare_downstream import check_downstream

        check_downstream(res["downstream"])


def check_depth(depth: Any) -> None:
    """Raise ValueError naming the first part of a comparison's ``depth`` block the report cannot use.

    >>> pt = {"keep": 1, "kept": [0], "val_loss": 2.0, "val_accuracy": 0.5}
    >>> check_depth({"strategy": "top", "models": {"pld": {"num_layers": 1, "objective": "masked-lm", "points": [pt]}}})
    >>> check_depth({"strategy": "top", "models": {"pld": {"num_layers": 1, "points": [{**pt, "kept": 0}]}}})
    Traceback (most recent call last):
    ValueError: depth.models.pld.points[0] is not a point of a depth curve
    """
    if not (isinstance(depth, dict) and isinstance(depth.get("strategy"), str) and isinstance(depth.get("models"), dict)
            and isinstance(depth.get("runs", {}), dict) and isinstance(depth.get("skipped") or {}, dict)
            and isinstance(depth.get("timing") or {}, dict)):
        raise ValueError("depth is not a block of depth curves")
    for where in ("models", "runs"):
        for name, c in (depth.get(where) or {}).items():
            if not (isinstance(c, dict) and _int(c.get("num_layers")) and isinstance(c.get("points"), list)
                    and c["points"]):
                raise ValueError(f"depth.{where}.{name} is not a depth curve")
            for i, p in enumerate(c["points"]):
                ok = isinstance(p, dict) and _int(p.get("keep")) and isinstance(p.get("kept"), list) \
                    and all(_int(k) for k in p["kept"]) and _number(p.get("val_loss")) \
                    and _number(p.get("val_accuracy")) and all(p.get(k) is None or _number(p[k]) for k in
                                                               ("accuracy_kept", "time_ratio", "time_per_seq_s"))
                if not ok:
                    raise ValueError(f"depth.{where}.{name}.points[{i}] is not a point of a depth curve")


def read_results(out: Path, flag: str, saved: dict | None = None) -> dict:
    """A finished comparison's ``results.json``, checked (:func:`check_results`), or one line."""
    out = Path(out)
    try:
        res = json.loads((out / "results.json").read_text(encoding="utf-8"))
        check_results(res)
    except FileNotFoundError:
        raise UserError(f"{flag}: {str(out)!r} has no results.json: the comparison has not finished"
                        + _advice(out, saved)) from None
    except (OSError, ValueError) as e:
        raise UserError(f"{flag}: {str(out / 'results.json')!r} is damaged ({e})") from None
    return res


def _advice(out: Path, saved: dict | None) -> str:
    """How to finish a comparison: resume it, or (a --merge output) merge its finished groups again."""
    if saved is not None and saved.get("merged_from") is not None:
        return " (it was joined by --merge: finish the groups it came from and merge them again)"
    return f" (continue it with pldrop compare --resume --out {out})"


def budget_reached(budget, summary: dict) -> bool:
    """Whether a run's summary reached the budget of its config (steps, samples or minutes).

    >>> from types import SimpleNamespace as B
    >>> budget_reached(B(max_steps=8, max_samples=None, max_minutes=None), {"steps": 4})
    False
    >>> budget_reached(B(max_steps=None, max_samples=None, max_minutes=1.0), {"train_time_s": 60.2})
    True
    """
    if budget.max_steps is not None:
        return summary["steps"] >= budget.max_steps
    if budget.max_samples is not None:
        return summary["samples"] >= budget.max_samples
    return summary["train_time_s"] >= budget.max_minutes * 60


def _budget(budget) -> str:
    return (f"{budget.max_steps} steps" if budget.max_steps is not None else
            f"{budget.max_samples} samples" if budget.max_samples is not None else f"{budget.max_minutes:g} minutes")


def run_config(run: Path, flag: str):
    """The :class:`TrainConfig` a run trained with (its ``config.yaml``), or one line."""
    import yaml

    from .config import load_config

    path = run / "config.yaml"
    try:
        saved = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(saved, dict):
            raise ValueError("not a mapping of config keys")
        return load_config(base=saved)
    except FileNotFoundError:
        raise UserError(f"{flag}: {str(run)!r} has no config.yaml: it is not a run of this comparison") from None
    except (OSError, ValueError, yaml.YAMLError) as e:  # UserError is a ValueError
        raise UserError(f"{flag}: {str(path)!r} is damaged ({str(e).splitlines()[0] if str(e) else e})") from None


def finished_run(run: Path, flag: str, advice: str) -> tuple[Any, dict, list[dict]]:
    """A run that reached its budget (or diverged): its config, summary and metrics; else one line.

    Finished means: ``summary.json`` exists, the metrics end at the summary's step (a ``--resume``
    that trained on after it and was stopped leaves them longer), and the summary reached the
    budget in ``config.yaml`` (a ``--resume`` with a larger budget rewrites the config first).
    """
    from .analysis import read_metrics

    cfg = run_config(run, flag)
    try:
        records = read_metrics(run / "metrics.jsonl")
    except FileNotFoundError:
        raise UserError(f"{flag}: {str(run)!r} has no metrics.jsonl: the run never trained{advice}") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{flag}: {str(run / 'metrics.jsonl')!r} is damaged ({e})") from None
    steps = [r.get("step") for r in records if isinstance(r, dict)]
    if len(steps) != len(records) or not all(_int(s) for s in steps):
        raise UserError(f"{flag}: {str(run / 'metrics.jsonl')!r} is damaged (a line without a step number)")
    try:
        summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        last = f"stopped at step {steps[-1]}" if steps else "took no step"
        raise UserError(f"{flag}: {str(run)!r} {last} and has no summary.json: it has not finished{advice}") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{flag}: {str(run / 'summary.json')!r} is damaged ({e})") from None
    if not (isinstance(summary, dict) and _int(summary.get("steps")) and _number(summary.get("samples"))
            and _number(summary.get("train_time_s"))):
        raise UserError(f"{flag}: {str(run / 'summary.json')!r} is damaged (no steps, samples and train_time_s)")
    last = steps[-1] if steps else 0
    if last != summary["steps"]:
        raise UserError(f"{flag}: {str(run)!r} trained to step {last} after its summary.json (step "
                        f"{summary['steps']}): a --resume was stopped before it finished{advice}")
    if not summary.get("diverged") and not budget_reached(cfg.budget, summary):
        raise UserError(f"{flag}: {str(run)!r} stopped at step {summary['steps']}, short of its budget of "
                        f"{_budget(cfg.budget)}: it has not finished{advice}")
    return cfg, summary, records


def finished_runs(out: Path, names: list[str], flag: str, saved: dict | None = None) -> dict[str, tuple]:
    """:func:`finished_run` of each named run folder of a comparison."""
    advice = _advice(Path(out), saved)
    return {name: finished_run(Path(out) / name, flag, advice) for name in names}


def _lock_holder(folder: Path) -> str:
    from .rundir import LOCK

    try:
        fd = os.open(Path(folder) / LOCK, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return "?"
    try:
        return os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
    finally:
        os.close(fd)


@contextlib.contextmanager
def hold(folder: Path, flag: str):
    """Lock a comparison folder while it is read (and, for --report-only, rewritten): one line if a
    live process holds it (training, resuming, writing). A folder this user cannot write is only
    checked: a holder there would hold its lock file, so a shared lock on it fails."""
    import fcntl

    from .rundir import LOCK, RunLock, check_control_files

    folder = Path(folder)
    check_control_files(folder)  # a linked lock or marker is refused as such, not taken for a busy folder

    def busy() -> UserError:
        return UserError(f"{flag}: {str(folder)!r} is in use by another pldrop process (PID {_lock_holder(folder)}): "
                         "it is still training or being written; wait for it to finish")

    lock = RunLock(folder)
    try:
        lock.__enter__()
    except UserError:
        raise busy() from None
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise UserError(f"{flag}: cannot lock {str(folder)!r} ({e.strerror or e})") from None
        try:
            fd = os.open(folder / LOCK, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            fd = None  # no lock file: nobody holds the folder
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                raise busy() from None
            finally:
                os.close(fd)
        yield
        return
    try:
        yield
    finally:
        lock.__exit__(None, None, None)
