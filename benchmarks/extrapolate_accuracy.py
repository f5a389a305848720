"""What training budget would each arm need to reach a masked-token accuracy? (An extrapolation.)

Within one run the learning rate decays linearly to 0 at the budget, so a run's own curve
flattens by construction and cannot be extrapolated. Across runs it can, roughly: each
`pldrop compare` folder given is one budget with a complete schedule, and for each arm this script
fits its final validation accuracy against log(training time per arm) over the folders (least
squares over every seed of every folder), and solves the line for ``--target``. With two budgets
the line is drawn through two clouds of points; treat the answer as an order of magnitude.

    python benchmarks/extrapolate_accuracy.py benchmarks/results/compare-default-2026-12-03 \\
        benchmarks/results/evidence-2026-12-03 --target 0.25 --json extrapolation.json
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
from pathlib import Path


def fit_log_linear(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least squares ``y = a + b * ln(x)``; returns ``(a, b, r2)``.

    >>> a, b, r2 = fit_log_linear([1.0, math.e, math.e ** 2], [0.1, 0.2, 0.3])
    >>> round(a, 6), round(b, 6), round(r2, 6)
    (0.1, 0.1, 1.0)
    """
    lx = [math.log(x) for x in xs]
    mx, my = statistics.fmean(lx), statistics.fmean(ys)
    sxx = sum((u - mx) ** 2 for u in lx)
    b = sum((u - mx) * (v - my) for u, v in zip(lx, ys)) / sxx
    a = my - b * mx
    ss = sum((v - my) ** 2 for v in ys)
    res = sum((v - (a + b * u)) ** 2 for u, v in zip(lx, ys))
    return a, b, (1 - res / ss) if ss > 0 else 1.0


def time_to(a: float, b: float, target: float) -> float | None:
    """The x where ``a + b * ln(x)`` reaches ``target`` (None if the line never rises).

    >>> round(time_to(0.1, 0.1, 0.3), 6) == round(math.e ** 2, 6)
    True
    >>> time_to(0.1, -0.01, 0.3) is None
    True
    """
    return math.exp((target - a) / b) if b > 0 else None


def final_points(folder: Path) -> dict[str, list[tuple[float, float]]]:
    """``{arm: [(training seconds, final val accuracy), …]}`` over the run folders in ``folder``."""
    out: dict[str, list[tuple[float, float]]] = {}
    for run in sorted(d for d in folder.iterdir() if (d / "metrics.jsonl").is_file()):
        recs = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if ln.strip()]
        evals = [r for r in recs if r.get("val_accuracy") is not None]
        if evals:
            out.setdefault(re.sub(r"-s\d+$", "", run.name), []).append((recs[-1]["wall"], evals[-1]["val_accuracy"]))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", type=Path, nargs="+", help="`pldrop compare --out` folders, one budget each")
    p.add_argument("--target", type=float, default=0.25, help="masked-token accuracy to reach (default 0.25)")
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    points: dict[str, list[tuple[float, float]]] = {}
    for f in args.folders:
        for arm, pts in final_points(f).items():
            points.setdefault(arm, []).extend(pts)
    rows = {}
    print(f"| arm | runs | budgets (min) | final accuracy (mean per budget) | slope per ln(s) | R² | "
          f"est. training (min) to {args.target:g} |\n|---|---|---|---|---|---|---|")
    for arm, pts in points.items():
        budgets = sorted({round(t / 60) for t, _ in pts})
        if len(budgets) < 2:
            continue
        a, b, r2 = fit_log_linear([t for t, _ in pts], [y for _, y in pts])
        t = time_to(a, b, args.target)
        means = [statistics.fmean(y for s, y in pts if round(s / 60) == m) for m in budgets]
        rows[arm] = {"points": pts, "a": a, "b_per_ln_s": b, "r2": r2, "training_s_to_target": t}
        est = "never (accuracy does not rise with budget)" if t is None else f"{t / 60:.0f}"
        print(f"| {arm} | {len(pts)} | {', '.join(map(str, budgets))} | {', '.join(f'{m:.3f}' for m in means)} | "
              f"{b:.4f} | {r2:.2f} | {est} |")
    if args.json:
        args.json.write_text(json.dumps({"folders": [str(f) for f in args.folders], "target": args.target,
                                         "method": "least squares of final val_accuracy on ln(training s per arm), "
                                         "across folders (one budget each, complete lr schedules)",
                                         "arms": rows}, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
