"""PNG figures of the benchmarks and of `pldrop compare`, drawn (matplotlib, Agg) from the JSON
sections and the runs' metrics.jsonl only -- the same inputs as the tables. The one plotting
module: `pldrop compare`, `pldrop bench` and `pldrop report` all draw with these functions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray",
          "tab:olive", "tab:cyan"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _savefig(fig, path: Path) -> None:
    """Write a figure and record it in its run folder's manifest (the one place figures are written)."""
    from ..train.rundir import record

    fig.savefig(path, dpi=100)
    record(path)


def plot_step(section: dict[str, Any], path: Path) -> str:
    """Time per sample against θ (measured and predicted) and realised against predicted saving."""
    plt = _plt()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    lim = 0.0
    for i, (preset, res) in enumerate(section["presets"].items()):
        c = COLORS[i % len(COLORS)]
        b = res["settings"]["batch_size"]
        rows = res["rows"]
        th = [r["theta"] for r in rows]
        ax.plot(th, [1e3 * r["median_s"] / b for r in rows], "o-", color=c, label=f"{preset}: PLD, measured")
        pred = [1e3 * res["median_s"]["untouched"] / b * (1 - r["predicted_saving"]) for r in rows]
        ax.plot(th, pred, "--", color=c, alpha=0.7, label=f"{preset}: predicted from blocks run")
        ax.axhline(1e3 * res["time_per_sample_s"]["untouched"], color=c, lw=0.8, ls=":",
                   label=f"{preset}: untouched model")
        ax2.plot([100 * r["predicted_saving"] for r in rows], [100 * r["realised_saving"] for r in rows], "o",
                 color=c, label=preset)
        for r in rows:
            ax2.annotate(f"θ={r['theta']:g}", (100 * r["predicted_saving"], 100 * r["realised_saving"]), fontsize=7)
        lim = max([lim] + [100 * abs(r[k]) for r in rows for k in ("predicted_saving", "realised_saving")])
    ax.set_xlabel("θ (held fixed)")
    ax.set_ylabel("time per sample (ms)")
    ax.invert_xaxis()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax2.plot([-lim, lim], [-lim, lim], color="k", lw=0.8, label="realised = predicted")
    ax2.set_xlabel("predicted saving (%)")
    ax2.set_ylabel("realised saving (%)")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    _savefig(fig, path)
    plt.close(fig)
    return path.name


def plot_val_loss(runs: dict[str, list[list[dict[str, Any]]]], path: Path,
                  keys: tuple[str, ...] = ("wall", "samples", "flops"), hlines: dict[str, float] | None = None,
                  title: str = "", metric: str = "val_loss") -> str:
    """Validation MLM loss (or another validation ``metric``, e.g. ``val_accuracy``) against training
    time, samples and counted FLOPs; one colour per arm, one line per seed.

    Args:
        runs: ``{label: [records of each seed]}`` (``metrics.jsonl`` records).
        path: the PNG to write.
        keys: the x axes (record keys).
        hlines: ``{label: value}`` drawn as dotted horizontal lines (a target, the unigram loss).
        metric: the record key on the y axis.
    """
    plt = _plt()
    fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 4.2), squeeze=False)
    for i, (label, per_seed) in enumerate(runs.items()):
        c = COLORS[i % len(COLORS)]
        for j, recs in enumerate(per_seed):
            pts = [r for r in recs if r.get(metric) is not None]
            kw = {"color": c, "lw": 1.2, "alpha": 0.8, "marker": "o", "ms": 2, "label": label if j == 0 else None}
            for ax, key in zip(axes[0], keys):
                ax.plot([r.get(key) for r in pts], [r[metric] for r in pts], **kw)
    for ax, key in zip(axes[0], keys):
        for k, (label, y) in enumerate((hlines or {}).items()):
            if y is not None:
                ax.axhline(y, color="k", lw=0.8, ls=[":", "--", "-."][k % 3], label=label)
        ax.set_xlabel(AXIS[key])
        ax.set_ylabel(YLABEL.get(metric, metric))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    return _save(fig, plt, path, title)


YLABEL = {"val_loss": "validation MLM loss", "val_accuracy": "validation masked-token accuracy"}
COUNTED = {"wall": "training time", "samples": "samples", "flops": "FLOPs"}
AXIS = {"wall": "training time (s)", "samples": "samples (sequences)", "flops": "training FLOPs (counted)"}


def _save(fig, plt, path: Path, title: str = "") -> str:
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _savefig(fig, path)
    plt.close(fig)
    return path.name


def plot_loss_curves(root: Path, arms: dict[str, Any], path: Path, target: float | None = None,
                     title: str = "") -> str:
    """:func:`plot_val_loss` of a benchmark group (``{name: {"label", "runs": {seed: {"path", "status"}}}}``,
    run paths relative to ``root``); diverged runs left out."""
    from ..train.analysis import read_metrics

    runs = {arm["label"]: [read_metrics(root / run["path"] / "metrics.jsonl") for run in arm["runs"].values()
                           if run["status"] == "done"] for arm in arms.values()}
    return plot_val_loss(runs, path, hlines={"target (Post-LN final loss, mean)": target}, title=title)


def plot_speedup(curves: dict[str, list[dict[str, Any]]], path: Path, keys: tuple[str, ...] = ("wall", "flops", "samples"),
                 paper: float | None = 2.5, title: str = "") -> str:
    """Speed-up over the baseline against the target loss (lower targets come later in training, to
    the right), one panel per way of counting; mean over seeds with its interval where there are seeds.

    Args:
        curves: ``{label: rows of pldrop.train.analysis.curve_over_seeds}``.
    """
    plt = _plt()
    fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 4.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for i, (label, curve) in enumerate(curves.items()):
            c = COLORS[(i + 1) % len(COLORS)]  # colour 0 is the baseline's in plot_val_loss
            pts = [r for r in curve if r["speedup"][key]["mean"] is not None]
            if not pts:
                continue
            x = [r["target"] for r in pts]
            bound = [bool(r.get("lower_bound") or r.get("upper_bound")) for r in pts]
            # hollow and dotted: only a bound (a run was past the target at its first evaluation)
            ax.plot(x, [r["speedup"][key]["mean"] for r in pts], ":", color=c, lw=1)
            for hollow in (False, True):
                sel = [(xx, r["speedup"][key]["mean"]) for xx, r, b in zip(x, pts, bound) if b == hollow]
                if sel:
                    ax.plot(*zip(*sel), "o" + ("" if hollow else "-"), ms=5, color=c, mfc="none" if hollow else c,
                            label=None if hollow else label)
            if any(r["speedup"][key]["n"] > 1 for r in pts):
                ax.fill_between(x, [r["speedup"][key]["lo"] for r in pts], [r["speedup"][key]["hi"] for r in pts],
                                color=c, alpha=0.2, lw=0)
        ax.axhline(1.0, color="k", lw=0.8, label="baseline (1×)")
        if any(r.get("lower_bound") or r.get("upper_bound") for c in curves.values() for r in c):
            ax.plot([], [], "o", color="gray", mfc="none", label="hollow: at least (arm past the target at its first eval)")
        if paper:
            ax.axhline(paper, color="k", lw=0.8, ls=":", label=f"paper ({paper:g}×)")
        ax.invert_xaxis()
        ax.set_xlabel("target validation loss (lower = later in training)")
        ax.set_ylabel(f"speed-up over the baseline, in {COUNTED[key]}")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    return _save(fig, plt, path, title)


def plot_theta_blocks(runs: dict[str, list[dict[str, Any]]], path: Path, num_layers: int | None = None) -> str:
    """θ(t) and blocks run per step against samples, one colour per PLD arm (``{label: records}``)."""
    plt = _plt()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    for i, (label, recs) in enumerate(runs.items()):
        c = COLORS[(i + 2) % len(COLORS)]
        x = [r["samples"] for r in recs]
        ax.plot(x, [r["theta"] for r in recs], color=c, label=label)
        ax2.plot(x, [r["blocks_run"] for r in recs], color=c, alpha=0.5, lw=0.8, label=f"{label}: blocks run")
        if recs and "expected_kept" in recs[0]:
            ax2.plot(x, [r["expected_kept"] for r in recs], color=c, lw=1.2, ls="--", label=f"{label}: expected")
    if num_layers:
        ax2.axhline(num_layers, color="k", lw=0.8, ls=":", label=f"all {num_layers} blocks")
    ax.set_ylabel("θ (keep probability of the last block)")
    ax2.set_ylabel("blocks run per step")
    for a in (ax, ax2):
        a.set_xlabel("samples (sequences)")
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    return _save(fig, plt, path)


def plot_section_speedup(section: dict[str, Any], path: Path, title: str = "") -> list[str]:
    """:func:`plot_speedup` of a benchmark section's comparison (``section["comparison"]``, labels from
    ``section["arms"]``); ``[]`` when there is no curve to draw."""
    an = section.get("comparison")
    if not an or not an["targets"]:
        return []
    curves = {section["arms"][a]["label"]: c for a, c in an["curves"].items()}
    return [plot_speedup(curves, path, title=title)]


def plot_depth(section: dict[str, Any], path: Path) -> str:
    """Validation accuracy against blocks kept, one line per model (the ``depth`` block of
    :func:`pldrop.train.depth.depth_section`)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (name, curve) in enumerate(section["models"].items()):
        pts = sorted(curve["points"], key=lambda p: p["keep"])
        ax.plot([p["keep"] for p in pts], [p["val_accuracy"] for p in pts], "o-", color=COLORS[i % len(COLORS)],
                label=name)
    ax.set_xlabel("blocks kept")
    ax.set_ylabel("validation accuracy (masked / next token)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, plt, path, f"accuracy at reduced depth (strategy {section['strategy']}, no fine-tuning)")
