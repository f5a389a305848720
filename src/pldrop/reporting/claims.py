"""The paper's claims set against the measured numbers: values and verdicts, no prose.

Zhang & He (NeurIPS 2020, https://arxiv.org/abs/2010.13369) claim, for BERT-base:

1. 24 % less time per sample at θ̄ = 0.5;
2. 2.5x faster than the Post-LN baseline to the same accuracy (validation loss here);
3. comparable GLUE scores at equal samples.

:func:`build_claims` reads a report's JSON sections and returns, per claim, the measured value,
its spread, the figures that explain it and a verdict by the rules in :data:`RULES`;
:mod:`pldrop.reporting.render` turns them into sentences. Nothing here is hard-coded but the
paper's figures and the rules.
"""

from __future__ import annotations

import math
from typing import Any

from . import stats
from .step import theta_row

PAPER = {"time_per_sample_saving": 0.24, "theta_bar": 0.5, "speedup": 2.5,
         "reference": "Zhang & He, Accelerating Training of Transformer-Based Language Models with Progressive Layer "
                      "Dropping, NeurIPS 2020", "url": "https://arxiv.org/abs/2010.13369"}
RULES = {
    "rel_tol": 0.2,  # a measured figure agrees when within ±20 % (relative) of the paper's, spread included
    "parity_points": 0.01,  # downstream parity: |difference| within 1 point ...
    "parity_se": 2.0,  # ... or within 2 standard errors of the paired difference
}


def verdict(measured: float | None, std: float | None, claimed: float, tol: float = RULES["rel_tol"]) -> str:
    """``agrees`` when ``measured ± std`` overlaps ``claimed ± tol·claimed``; else smaller/larger.

    >>> verdict(0.22, None, 0.24), verdict(0.10, 0.02, 0.24), verdict(3.5, 0.1, 2.5), verdict(None, None, 2.5)
    ('agrees', 'smaller', 'larger', 'not measured')
    """
    if measured is None:
        return "not measured"
    lo, hi = claimed * (1 - tol), claimed * (1 + tol)
    s = std or 0.0
    if measured + s >= lo and measured - s <= hi:
        return "agrees"
    return "smaller" if measured < lo else "larger"


def parity(diff: float | None, std: float | None, n: int) -> dict[str, Any]:
    """Downstream parity of a paired difference (PLD minus baseline, fractions).

    >>> parity(0.004, None, 1)["verdict"], parity(-0.05, 0.01, 3)["verdict"], parity(0.03, 0.04, 3)["verdict"]
    ('parity', 'PLD worse', 'parity')
    """
    if diff is None:
        return {"verdict": "not measured", "threshold": None, "se": None}
    se = std / math.sqrt(n) if std is not None and n > 1 else None
    threshold = max(RULES["parity_points"], RULES["parity_se"] * se if se is not None else 0.0)
    v = "parity" if abs(diff) <= threshold else ("PLD better" if diff > 0 else "PLD worse")
    return {"verdict": v, "threshold": threshold, "se": se}


def _agg(arm: dict[str, Any], key: str) -> dict[str, Any]:
    return arm["aggregate"][key]


def time_per_sample_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    tb = PAPER["theta_bar"]
    for preset, res in (report.get("bench_step") or {}).get("presets", {}).items():
        r = theta_row(res, tb)
        if r is None:
            continue
        L = res["settings"]["layers"]
        rows.append({"kind": "bench", "preset": preset, "layers": L, "theta": tb, "measured": r["realised_saving"],
                     "std": None, "predicted": r["predicted_saving"], "expected_kept": r["expected_kept"],
                     "bound": 1 - r["expected_kept"] / L, "fixed_fraction": res["fixed_fraction"],
                     "block_fraction": 1 - res["fixed_fraction"],
                     "efficiency": r["efficiency"], "schedule": res["schedule"]["saving"],
                     "verdict": verdict(r["realised_saving"], None, PAPER["time_per_sample_saving"])})
    conv = report.get("converge")
    if conv:
        sav = {(s["arm"], s["against"], s["key"]): s for s in conv["savings"]}
        main = sav.get(("pld", "postln-tuned", "time_per_sample_s"))
        pld = conv["arms"]["pld"]
        blocks = _agg(pld, "mean_blocks_run")["mean"]
        L = conv["num_layers"]
        rows.append({
            "kind": "converge", "layers": L, "theta_bar": pld["spec"]["theta_bar"],
            "measured": main["mean"], "std": main["std"], "n": main["n"],
            "blocks": blocks, "bound": None if blocks is None else 1 - blocks / L,
            "vs_preln": sav[("pld", "preln", "time_per_sample_s")]["mean"],
            "preln_vs_postln": sav[("preln", "postln-tuned", "time_per_sample_s")]["mean"],
            "flops_saving": sav[("pld", "postln-tuned", "flops_per_sample")]["mean"],
            "verdict": verdict(main["mean"], main["std"], PAPER["time_per_sample_saving"]),
        })
    return rows


def speedup_rows(conv: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    comp = conv.get("comparison")
    on_plateau = bool(comp) and not comp["plateau"]["left"]
    for target, tf in conv["targets"].items():
        pld, preln = tf["arms"]["pld"], tf["arms"].get("preln")
        # PLD's own share: Pre-LN's time to the target over PLD's, paired by seed
        own = stats.by_seed(lambda a, b: stats.ratio(a["time_s"], b["time_s"]), preln["to_target"],
                            pld["to_target"]) if preln else {}
        t_loss = tf["target"]
        rows.append({
            "target": target, "target_lr": conv["arms"][target]["spec"]["lr"], "target_loss": t_loss["mean"],
            "pld_lr": conv["arms"]["pld"]["spec"]["lr"],
            "measured": pld["speedup_time_agg"]["mean"], "std": pld["speedup_time_agg"]["std"],
            "reached": pld["reached"], "seeds": pld["seeds"],
            "flops": pld["speedup_flops_agg"]["mean"], "samples": pld["speedup_samples_agg"]["mean"],
            "preln": preln["speedup_time_agg"]["mean"] if preln else None,
            "preln_reached": preln["reached"] if preln else None,
            "pld_over_preln": stats.mean_std(own.values())["mean"],
            "pld_final_loss": _agg(conv["arms"]["pld"], "final_val_loss")["mean"],
            "verdict": verdict(pld["speedup_time_agg"]["mean"], pld["speedup_time_agg"]["std"], PAPER["speedup"])
            if pld["reached"] else "not reached",
        })
        if on_plateau:  # a speed-up before the baseline learned more than token frequencies says nothing
            rows[-1]["verdict"] = "no claim"
        rows[-1]["on_plateau"] = on_plateau
    return rows


def downstream_rows(ds: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    base = ds["models"]["baseline"]["figures"]
    tasks = list(ds["scores"]["baseline"]["tasks"])
    # tasks on which every checkpoint scored the same (e.g. all predict one class): they compare nothing
    means = {t: {round(s["tasks"][t]["mean"], 9) for s in ds["scores"].values() if s["tasks"][t]["mean"] is not None}
             for t in tasks}
    flat = {t: ds["scores"]["baseline"]["tasks"][t]["mean"] for t in tasks if len(means[t]) == 1}
    for role in ("equal-samples", "equal-time"):
        d = ds["diffs"].get(role)
        if d is None:
            continue
        avg = d["average"]
        m = ds["models"][role]["figures"]
        rows.append({
            "comparison": role, "measured": avg["mean"], "std": avg["std"], "n": avg["n"],
            **parity(avg["mean"], avg["std"], avg["n"]),
            "per_task": {t: v["mean"] for t, v in d.items() if t != "average"}, "flat_tasks": flat,
            # does the downstream difference go the way the pretraining losses do?
            "follows_loss": None if avg["mean"] is None or avg["mean"] == 0 else
            (avg["mean"] > 0) == (m["final_val_loss"] < base["final_val_loss"]),
            "val_loss": {"pld": m["final_val_loss"], "baseline": base["final_val_loss"]},
            "samples_ratio": stats.ratio(m["samples"], base["samples"]),
            "time_ratio": stats.ratio(m["train_time_s"], base["train_time_s"]),
        })
    return rows


def build_claims(report: dict[str, Any]) -> dict[str, Any]:
    """The claims section of ``report.json`` from its other sections."""
    out: dict[str, Any] = {"paper": PAPER, "rules": RULES, "time_per_sample": time_per_sample_rows(report)}
    if report.get("converge"):
        out["speedup"] = speedup_rows(report["converge"])
    if report.get("downstream"):
        out["downstream"] = downstream_rows(report["downstream"])
    return out
