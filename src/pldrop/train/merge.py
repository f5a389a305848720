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
    """A finished comparison's arms, seeds, recorded meta, unigram and depth (one line if it is not one)."""
    from .compare import _read_compare_file, read_results

    saved = _read_compare_file(src, "--merge")
    res = read_results(src, "--merge")
    meta, unigram, layers = dict(res["meta"]), res["analysis"].get("unigram"), res["analysis"]["num_layers"]
    try:
        speed = {a: float(f["summary"]["time_per_sample_s"]) for a, f in res["analysis"]["arms"].items()}
    except (KeyError, TypeError, ValueError, AttributeError):
        speed = {}
    return {"path": src, "arms": saved["arms"], "seeds": saved["seeds"], "meta": meta, "unigram": unigram,
            "num_layers": layers, "speed": speed}


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
    """``--merge``: validate every group, then write the merged comparison (staged under --overwrite)."""
    from ..errors import UserError
    from .cli import flat_flags
    from .command_line import command_line
    from .compare import _saved_configs, print_summary, run_configs, run_name
    from .rundir import RunLock, check_out, staged

    out: Path = args.out
    given = [k for k, v in flat_flags(args).items() if v not in (None, False)]
    clash = [f for f, on in (("--resume", args.resume), ("--report-only", args.report_only),
                             ("--seeds", args.seeds is not None), ("--config", args.config),
                             ("--paper-lrs", args.paper_lrs), ("--theta-bar", args.theta_bar is not None),
                             ("--baseline-lr / --preln-lr / --pld-lr",
                              any(x is not None for x in (args.baseline_lr, args.preln_lr, args.pld_lr))),
                             ("training flags and overrides", given or args.overrides)) if on]
    if clash:
        raise UserError(f"--merge trains nothing and takes every setting from the comparisons it joins: "
                        f"leave out {', '.join(clash)}")
    if len(args.merge) < 2:
        raise UserError("--merge: give two or more finished comparisons to join")
    sources = [_source(Path(s)) for s in args.merge]
    arms = args.arms or sources[0]["arms"]
    if len(set(arms)) != len(arms):
        raise UserError(f"--arms {' '.join(arms)}: each arm at most once")
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
    base, origin = {}, {}
    for s in sources:
        configs = _saved_configs(s["path"], s["arms"], s["seeds"])
        for seed in s["seeds"]:
            for arm in arms:
                src_name = run_name(arm, seed, len(s["seeds"]))
                run = s["path"] / src_name
                if configs[src_name] is None or not (run / "metrics.jsonl").is_file():
                    raise UserError(f"--merge: {str(run)!r} has no config.yaml or metrics.jsonl")
                name = run_name(arm, seed, len(seeds))
                base[name], origin[name] = configs[src_name], (s, src_name)
    first = {arm: base[run_name(arm, seeds[0], len(seeds))] for arm in arms}
    for name, cfg in base.items():
        arm = cfg["model"]["arm"]
        diff = recipe_difference(first[arm], cfg)
        if diff is not None:
            raise UserError(f"--merge: {str(origin[name][0]['path'] / origin[name][1])!r} differs from "
                            f"{str(owner[seeds[0]])!r} in {diff[0]} ({diff[2]!r} vs {diff[1]!r}): not the same "
                            "recipe, so its seeds are not samples of one experiment")
    if any(c["budget"].get("max_minutes") for c in base.values()):
        ref = arms[0]
        ratio = speed_mismatch([s["speed"].get(ref) for s in sources])
        if ratio is not None:
            ms = " vs ".join(f"{1e3 * s['speed'][ref]:.2f}" for s in sources if s["speed"].get(ref))
            raise UserError(f"--merge: the groups' {ref} arms took {ms} ms per sample ({ratio:.2f}x apart): they ran "
                            "on machines of different speed (or under different load), so the same minutes are not "
                            "the same training; merge groups made on one kind of machine, or budget in steps")
    if len({s["num_layers"] for s in sources}) > 1:
        raise UserError("--merge: the groups' models have different depths")
    check_out(out, resume=False, overwrite=args.overwrite, inputs=[s["path"] for s in sources])

    cfgs = run_configs(args, arms, seeds, base)
    uni = [s["unigram"] for s in sources]
    unigram = None if None in uni else {k: sum(u[k] for u in uni) / len(uni) for k in ("loss", "accuracy")}
    summaries = {}
    for name, (s, src_name) in origin.items():
        got = (s["meta"].get("summaries") or {}).get(src_name)
        if got is not None:
            summaries[name] = got
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
                if stage is None and created:  # a new folder, made under this lock: a failed merge leaves nothing
                    shutil.rmtree(out, ignore_errors=True)
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


def _write_merged(work: Path, origin: dict, cfgs: dict, arms: list[str], seeds: list[int], unigram, meta: dict,
                  sources: list[dict]) -> dict[str, Any]:
    """compare.json, the runs' small files under their merged names, then the report."""
    from ..errors import UserError
    from .compare import _write_compare_file, write_report

    _write_compare_file(work, arms, seeds, False, merged_from=[str(s["path"]) for s in sources])
    for name, (s, src_name) in origin.items():
        (work / name).mkdir()
        for f in RUN_COPY:
            if (s["path"] / src_name / f).is_file():
                shutil.copy2(s["path"] / src_name / f, work / name / f)
    try:
        return write_report(work, cfgs, arms, seeds, unigram, meta, sources[0]["num_layers"])
    except ValueError as e:  # a metrics.jsonl line that is not JSON
        raise UserError(f"--merge: a run's metrics.jsonl is damaged ({e})") from None
