"""`pldrop compare --merge A B ... --out M`: one report over seeds that ran as separate lockstep comparisons.

Three arms at 45 training minutes each are over two hours of a 2-core machine; three seeds of them in
one process are seven, more than many machines stay up. So each seed (or group of seeds) may run as a
lockstep comparison of its own -- ``pldrop compare --seed 1 --out A``, ``--seed 2 --out B`` -- and
``--merge`` joins the finished groups: it copies each run's small files (metrics, configs, summaries;
no checkpoints) into ``M/<arm>-s<seed>`` and writes the report exactly as ``--seeds`` would, with each
group's command, machine and load. Within a group the arms shared the machine step by step; between
groups they did not, so the report lists the groups' loads. The groups must train the same recipe
(every setting except the seed and ``save_every``) and hold distinct seeds.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

RUN_COPY = (".pldrop-run", "config.yaml", "config.json", "pldrop.json", "metrics.jsonl", "summary.json")
NOT_RECIPE = ("seed", "save_every", "data.cache_dir")  # settings that may differ between groups
SPEED_TOLERANCE = 1.25  # a minute budget on a machine this much faster or slower is another experiment


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """Nested config dict -> dotted keys.

    >>> flatten({"optim": {"lr": 1e-3, "batch_size": 32}, "seed": 0})
    {'optim.lr': 0.001, 'optim.batch_size': 32, 'seed': 0}
    """
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def recipe_difference(a: dict, b: dict) -> tuple[str, Any, Any] | None:
    """The first setting two runs' configs differ in, leaving out the seed and where they saved.

    >>> recipe_difference({"seed": 0, "optim": {"lr": 1e-3}}, {"seed": 1, "optim": {"lr": 1e-3}}) is None
    True
    >>> recipe_difference({"optim": {"lr": 1e-3}}, {"optim": {"lr": 2e-3}})
    ('optim.lr', 0.001, 0.002)

    A key that a later pldrop added (e.g. ``pld.schedule``) reads as its default in an older config:

    >>> recipe_difference({"pld": {"theta_bar": 0.5}}, {"pld": {"theta_bar": 0.5, "schedule": "pld"}}) is None
    True
    """
    from .config import TrainConfig

    defaults = flatten(TrainConfig().to_dict())
    fa, fb = {**defaults, **flatten(a)}, {**defaults, **flatten(b)}
    for key in sorted(set(fa) | set(fb)):
        if key not in NOT_RECIPE and fa.get(key) != fb.get(key):
            return key, fa.get(key), fb.get(key)
    return None


def _source(src: Path) -> dict[str, Any]:
    """A finished comparison (call it under :func:`~pldrop.train.finished.hold`): its arms, recorded
    meta, unigram and depth, and each run's config, summary and corpus fingerprint, checked to have
    reached its budget; the seeds are those its runs trained with. One line if it is not one."""
    from ..errors import UserError
    from .compare import _read_compare_file, read_results, run_name
    from .finished import finished_runs
    from .runfiles import _read_json

    saved = _read_compare_file(src, "--merge")
    res = read_results(src, "--merge", saved)
    meta, unigram, layers = dict(res["meta"]), res["analysis"].get("unigram"), res["analysis"]["num_layers"]
    try:
        speed = {a: float(f["summary"]["time_per_sample_s"]) for a, f in res["analysis"]["arms"].items()}
    except (KeyError, TypeError, ValueError, AttributeError):
        speed = {}
    arms, listed = saved["arms"], saved["seeds"]
    names = {s: [run_name(a, s, len(listed)) for a in arms] for s in listed}
    runs = finished_runs(src, [n for ns in names.values() for n in ns], "--merge", saved)
    seeds, by_seed = [], {}
    for s, ns in names.items():
        ran = {runs[n][0].seed for n in ns}
        if len(ran) > 1:
            raise UserError(f"--merge: the runs of seed {s} in {str(src)!r} trained with different seeds "
                            f"({', '.join(map(str, sorted(ran)))}); it is not a comparison of one seed")
        seed = ran.pop()
        seeds.append(seed)
        by_seed[seed] = {arm: n for arm, n in zip(arms, ns)}
    prints = {}
    for n in runs:
        info = _read_json(src / n / "pldrop.json") if (src / n / "pldrop.json").is_file() else {}
        prints[n] = info.get("corpus_fingerprint") if isinstance(info.get("corpus_fingerprint"), str) else None
    return {"path": src, "arms": arms, "seeds": seeds, "by_seed": by_seed, "meta": meta, "unigram": unigram,
            "depth": res.get("depth"), "downstream": res.get("downstream"), "num_layers": layers, "speed": speed, "runs": runs, "fingerprints": prints}


def speed_mismatch(speeds: list[float | None], tolerance: float = SPEED_TOLERANCE) -> float | None:
    """The ratio of the slowest to the fastest time per sample when it exceeds ``tolerance``.

    >>> speed_mismatch([5.6e-3, 5.9e-3]) is None
    True
    >>> round(speed_mismatch([5.6e-3, 2.9e-3]), 2)
    1.93
    """
    known = [s for s in speeds if s]
    if len(known) < 2 or max(known) / min(known) <= tolerance:
        return None
    return max(known) / min(known)


def merge(args) -> int:
    """``--merge``: validate every group under its lock, then write the merged comparison (staged under
    --overwrite); the groups stay locked until it is written, so none changes while it is read."""
    import contextlib

    from ..errors import UserError
    from .compare import _read_compare_file, given_options
    from .finished import hold

    out: Path = args.out
    clash = given_options(args, allowed=("out", "merge", "arms", "overwrite", "no_progress", "command", "run"))
    if clash:
        raise UserError(f"--merge trains nothing and takes every setting from the comparisons it joins: "
                        f"leave out {' '.join(clash)}")
    if len(args.merge) < 2:
        raise UserError("--merge: give two or more finished comparisons to join")
    if args.arms and len(set(args.arms)) != len(args.arms):
        raise UserError(f"--arms {' '.join(args.arms)}: each arm at most once")
    for s in args.merge:  # as check_out does, but first: a group is never the place to write
        src, real = Path(s).resolve(), out.resolve()
        if real == src or real in src.parents or src in real.parents:
            raise UserError(f"--out {str(out)!r} holds the run's input {str(s)!r}; choose another folder")
    from .rundir import LOCK

    if out.is_dir() and not out.is_symlink() and any(p.name != LOCK for p in out.iterdir()) and not args.overwrite:
        raise UserError(f"--merge: --out {str(out)!r} already exists; choose another folder, or pass --overwrite "
                        "to replace a comparison pldrop wrote")
    with contextlib.ExitStack() as held:
        sources, seen = [], {}  # each distinct folder read (and locked) once; the same group twice is found by its seeds
        for s in args.merge:
            key = Path(s).resolve()
            if key not in seen:
                _read_compare_file(Path(s), "--merge")  # one line if it is not a comparison, before locking it
                held.enter_context(hold(Path(s), "--merge"))
                seen[key] = _source(Path(s))
            sources.append({**seen[key], "path": Path(s)})
        return _merge(args, out, sources)


def _merge(args, out: Path, sources: list[dict]) -> int:
    from ..errors import UserError
    from .command_line import command_line
    from .compare import print_summary, run_name
    from .rundir import RunLock, check_out, staged

    arms = args.arms or sources[0]["arms"]
    owner: dict[int, Path] = {}
    for s in sources:
        for arm in arms:
            if arm not in s["arms"]:
                raise UserError(f"--merge: {str(s['path'])!r} has no arm {arm} (it compares {' '.join(s['arms'])}); "
                                f"pick the arms all groups share with --arms")
        for seed in s["seeds"]:
            if seed in owner:
                raise UserError(f"--merge: seed {seed} is in both {str(owner[seed])!r} and {str(s['path'])!r}; "
                                "each seed may come from one group only")
            owner[seed] = s["path"]
    seeds = sorted(owner)
    # every run's config, under the name it gets in the merged folder
    cfgs, origin = {}, {}
    for s in sources:
        for seed in s["seeds"]:
            for arm in arms:
                src_name = s["by_seed"][seed][arm]
                name = run_name(arm, seed, len(seeds))
                cfgs[name], origin[name] = s["runs"][src_name][0], (s, src_name)
    first = {arm: cfgs[run_name(arm, seeds[0], len(seeds))].to_dict() for arm in arms}
    for name, cfg in cfgs.items():
        diff = recipe_difference(first[cfg.model.arm], cfg.to_dict())
        if diff is not None:
            raise UserError(f"--merge: {str(origin[name][0]['path'] / origin[name][1])!r} differs from "
                            f"{str(owner[seeds[0]])!r} in {diff[0]} ({diff[2]!r} vs {diff[1]!r}): not the same "
                            "recipe, so its seeds are not samples of one experiment")
    ref_name = next(iter(origin))
    ref_print = origin[ref_name][0]["fingerprints"][origin[ref_name][1]]
    for name, (s, src_name) in origin.items():
        fp = s["fingerprints"][src_name]
        if ref_print and fp and fp != ref_print:
            raise UserError(f"--merge: {str(s['path'] / src_name)!r} was trained on another corpus than "
                            f"{str(origin[ref_name][0]['path'] / origin[ref_name][1])!r} (corpus fingerprint "
                            f"{fp[:12]} vs {ref_print[:12]}): groups of different corpora are not seeds of one "
                            "experiment")
    if any(c.budget.max_minutes for c in cfgs.values()):
        ref = arms[0]
        ratio = speed_mismatch([s["speed"].get(ref) for s in sources])
        if ratio is not None:
            ms = " vs ".join(f"{1e3 * s['speed'][ref]:.2f}" for s in sources if s["speed"].get(ref))
            raise UserError(f"--merge: the groups' {ref} arms took {ms} ms per sample ({ratio:.2f}x apart): they ran "
                            "on machines of different speed (or under different load), so the same minutes are not "
                            "the same training; merge groups made on one kind of machine, or budget in steps")
    if len({s["num_layers"] for s in sources}) > 1:
        raise UserError("--merge: the groups' models have different depths")
    check_out(out, resume=False, resumable=False, overwrite=args.overwrite, inputs=[s["path"] for s in sources])

    uni = [s["unigram"] for s in sources]
    unigram = None if None in uni else {k: sum(u[k] for u in uni) / len(uni) for k in ("loss", "accuracy")}
    summaries = {name: s["runs"][src_name][1] for name, (s, src_name) in origin.items()}  # what each run says
    groups = [{"folder": str(s["path"]), "seeds": s["seeds"], "unigram": s["unigram"],
               **{k: s["meta"].get(k) for k in ("command", "machine", "load_start", "load_end")}} for s in sources]
    meta = {"command": command_line(), "machine": sources[0]["meta"].get("machine"),
            "protocol": "lockstep within each group of seeds (all arms in one process, one optimizer step at a "
                        "time, the arm with the least training time first; validation at the same sample counts); "
                        "the groups ran separately and were joined by pldrop compare --merge",
            "groups": groups, "summaries": summaries}
    stage, created = None, not out.exists()
    try:
        if args.overwrite and out.exists():
            stage = staged(out)
        work = stage.path if stage is not None else out
        with RunLock(work, create=True):  # refuses (before anything is written) if another process got there
            try:
                results = _write_merged(work, origin, cfgs, arms, seeds, unigram, meta, sources)
            except BaseException:
                if stage is None:  # a folder made (or found empty) under this lock: a failed merge leaves it so
                    _remove_written(out, remove_folder=created)
                raise
        if stage is not None:
            stage.commit()
            stage = None
    finally:
        if stage is not None:
            stage.abort()
    print_summary(results)
    print(f"report: {out / 'report.md'}")
    return 0


def _remove_written(out: Path, remove_folder: bool) -> None:
    """After a failed merge: remove what it wrote in ``out`` (which held nothing else when it was locked)."""
    from .rundir import LOCK

    if remove_folder:
        shutil.rmtree(out, ignore_errors=True)
        return
    for entry in out.iterdir():
        if entry.name == LOCK:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _write_merged(work: Path, origin: dict, cfgs: dict, arms: list[str], seeds: list[int], unigram, meta: dict,
                  sources: list[dict]) -> dict[str, Any]:
    """compare.json, the runs' small files under their merged names, then the report."""
    from ..errors import UserError
    from .compare import _write_compare_file, write_report
    from .rundir import MARKER, mark_run_folder, record

    _write_compare_file(work, arms, seeds, False, merged_from=[str(s["path"]) for s in sources])
    for name, (s, src_name) in origin.items():
        src = s["path"] / src_name
        (work / name).mkdir()
        mark_run_folder(work / name, _made_by(src), copied_from=str(src))  # the arm keeps its own manifest
        for f in RUN_COPY:
            if f != MARKER and (src / f).is_file():
                shutil.copy2(src / f, work / name / f)
                record(work / name / f)
    try:
        return write_report(work, cfgs, arms, seeds, unigram, meta, sources[0]["num_layers"],
                            depth=merged_depth(origin, arms, seeds),
                            downstream=merged_downstream(origin, arms, seeds))
    except ValueError as e:  # a metrics.jsonl line that is not JSON
        raise UserError(f"--merge: a run's metrics.jsonl is damaged ({e})") from None


def merged_depth(origin: dict, arms: list[str], seeds: list[int]) -> dict[str, Any] | None:
    """The groups' depth curves under the merged run names, and each arm's mean over all its seeds
    (an arm some group has no curve for is listed as skipped); None where no group has curves."""
    from .compare import run_name
    from .depth import mean_curve

    found = [s["depth"] for s, _ in origin.values() if isinstance(s.get("depth"), dict)]
    if not found:
        return None
    runs, models, skipped = {}, {}, {}
    for arm in arms:
        names = [run_name(arm, seed, len(seeds)) for seed in seeds]
        curves = {n: ((origin[n][0].get("depth") or {}).get("runs") or {}).get(origin[n][1]) for n in names}
        missing = [str(origin[n][0]["path"] / origin[n][1]) for n, c in curves.items() if c is None]
        if missing:
            skipped[arm] = f"no depth curve: {', '.join(missing)} has none"
            continue
        runs.update(curves)
        models[arm] = mean_curve(list(curves.values()))
    return {"strategy": found[0]["strategy"], "min_keep": found[0].get("min_keep"), "timing": found[0].get("timing"),
            "precision": found[0].get("precision"), "seeds": len(seeds), "runs": runs, "models": models, "skipped": skipped}


def merged_downstream(origin: dict, arms: list[str], seeds: list[int]) -> dict[str, Any] | None:
    """The groups' fine-tuning scores under the merged run names, each arm's mean and interval over all its
    seeds recomputed; a task some group was not fine-tuned on is left out (None where no group has any).
    The scores are carried, not the fine-tuning folders."""
    from ..reporting.compare_downstream import downstream_block

    blocks = [s.get("downstream") for s, _ in origin.values()]
    if not any(isinstance(b, dict) and b for b in blocks):
        return None
    tasks = [t for t in (next(b for b in blocks if isinstance(b, dict) and b))
             if all(isinstance(b, dict) and t in b for b in blocks)]
    scores = {}
    for task in tasks:
        runs = {n: (s["downstream"][task].get("runs") or {}).get(src) for n, (s, src) in origin.items()}
        scores[task] = {"metric": origin[next(iter(origin))][0]["downstream"][task]["metric"], "runs": runs}
        # the reduced depths every group was fine-tuned at, cut to the same number of blocks
        cuts = [s["downstream"][task].get("by_depth") or {} for s, _ in origin.values()]
        by_depth = {}
        for key in cuts[0]:
            if all(key in c and c[key].get("blocks") == cuts[0][key].get("blocks") for c in cuts):
                by_depth[key] = {"blocks": cuts[0][key]["blocks"],
                                 "runs": {n: (s["downstream"][task]["by_depth"][key].get("runs") or {}).get(src)
                                          for n, (s, src) in origin.items()}}
        if by_depth:
            scores[task]["by_depth"] = by_depth
    return downstream_block(scores, arms, seeds) or None


def _made_by(run: Path) -> str:
    """The command recorded in a run's marker ('' where there is none or it is unreadable)."""
    import json

    try:
        info = json.loads((run / ".pldrop-run").read_text(encoding="utf-8"))
        return str(info.get("command", "")) if isinstance(info, dict) else ""
    except (OSError, ValueError):
        return ""
