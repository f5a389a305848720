"""Markdown from a report's JSON: a pure function of it, so every figure can be recomputed.

``render_report(report)`` is all `pldrop report` writes into ``report.md``; the section
renderers serve `pldrop bench step` and `pldrop bench converge` too. Sentences about the
paper's claims are assembled from :mod:`pldrop.reporting.claims`' values and verdicts.
"""

from __future__ import annotations

from typing import Any

from ..arms import DROPPING_MODELS
from .fmt import num, pct, pm, sci, times
from .fmt import table as _table

VERDICT = {"agrees": "Agrees", "smaller": "Smaller than the paper", "larger": "Larger than the paper",
           "not measured": "Not measured", "not reached": "Not reached", "parity": "Parity",
           "PLD better": "PLD better", "PLD worse": "PLD worse", "no claim": "No claim"}


# --- bench step -----------------------------------------------------------------------------

def render_step(section: dict[str, Any], plot: str | None = None) -> list[str]:
    lines: list[str] = []
    for preset, res in section["presets"].items():
        s, tps = res["settings"], res["time_per_sample_s"]
        L = s["layers"]
        lines += [f"### {preset} ({L} blocks), batch {s['batch_size']}, seq {s['seq_len']}, "
                  f"{s['repeats']} interleaved steps per arm (medians)", "",
                  f"Untouched model: {num(tps['untouched'], 2, 1e3)} ms per sample; fixed cost (every block "
                  f"skipped): {num(tps['fixed'], 2, 1e3)} ms per sample = {pct(res['fixed_fraction'])} of a step.", ""]
        rows = [[f"{r['theta']:g}", num(r["median_s"] / s["batch_size"], 2, 1e3), f"{num(r['mean_kept'], 2)} / {L}",
                 num(r["expected_kept"], 2), pct(r["realised_saving"]), pct(r["predicted_saving"]),
                 pct(r["efficiency"], 0)] for r in res["rows"]]
        lines += _table(["θ", "time per sample (ms)", "blocks run", "expected blocks", "saving realised",
                         "saving predicted", "realised / predicted"], rows)
        sch = res["schedule"]
        lines += ["", f"Whole schedule (θ from 1 to θ̄ = {sch['theta_bar']:g}, γ = {sch['gamma_times_T']:g}/T, "
                      f"T = {sch['total_steps']}): "
                      f"predicted saving {pct(sch['saving'])} per sample.", ""]
    if plot:
        lines += [f"![time per sample against θ]({plot})", ""]
    return lines


# --- converge and ablations -----------------------------------------------------------------

def _budget(b: dict[str, Any]) -> str:
    return f"{b['max_steps']} steps" if "max_steps" in b else f"{num(b['max_minutes'], 2)} minutes"


def _arm_rows(arms: dict[str, Any], num_layers: int) -> list[list[str]]:
    rows = []
    for name, arm in arms.items():
        a, sp = arm["aggregate"], arm["spec"]
        pld = (f"{sp['theta_bar']:g} {sp['rule']}{' fixed' if sp['fixed'] else ''}"
               if sp["arm"] in DROPPING_MODELS else "–")
        rows.append([arm["label"], f"{sp['lr']:g}", pld, f"{a['final_val_loss']['n']} / {len(arm['runs'])}",
                     pm(a["steps"], 0), pm(a["train_time_s"], 2), pm(a["time_per_sample_s"], 2, 1e3),
                     f"{num(a['mean_blocks_run']['mean'], 2)} / {num_layers}", sci(a["flops"]["mean"]),
                     pm(a["final_val_loss"], 4)])
    return rows


ARM_HEADER = ["arm", "lr", "θ̄ / rule", "seeds done", "steps", "training time (s)", "time per sample (ms)",
              "blocks run per step", "FLOPs (mean)", "final val loss"]


def _target_rows(tf: dict[str, Any], arms: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, f in tf["arms"].items():
        rows.append([arms[name]["label"], f"{f['reached']} / {f['seeds']}", pm(f["time_s"], 2),
                     pm(f["speedup_time_agg"], 2), sci(f["flops"]["mean"]), pm(f["speedup_flops_agg"], 2),
                     pm(f["speedup_samples_agg"], 2)])
    return rows


TARGET_HEADER = ["arm", "seeds reaching it", "time to it (s)", "speed-up (time)", "FLOPs to it (mean)",
                 "speed-up (FLOPs)", "speed-up (samples)"]


def render_converge(sec: dict[str, Any], plots: list[str]) -> list[str]:
    L = sec["num_layers"]
    sw = sec["sweep"]
    lines = [f"Budget per run: {_budget(sec['budget'])}; seeds {', '.join(map(str, sec['seeds']))}. "
             "One corpus split and validation set (fixed masks) for every run; seeds change initialisation, "
             "data order, dropout and PLD gates. Training time excludes evaluation.", "",
             f"**Post-LN learning-rate sweep** (seed 0, {_budget(sw['budget'])} each): best stable rate "
             f"{sw['best_lr']:g}" + (" (no rate was stable: the paper's rate is used)." if sw["fallback"] else "."), ""]
    rows = [[f"{r['lr']:g}", r["status"], num((r["figures"] or {}).get("first_val_loss"), 4),
             num((r["figures"] or {}).get("final_val_loss"), 4), "yes" if r["stable"] else "no"] for r in sw["runs"]]
    lines += _table(["lr", "status", "first val loss", "final val loss", "stable"], rows)
    lines += ["", "**Arms** (mean ± sample std over seeds):", ""]
    lines += _table(ARM_HEADER, _arm_rows(sec["arms"], L))
    for target, tf in sec["targets"].items():
        lines += ["", f"**Time, FLOPs and samples to the final validation loss of {sec['arms'][target]['label']} "
                      f"(lr {sec['arms'][target]['spec']['lr']:g})**, per seed against that seed's run "
                      f"(target {pm(tf['target'], 4)}); speed-ups are that run's figure over the arm's:", ""]
        lines += _table(TARGET_HEADER, _target_rows(tf, sec["arms"]))
    lines += ["", "**Savings per sample** (paired by seed):", ""]
    rows = [[sec["arms"][s["arm"]]["label"], sec["arms"][s["against"]]["label"],
             "time" if s["key"] == "time_per_sample_s" else "FLOPs", pm(s, 1, 100) + " %" if s["mean"] is not None
             else "–"] for s in sec["savings"]]
    lines += _table(["arm", "against", "per sample", "saving (%)"], rows)
    lines += _comparison(sec, curve_arms=["pld", "preln"])
    lines += [""] + [f"![{p}]({p})" for p in plots] + [""]
    return lines


def _comparison(sec: dict[str, Any], curve_arms: list[str], verdict: bool = True) -> list[str]:
    """The speed-up curves, decomposition and plateau check of a group (the renderer `pldrop compare` uses)."""
    from .compare_report import comparison_sections

    an = sec.get("comparison")
    if not an:
        return []
    labels = {name: arm["label"] for name, arm in sec["arms"].items()}
    return [""] + comparison_sections(an, labels, arms_table=False, curve_arms=curve_arms, verdict=verdict)


def render_ablations(sec: dict[str, Any], plots: list[str]) -> list[str]:
    lines = [f"Budget per run: {_budget(sec['budget'])}; seeds {', '.join(map(str, sec['seeds']))}. "
             "Δ loss is against the PLD reference. The uniform rule keeps every block with probability θ, so at the "
             "same θ̄ it runs fewer blocks than the linear rule.", ""]
    rows = [r + [num(a["delta_final_val_loss"], 4)]
            for r, a in zip(_arm_rows(sec["arms"], sec["num_layers"]), sec["arms"].values())]
    lines += _table(ARM_HEADER + ["Δ loss"], rows)
    for target, tf in sec["targets"].items():
        lines += ["", f"**To the final loss of {sec['arms'][target]['label']} at this budget** "
                      f"(target {pm(tf['target'], 4)}):", ""]
        lines += _table(TARGET_HEADER, _target_rows(tf, sec["arms"]))
    lines += _comparison(sec, curve_arms=[], verdict=False)
    lines += [""] + [f"![{p}]({p})" for p in plots] + [""]
    return lines


# --- downstream -----------------------------------------------------------------------------

def render_downstream(sec: dict[str, Any]) -> list[str]:
    tasks = sec["settings"]["tasks"]
    s = sec["settings"]
    lr = sec.get("lr") or {}
    if s["lr"] is not None:
        lr_text = f"lr {s['lr']:g}"
    else:  # the default: each checkpoint and task at the width's grid, the best dev run kept
        grid = ", ".join(f"{x:g}" for x in lr["grid"]) if lr.get("grid") else "the width's grid"
        kept = "; ".join(f"{sec['models'][role]['label']}: " + ", ".join(f"{t} {v:g}" for t, v in per.items())
                         for role, per in (lr.get("kept") or {}).items())
        lr_text = f"lr: the best on dev of {grid}" + (f" (kept: {kept})" if kept else "")
    length = f"{s['max_steps']} steps" if s.get("max_steps") is not None else f"epochs: {s['epochs']}"
    lines = [f"Fine-tuned with `pldrop evaluate` ({length}, {lr_text}, batch {s['batch_size']}, "
             f"max length {s['max_length']}, seeds {', '.join(map(str, s['seeds']))}); scores ×100 on the "
             f"{sec['split']} split (mean ± std over fine-tuning seeds).", ""]
    rows = []
    for role, m in sec["models"].items():
        f, sc = m["figures"], sec["scores"][role]
        rows.append([m["label"], str(f["samples"]), num(f["train_time_s"], 2), num(f["final_val_loss"], 4)]
                    + [pm(sc["tasks"][t], 1, 100) for t in tasks] + [pm(sc["average"], 1, 100)])
    lines += _table(["checkpoint", "samples", "training time (s)", "val loss"] + tasks + ["average"], rows)
    lines += ["", "PLD minus Post-LN (points, paired by fine-tuning seed):", ""]
    rows = [[sec["models"][role]["label"]] + [pm(d[t], 1, 100) for t in tasks] + [pm(d["average"], 1, 100)]
            for role, d in sec["diffs"].items()]
    lines += _table(["comparison"] + tasks + ["average"], rows)
    return lines + [""]


# --- claims ---------------------------------------------------------------------------------

def _claim_time(row: dict[str, Any], paper: dict[str, Any], rules: dict[str, Any]) -> str:
    v = VERDICT[row["verdict"]]
    lo = paper["time_per_sample_saving"] * (1 - rules["rel_tol"])
    if row["kind"] == "bench":
        text = (f"**{v}** — `bench step`, {row['preset']} ({row['layers']} blocks), θ held at {row['theta']:g}: "
                f"time per sample saving {pct(row['measured'])} (paper: {pct(paper['time_per_sample_saving'])}). "
                f"The linear rule keeps {num(row['expected_kept'], 2)} of {row['layers']} blocks, a bound of "
                f"{pct(row['bound'])} if blocks were the whole step; the fixed cost (embeddings, masked-LM head, "
                f"loss, optimizer) is {pct(row['fixed_fraction'])} of a step, which brings the prediction to "
                f"{pct(row['predicted'])}; realised / predicted = {pct(row['efficiency'], 0)}. Over a whole "
                f"schedule the predicted saving is {pct(row['schedule'])}.")
        why = []
        if row["bound"] < lo:
            why.append(f"with {row['layers']} blocks the linear rule cannot skip enough to reach it")
        elif row["predicted"] is not None and row["predicted"] < lo:
            why.append("the fixed cost is what keeps it below the paper's figure: at this size blocks are only "
                       f"{pct(row['block_fraction'])} of a step")
        if row["efficiency"] is not None and row["efficiency"] < 0.85:
            why.append("skipped blocks save less than their share of the step (per-block overheads, and noise from "
                       "other processes on a shared machine)")
        elif row["efficiency"] is not None and row["efficiency"] > 1.15:
            why.append("skipping saved more than the blocks' share (timing noise, or memory traffic that scales "
                       "with the blocks run)")
        return text + (" Why: " + "; ".join(why) + "." if why else "")
    faster = "less" if (row["preln_vs_postln"] or 0) >= 0 else "more"
    text = (f"**{v}** — training runs ({row['layers']} blocks, θ̄ = {row['theta_bar']:g}): time per sample "
            f"saving of PLD against Post-LN at the tuned rate over whole runs "
            f"{pm({'mean': row['measured'], 'std': row['std']}, 1, 100)} % (seeds: {row['n']}). "
            f"It ran {num(row['blocks'], 2)} of {row['layers']} "
            f"blocks per step on average, a bound of {pct(row['bound'])}; counted FLOPs per sample fell by "
            f"{pct(row['flops_saving'])}. Against Pre-LN without PLD (the same architecture) the saving is "
            f"{pct(row['vs_preln'])}; Pre-LN alone takes {pct(abs(row['preln_vs_postln'] or 0))} {faster} time per "
            f"sample than Post-LN.")
    if row["measured"] is not None and row["bound"] is not None and row["measured"] > row["bound"] + 0.02:
        spread = f" (± {pct(row['std'])} over seeds)" if row["std"] is not None else ""
        text += (f" Why: more than the skipped blocks can explain ({pct(row['bound'])}): per-run wall-clock is "
                 f"noisy{spread}, e.g. when the machine's load changes between runs; the FLOPs saving is the "
                 "machine-independent figure.")
    elif (row["measured"] is not None and row["flops_saving"] is not None
          and row["measured"] < row["flops_saving"] - 0.05):
        text += (" Why: wall-clock saves less than the FLOPs do — the step's fixed cost and per-block overheads do "
                 "not shrink with the blocks skipped, and a shared machine adds noise.")
    return text


def _claim_speedup(row: dict[str, Any], paper: dict[str, Any], arms: dict[str, Any]) -> str:
    label = arms[row["target"]]["label"]
    text = (f"**{VERDICT[row['verdict']]}** — to the final validation loss of {label} (lr {row['target_lr']:g}; "
            f"{num(row['target_loss'], 4)}, mean over seeds): ")
    if row.get("on_plateau"):
        text += ("the Post-LN baseline did not leave the unigram plateau (section 2), so the figures below say "
                 "nothing about PLD. ")
    if not row["reached"]:
        text += (f"PLD did not reach it in any of {row['seeds']} seeds within the same budget (its final loss: "
                 f"{num(row['pld_final_loss'], 4)}; paper: {row_paper(paper)}).")
    else:
        text += (f"PLD is {times(row['measured'])} faster" + (f" ± {num(row['std'], 2)}" if row["std"] is not None
                                                              else "")
                 + f" (paper: {row_paper(paper)}), reached in {row['reached']}/{row['seeds']} seeds. In FLOPs the "
                 f"speed-up is {times(row['flops'])}, in samples {times(row['samples'])}; the rest is PLD's cheaper "
                 f"samples.")
    if row["preln"] is not None or row["preln_reached"]:
        text += (f" Pre-LN without PLD is {times(row['preln'])} faster ({row['preln_reached']}/{row['seeds']} "
                 f"seeds), so PLD's own factor over Pre-LN is {times(row['pld_over_preln'])}.")
    why = []
    if row["samples"] is not None:
        higher = " at its higher rate" if row["pld_lr"] > row["target_lr"] else ""
        why.append(f"PLD needs fewer samples than Post-LN to get there: the Pre-LN architecture{higher} learns more "
                   "per sample" if row["samples"] > 1 else
                   "PLD needs more samples than Post-LN; its gain is only the cheaper samples")
    if row["pld_over_preln"] is not None and row["pld_over_preln"] < 1:
        why.append("PLD is slower to this loss than Pre-LN alone: at this budget the blocks it skips cost more "
                   "learning than the time they save")
    elif row["pld_over_preln"] is not None:
        why.append("PLD adds to Pre-LN's gain")
    if 0 < row["reached"] < row["seeds"]:
        why.append("the other seeds did not reach the target within the budget, so the mean over the seeds that did "
                   "flatters PLD")
    if not row["reached"] and row["preln_reached"] == 0:
        why.append("neither Pre-LN arm reached Post-LN's loss: at this scale Post-LN at this rate trains faster")
    return text + (" Why: " + "; ".join(why) + "." if why else "")


def row_paper(paper: dict[str, Any]) -> str:
    return times(paper["speedup"])


def _claim_downstream(row: dict[str, Any], sec: dict[str, Any]) -> str:
    label = sec["models"][row["comparison"]]["label"]
    per = ", ".join(f"{t} {num(v, 1, 100)}" for t, v in row["per_task"].items())
    return (f"**{VERDICT[row['verdict']]}** — {label}: PLD minus Post-LN, average {sec['split']} score "
            f"{pm({'mean': row['measured'], 'std': row['std']}, 1, 100)} points (fine-tuning seeds: {row['n']}; "
            f"parity within {num(row['threshold'], 1, 100)} points); per task: {per}. In pretraining PLD reached "
            f"validation loss {num(row['val_loss']['pld'], 4)} against {num(row['val_loss']['baseline'], 4)}, "
            f"with {times(row['samples_ratio'])} the samples in {times(row['time_ratio'])} the training time"
            + ("" if row["follows_loss"] is None or row["verdict"] == "parity" else
               ": the downstream difference follows the pretraining loss" if row["follows_loss"] else
               ": the downstream difference goes against the pretraining loss")
            + (f" (fine-tuning seeds: {row['n']}, so fine-tuning noise is not measured)." if row["n"] == 1 else ".")
            + "".join(f" {t} scored {num(v, 1, 100)} for every checkpoint and separates nothing."
                      for t, v in row["flat_tasks"].items()))


def render_claims(report: dict[str, Any]) -> list[str]:
    c = report["claims"]
    paper, rules = c["paper"], c["rules"]
    lines = [f"A measured figure **agrees** when it (± its spread over seeds) is within ±{pct(rules['rel_tol'], 0)} "
             f"of the paper's; downstream **parity** means a difference within {num(rules['parity_points'], 0, 100)} "
             f"point or {num(rules['parity_se'], 0)} standard errors. Every number below is in `report.json`.", "",
             f"**1. {pct(paper['time_per_sample_saving'], 0)} less time per sample at θ̄ = "
             f"{paper['theta_bar']:g}.**", ""]
    lines += [f"- {_claim_time(r, paper, rules)}" for r in c["time_per_sample"]] or ["- Not measured."]
    if "speedup" in c:
        lines += ["", f"**2. {times(paper['speedup'])} faster than the Post-LN baseline to the same accuracy** "
                      "(here: the same validation MLM loss).", ""]
        lines += [f"- {_claim_speedup(r, paper, report['converge']['arms'])}" for r in c["speedup"]]
        comp = report["converge"].get("comparison")
        if comp:
            from .compare_report import verdict_lines

            labels = {name: arm["label"] for name, arm in report["converge"]["arms"].items()}
            lines += ["- From the speed-up curve (section 2): " + " ".join(verdict_lines(comp, labels))]
    if "downstream" in c:
        lines += ["", "**3. GLUE parity at equal samples** (here: the offline tasks below stand in for GLUE).", ""]
        lines += [f"- {_claim_downstream(r, report['downstream'])}" for r in c["downstream"]]
    return lines + [""]


# --- the report -----------------------------------------------------------------------------

def render_machine(m: dict[str, Any]) -> list[str]:
    load = m.get("loadavg") or {}
    busy = max(load.get("start", 0), load.get("end", 0)) > m["cores"] - 0.5
    return [f"Machine: {m['cpu']}, {m['cores']} cores, {m['threads']} torch threads, torch {m['torch']}, "
            f"Python {m['python']}, tcmalloc {'on' if m['tcmalloc'] else 'off'}. Load average (1 min) "
            f"{num(load.get('start'), 2)} at the start, {num(load.get('end'), 2)} at the end."
            + (" Other processes competed for the CPU during the run: wall-clock figures are noisy (the runs are "
               "interleaved so the noise hits every arm alike); counted FLOPs are not affected." if busy else
               " The machine was otherwise quiet."), ""]


def render_report(report: dict[str, Any]) -> str:
    """The whole ``report.md`` (a pure function of ``report.json``)."""
    s = report["settings"]
    plots = report.get("plots", {})
    paper = report["claims"]["paper"]
    lines = ["# pldrop report: Progressive Layer Dropping against the paper's claims", "",
             f"{paper['reference']} ({paper['url']}).", "",
             "Command:", "", "```", report["command"], "```", ""]
    lines += render_machine(report["machine"])
    lines += [f"Scale: preset {s['preset']} for training ({report['converge']['num_layers']} blocks), batch "
              f"{s['batch_size']}, corpus {', '.join(s['corpus'])}"
              + (", `--quick`" if s.get("quick") else "") + ". The paper's claims are for BERT-base pretrained at "
              "far larger scale; these runs are short, so they test the mechanisms (time saved per sample, "
              "learning per sample and per second early in training), not the paper's final numbers.", ""]
    if report.get("elapsed"):
        e = report["elapsed"]
        reused = " (work reused from an earlier run is not included)" if report.get("resumed") else ""
        lines += [f"Wall-clock of this report: {num(e['total_min'], 1)} min{reused}: step timing "
                  f"{num(e.get('step_min'), 1)}, pretraining {num(e.get('pretraining_min'), 1)}, "
                  f"downstream {num(e.get('downstream_min'), 1)}.", ""]
    lines += ["## Claims", ""] + render_claims(report)
    if report.get("bench_step"):
        lines += ["## 1. Time per sample against θ (`pldrop bench step`)", ""]
        lines += render_step(report["bench_step"], plots.get("step"))
    lines += ["## 2. Convergence (`pldrop bench converge`)", ""]
    lines += render_converge(report["converge"], plots.get("converge", []))
    if report.get("ablations"):
        lines += ["## 3. Ablations", ""] + render_ablations(report["ablations"], plots.get("ablations", []))
    if report.get("downstream"):
        lines += ["## 4. Downstream at equal samples and equal wall-clock", ""]
        lines += render_downstream(report["downstream"])
    lines += ["## Recomputing", "",
              "`report.json` holds every figure above and the path of each run folder; each run's `metrics.jsonl` "
              "holds the per-step records they were computed from (`pldrop.reporting.stats`), and the fine-tuning "
              "folders' `results.json` the downstream scores. `report.md` is `pldrop.reporting.render."
              "render_report(report.json)`.", ""]
    return "\n".join(lines)
