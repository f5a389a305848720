"""The convergence protocol and its ablations: which runs, at which budget, and their figures.

Converge (``pldrop bench converge``), on one shared corpus and validation set:

1. a short Post-LN learning-rate sweep (one seed, ``sweep_fraction`` of the budget); the best
   stable rate is the one with the lowest final validation loss among the runs that neither
   diverged nor ended above their first validation loss;
2. four arms x ``seeds`` seeds at the same budget (minutes or steps), interleaved by seed:
   Post-LN at the paper's 1e-4, Post-LN at the best swept rate, Pre-LN without PLD at 1e-3 and
   Pre-LN + PLD at 1e-3 (θ̄ = 0.5, linear rule, progressive);
3. per seed, every arm's time, FLOPs and samples to each Post-LN arm's final validation loss,
   and the speed-up over that Post-LN run (paired by seed); time-per-sample savings.

Ablations (same protocol, ``ablation_fraction`` of the budget, ``ablation_seeds`` seeds): the PLD
reference against Post-LN + PLD, the uniform depth rule, a fixed rate (θ = θ̄ from step 0) and
other θ̄; a Post-LN run at the tuned rate and the same budget gives the target loss.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import stats
from .runs import RunSpec, Runner

PAPER_POSTLN_LR = 1e-4  # the paper's Post-LN BERT rate
PRELN_LR = 1e-3  # the paper's Pre-LN (+ PLD) rate


@dataclass
class Scale:
    """The knobs that size a convergence benchmark (see ``pldrop bench converge --help``).

    Args:
        minutes: training minutes per converge run (the budget unless ``max_steps`` is given).
        max_steps: optimizer steps per converge run instead of minutes.
        seeds: seeds per converge arm (0 .. seeds-1).
        sweep_lrs: Post-LN rates tried; ``sweep_fraction``: their share of the budget.
        ablation_fraction, ablation_seeds: budget share and seeds of the ablations.
        ablation_theta_bars: θ̄ values of the θ̄ ablation (the reference's θ̄ is the first).
        eval_every: the converge runs' validation cadence (the base config's); shorter runs
            are validated proportionally more often.
    """

    minutes: float | None = 2.0
    max_steps: int | None = None
    seeds: int = 3
    sweep_lrs: list[float] = field(default_factory=lambda: [2e-4, 5e-4, 1e-3])
    sweep_fraction: float = 0.25
    ablation_fraction: float = 0.5
    ablation_seeds: int = 1
    ablation_theta_bars: list[float] = field(default_factory=lambda: [0.5, 0.7, 0.9])
    eval_every: int = 20

    def __post_init__(self):
        from ..errors import UserError

        if self.max_steps is not None:
            self.minutes = None
            if self.max_steps < 1:
                raise UserError(f"--max-steps {self.max_steps}: must be >= 1")
        elif self.minutes is None or self.minutes <= 0:
            raise UserError(f"--minutes {self.minutes}: must be > 0")
        if self.seeds < 1 or self.ablation_seeds < 0:
            raise UserError("--seeds must be >= 1 and --ablation-seeds >= 0")
        for name in ("sweep_fraction", "ablation_fraction"):
            if not 0 < getattr(self, name) <= 1:
                raise UserError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be in (0, 1]")
        if not self.sweep_lrs or not all(0 < x < 1 for x in self.sweep_lrs):
            raise UserError(f"--sweep-lrs {self.sweep_lrs}: give rates in (0, 1)")
        if not self.ablation_theta_bars or not all(0 < x <= 1 for x in self.ablation_theta_bars):
            raise UserError(f"--ablation-theta-bars {self.ablation_theta_bars}: give θ̄ values in (0, 1]")

    def budget(self, fraction: float = 1.0) -> dict[str, Any]:
        """RunSpec budget keywords for ``fraction`` of a converge run's budget; a shorter run is
        validated proportionally more often, so each run has about as many validation points.

        >>> Scale(max_steps=100).budget(), Scale(minutes=2, eval_every=20).budget(0.5)
        ({'max_steps': 100}, {'max_minutes': 1.0, 'eval_every': 10})
        """
        b: dict[str, Any] = ({"max_steps": max(1, round(self.max_steps * fraction))} if self.max_steps is not None
                             else {"max_minutes": round(self.minutes * fraction, 6)})
        if fraction != 1.0:
            b["eval_every"] = max(1, round(self.eval_every * fraction))
        return b

    @property
    def unit(self) -> str:
        return "steps" if self.max_steps is not None else "minutes"


ARM_LABELS = {
    "postln-paper": "Post-LN @ paper lr",
    "postln-tuned": "Post-LN @ tuned lr",
    "preln": "Pre-LN (no PLD)",
    "pld": "Pre-LN + PLD",
    "postln-pld": "Post-LN + PLD",
    "pld-uniform": "PLD, uniform rule",
    "pld-fixed": "PLD, fixed rate",
}


def _num_layers(root: Path, path: str, default: int) -> int:
    cfg = root / path / "config.json"
    return json.loads(cfg.read_text())["num_hidden_layers"] if cfg.is_file() else default


def analyse(root: Path, arms: dict[str, Any], target_arms: list[str], saving_pairs: list[tuple[str, str]],
            num_layers: int, unigram: dict[str, float] | None = None) -> dict[str, Any]:
    """Figures of a group of arms from their runs' metrics.jsonl (the group's JSON, completed).

    Args:
        root: the folder run paths are relative to.
        arms: ``{name: {"runs": {seed: {"path", "status", ...}}, ...}}``; completed in place
            with each run's ``figures`` and each arm's ``aggregate``.
        target_arms: arms whose final losses are the targets of :func:`stats.target_figures`.
        saving_pairs: ``(arm, against)`` pairs for time-per-sample and FLOPs-per-sample savings.
        num_layers: blocks per model when a run folder has no config.json (a diverged run).
        unigram: the tokenizer's unigram loss and accuracy (``{"loss", "accuracy"}``) or None.

    Returns:
        ``{"targets", "savings", "comparison"}``: the comparison is
        :func:`pldrop.train.analysis.compare_arms` against ``target_arms[0]`` over the seeds every
        arm finished (speed-up curves, decomposition, plateau, verdict), or None.
    """
    from ..train.analysis import read_metrics

    records: dict[str, dict[str, list]] = {}
    figs: dict[str, dict[str, dict]] = {}
    for name, arm in arms.items():
        for seed, run in arm["runs"].items():
            run["figures"] = None
            if run["status"] != "done":
                continue
            recs = read_metrics(root / run["path"] / "metrics.jsonl")
            run["figures"] = stats.run_figures(recs, _num_layers(root, run["path"], num_layers))
            records.setdefault(name, {})[seed] = recs
            figs.setdefault(name, {})[seed] = run["figures"]
        arm["aggregate"] = stats.arm_aggregate(figs.get(name, {}))
        arm["diverged"] = sum(r["status"] == "diverged" for r in arm["runs"].values())
    targets = {t: stats.target_figures(records, t) for t in target_arms if t in records}
    sav = [stats.savings(figs, a, b) for a, b in saving_pairs] + \
          [stats.savings(figs, a, b, "flops_per_sample") for a, b in saving_pairs]
    return {"targets": targets, "savings": sav, "comparison": _comparison(records, target_arms[0], num_layers, unigram)}


def _comparison(records: dict[str, dict[str, list]], baseline: str, num_layers: int,
                unigram: dict[str, float] | None) -> dict[str, Any] | None:
    """compare_arms over the seeds that every arm finished (seeds are paired)."""
    from ..train.analysis import compare_arms

    if baseline not in records:
        return None
    seeds = [s for s in records[baseline] if all(s in per_seed for per_seed in records.values())]
    if not seeds:
        return None
    res = compare_arms({arm: [per_seed[s] for s in seeds] for arm, per_seed in records.items()}, num_layers,
                       baseline=baseline, unigram=unigram)
    res["seed_names"] = seeds
    return res


def unigram_of(runner: Runner) -> dict[str, float] | None:
    """The unigram plateau of the runner's tokenizer and validation set (None where not computable)."""
    try:
        from ..data.unigram import unigram_for_data
    except ImportError:  # not in this version
        return None
    return unigram_for_data(runner.data)


def _group(runner: Runner, specs: dict[str, dict[int, RunSpec]], order: list[tuple[str, int]]) -> dict[str, Any]:
    """Run ``specs`` in ``order``; ``{name: {"spec", "runs": {seed: run}}}`` (paths relative to the
    runner root's parent, i.e. the benchmark folder)."""
    results: dict[str, dict[str, Any]] = {name: {"runs": {}} for name in specs}
    done = runner.run_group([specs[name][seed] for name, seed in order])  # lockstep
    for (name, seed), res in zip(order, done):
        spec = specs[name][seed]
        res["path"] = f"{runner.root.name}/{spec.key}"
        results[name]["runs"][str(seed)] = res
    for name, per_seed in specs.items():
        first = next(iter(per_seed.values()))
        results[name].update(label=ARM_LABELS.get(name, name), spec={**asdict(first), "seed": None},
                             describe=first.describe().rsplit(", seed", 1)[0])
    return results


def interleave(names: list[str], seeds: list[int]) -> list[tuple[str, int]]:
    """Seed by seed, arms in an order rotated by one each seed (so no arm always runs first, when
    the machine may be busier or cooler).

    >>> interleave(["a", "b", "c"], [0, 1])
    [('a', 0), ('b', 0), ('c', 0), ('b', 1), ('c', 1), ('a', 1)]
    """
    out = []
    for i, seed in enumerate(seeds):
        k = i % len(names)
        out += [(n, seed) for n in names[k:] + names[:k]]
    return out


def run_sweep(runner: Runner, scale: Scale, num_layers: int) -> dict[str, Any]:
    """Post-LN learning-rate sweep; returns its JSON section with ``best_lr``."""
    from ..train.analysis import read_metrics

    runs = []
    specs = [RunSpec("baseline", lr, 0, **scale.budget(scale.sweep_fraction)) for lr in scale.sweep_lrs]
    for lr, spec, res in zip(scale.sweep_lrs, specs, runner.run_group(specs)):  # lockstep
        res.update(lr=lr, path=f"{runner.root.name}/{spec.key}", figures=None, stable=False)
        if res["status"] == "done":
            root = runner.root.parent
            res["figures"] = stats.run_figures(read_metrics(root / res["path"] / "metrics.jsonl"), num_layers)
        runs.append(res)
    return {"budget": scale.budget(scale.sweep_fraction), "runs": runs, **choose_lr(runs)}


def choose_lr(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The best stable rate: lowest final validation loss among runs that finished and did not
    end above their first validation loss; the paper's rate if none did.

    >>> f = lambda first, final: {"status": "done", "figures": {"first_val_loss": first, "final_val_loss": final}}
    >>> choose_lr([{"lr": 2e-4, **f(9, 7.5)}, {"lr": 5e-4, **f(9, 7.0)}, {"lr": 1e-3, **f(9, 9.5)}])["best_lr"]
    0.0005
    """
    for r in runs:
        f = r.get("figures")
        r["stable"] = bool(r["status"] == "done" and f and f["final_val_loss"] is not None
                           and f["first_val_loss"] is not None and f["final_val_loss"] <= f["first_val_loss"])
    stable = [r for r in runs if r["stable"]]
    if not stable:
        return {"best_lr": PAPER_POSTLN_LR, "fallback": True}
    best = min(stable, key=lambda r: r["figures"]["final_val_loss"])
    return {"best_lr": best["lr"], "fallback": False}


def run_converge(runner: Runner, scale: Scale, num_layers: int) -> dict[str, Any]:
    """The converge section of the benchmark JSON (see the module docstring)."""
    sweep = run_sweep(runner, scale, num_layers)
    seeds = list(range(scale.seeds))
    b = scale.budget()
    defs = {"postln-paper": ("baseline", PAPER_POSTLN_LR), "postln-tuned": ("baseline", sweep["best_lr"]),
            "preln": ("preln", PRELN_LR), "pld": ("pld", PRELN_LR)}
    specs = {name: {s: RunSpec(arm, lr, s, **b) for s in seeds} for name, (arm, lr) in defs.items()}
    arms = _group(runner, specs, interleave(list(defs), seeds))
    section = {"scale": asdict(scale), "budget": b, "unit": scale.unit, "seeds": seeds, "sweep": sweep,
               "arms": arms, "num_layers": num_layers}
    section["unigram"] = unigram_of(runner)
    section.update(analyse(runner.root.parent, arms, ["postln-tuned", "postln-paper"],
                           [("pld", "postln-tuned"), ("pld", "preln"), ("preln", "postln-tuned")], num_layers,
                           section["unigram"]))
    return section


def run_ablations(runner: Runner, scale: Scale, best_lr: float, num_layers: int) -> dict[str, Any]:
    """The ablations section: PLD reference vs Post-LN + PLD, uniform rule, fixed rate, other θ̄."""
    seeds = list(range(scale.ablation_seeds))
    b = scale.budget(scale.ablation_fraction)
    ref_tb = scale.ablation_theta_bars[0]
    defs: dict[str, dict[str, Any]] = {
        "pld": {"arm": "pld", "lr": PRELN_LR, "theta_bar": ref_tb},
        "postln-tuned": {"arm": "baseline", "lr": best_lr},
        "postln-pld": {"arm": "postln-pld", "lr": best_lr, "theta_bar": ref_tb},
        "pld-uniform": {"arm": "pld", "lr": PRELN_LR, "theta_bar": ref_tb, "rule": "uniform"},
        "pld-fixed": {"arm": "pld", "lr": PRELN_LR, "theta_bar": ref_tb, "fixed": True},
    }
    for tb in scale.ablation_theta_bars[1:]:
        defs[f"pld-tb{tb:g}"] = {"arm": "pld", "lr": PRELN_LR, "theta_bar": tb}
    specs = {name: {s: RunSpec(seed=s, **d, **b) for s in seeds} for name, d in defs.items()}
    arms = _group(runner, specs, interleave(list(defs), seeds))
    for name in arms:
        if name.startswith("pld-tb"):
            arms[name]["label"] = f"PLD, θ̄={specs[name][seeds[0]].theta_bar:g}"
    arms["pld"]["label"] = f"PLD reference (θ̄={ref_tb:g}, linear, progressive)"
    section = {"budget": b, "unit": scale.unit, "seeds": seeds, "reference": "pld", "arms": arms,
               "num_layers": num_layers}
    section["unigram"] = unigram_of(runner)
    section.update(analyse(runner.root.parent, arms, ["postln-tuned"],
                           [(n, "postln-tuned") for n in defs if n != "postln-tuned"], num_layers, section["unigram"]))
    ref = arms["pld"]["aggregate"]["final_val_loss"]["mean"]
    for arm in arms.values():  # final loss against the reference's (means over seeds)
        mine = arm["aggregate"]["final_val_loss"]["mean"]
        arm["delta_final_val_loss"] = None if mine is None or ref is None else mine - ref
    return section
