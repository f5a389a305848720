"""PNG figures of the benchmarks, drawn (matplotlib, Agg) from the JSON sections and the runs'
metrics.jsonl only -- the same inputs as the tables."""

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
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


def plot_loss_curves(root: Path, arms: dict[str, Any], path: Path, target: float | None = None,
                     title: str = "") -> str:
    """Validation MLM loss against training time and against FLOPs; one line per run."""
    from ..train.analysis import eval_points, read_metrics

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for i, (name, arm) in enumerate(arms.items()):
        c = COLORS[i % len(COLORS)]
        first = True
        for seed, run in arm["runs"].items():
            if run["status"] != "done":
                continue
            pts = eval_points(read_metrics(root / run["path"] / "metrics.jsonl"))
            kw = {"color": c, "lw": 1.2, "alpha": 0.8, "marker": "o", "ms": 2}
            if first:
                kw["label"] = arm["label"]
                first = False
            axes[0].plot([r["wall"] for r in pts], [r["val_loss"] for r in pts], **kw)
            axes[1].plot([r["flops"] for r in pts], [r["val_loss"] for r in pts], **kw)
    for ax, xl in zip(axes, ("training time (s)", "training FLOPs (counted)")):
        if target is not None:
            ax.axhline(target, color="k", lw=0.8, ls=":", label="target (Post-LN final loss, mean)")
        ax.set_xlabel(xl)
        ax.set_ylabel("validation MLM loss")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name
