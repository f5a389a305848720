"""The comparison of arms trained side by side, as Markdown, JSON and plots -- one renderer for all.

`pldrop compare` writes its whole report with :func:`write_compare_report`; `pldrop report` and
`pldrop bench converge` put the same sections (:func:`comparison_sections`) into their converge
and ablation parts. Every section is a pure function of :func:`pldrop.train.analysis.compare_arms`'
output (stored in ``results.json`` / ``report.json``), so every number can be recomputed from the
arms' ``metrics.jsonl``.

The report says what the numbers do not support: a speed-up measured before the baseline left
the unigram plateau is no evidence for PLD (no claim is made then), a saving beyond what the
skipped blocks allow is explained, and when PLD (or dropping, against Pre-LN alone) does not
get there faster it says so.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..arms import label as arm_label
from ..arms import labels_for  # noqa: F401  (re-exported: the labels have one home, pldrop.arms)
from .fmt import below_or_above, ci, less_or_more, num, pct, sci, table, times

CLAIM = {"agrees": "agrees with", "smaller": "is smaller than", "larger": "is larger than"}
MAX_ROWS = 12  # targets shown per curve table (every target is in the JSON)


# --- sections (pure functions of compare_arms' output) --------------------------------------

def accuracy_name(an: dict[str, Any]) -> str:
    """What the arms' validation accuracy measures: masked tokens (encoders) or the next token (decoders).

    >>> accuracy_name({"plateau": {"objective": "causal-lm"}}), accuracy_name({"plateau": {}})
    ('next-token accuracy', 'masked-token accuracy')
    """
    return "next-token accuracy" if (an.get("plateau") or {}).get("objective") == "causal-lm" else \
        "masked-token accuracy"


def render_plateau(an: dict[str, Any], labels: dict[str, str]) -> list[str]:
    """The unigram plateau: where it is, and whether the baseline left it (if not: no claim)."""
    p = an["plateau"]
    base = labels[an["baseline"]]
    lines = []
    if p.get("objective") == "causal-lm":
        lines.append("**Causal LMs**: the unigram plateau and the word-order probe are masked-LM references (masked "
                     "positions only; shuffling tokens a next-token predictor has not yet read measures something "
                     "else), so they are not computed for these arms. Accuracies here are next-token accuracies, "
                     f"and only the accuracy check (≥ {num(p['min_accuracy'], 2)}) gates a speed-up claim.")
    elif p["unigram_loss"] is not None:
        lines.append(f"**Unigram plateau** of this tokenizer (every masked token guessed from its frequency alone): "
                     f"validation loss {num(p['unigram_loss'])}, masked-token accuracy {num(p['unigram_accuracy'])}. "
                     f"A model has learned more than token frequencies once its accuracy is ≥ {num(p['min_accuracy'], 2)} "
                     f"and its loss ≥ {num(p['margin'], 1)} below the unigram loss.")
    else:
        lines.append(f"The unigram loss of this tokenizer is not known: only the accuracy check "
                     f"(≥ {num(p['min_accuracy'], 2)}) applies.")
    why = []
    if not p["accuracy_ok"]:
        why.append(f"final {accuracy_name(an)} {num(p['final_accuracy'])} < {num(p['min_accuracy'], 2)}")
    if p["loss_ok"] is False:
        only = "only " if p["below_unigram"] >= 0 else ""
        why.append(f"final validation loss {num(p['final_loss'])} is {only}{below_or_above(p['below_unigram'])} the "
                   f"unigram loss (needs ≥ {num(p['margin'], 1)} below)")
    if p.get("objective") == "causal-lm" and not p["left"]:
        from ..train.analysis import not_learned

        lines.append(f"\n**{not_learned(p).capitalize()}**: at this budget a speed-up says nothing about PLD and **no "
                     "speed-up claim is made**; give the arms a longer budget.")
    elif p["left"]:
        below = (f", loss {below_or_above(p['below_unigram'])} the unigram loss" if p["below_unigram"] is not None
                 else "")
        lines.append(f"\nThe {base} baseline left the unigram plateau (final accuracy {num(p['final_accuracy'])}{below}).")
    else:
        lines.append(f"\n**The {base} baseline did not leave the unigram plateau** ({'; '.join(why)}). At this budget "
                     "the arms have learned little beyond token frequencies, so a speed-up measured here says nothing "
                     "about PLD and **no speed-up claim is made**; give the arms a longer budget.")
    return lines + [""]


def render_accuracy(an: dict[str, Any], labels: dict[str, str]) -> list[str]:
    """Time each arm takes to each masked-token accuracy, its speed-up over the baseline there, and
    whether every arm reached the accuracy an evidence run needs (``evidence_target``).

    Where the baseline never got to a level in any seed and the arm did in every seed, the speed-up
    is shown as a lower bound: the baseline's whole training time over the arm's time to the level."""
    acc = an.get("accuracy")
    if not acc:
        return []
    base, seeds = an["baseline"], an["seeds"]
    arms = list(acc["curves"])
    targets = [r["target"] for r in acc["curves"][base]]
    by = {arm: {r["target"]: r for r in rows} for arm, rows in acc["curves"].items()}
    budget = an["arms"][base]["summary"]["train_time_s"]

    def time_cell(arm, t):
        arm_t = by[arm][t]["arm"]["wall"]
        if not arm_t["n"]:
            return "–"
        return num(arm_t["mean"], 1) + (f" ({arm_t['n']} / {seeds})" if seeds > 1 else "")

    def speedup_cell(arm, t):
        row = by[arm][t]
        if by[base][t]["arm"]["wall"]["n"] == 0 and row["arm"]["wall"]["n"] == seeds and budget:
            return f"≥ {times(budget / row['arm']['wall']['mean'])}"
        return sp_cell(row, "wall")

    head, rows = [accuracy_name(an)], []
    for arm in arms:
        head += [f"{labels[arm]}: time (s)"] + ([] if arm == base else [f"{labels[arm]}: speed-up (time)"])
    for t in targets:
        row = [num(t, 2)]
        for arm in arms:
            row += [time_cell(arm, t)] + ([] if arm == base else [speedup_cell(arm, t)])
        rows.append(row)
    seeds_note = (f"; k / {seeds}: the seeds that got there, means over them, speed-ups over the seeds where both "
                  "arms did" if seeds > 1 else "")
    goal, got = acc["evidence_target"], acc["evidence_reached"]
    if not any(by[a][t]["arm"]["wall"]["n"] for a in arms for t in targets):
        return [f"**Time to accuracy**: no arm reached {accuracy_name(an)} {num(min(targets), 2)} within the budget "
                f"in any seed, so none reached {num(goal, 2)}, the level an evidence run needs every arm to reach "
                "before its speed-ups say anything.", ""]
    lines = [f"**Time to accuracy**: the training time at which each arm's validation {accuracy_name(an)} first "
             f"reached each level (linear between evaluations{seeds_note}), and the speed-up over {labels[base]} — "
             "the paper's 2.5× is to the same score, not the same loss."
             + (f" ≥: {labels[base]} did not get there within its {num(budget, 0)} s, so its whole training time "
                "over the arm's is a lower bound." if any(speedup_cell(a, t).startswith("≥") for a in arms
                                                          if a != base for t in targets) else ""), ""]
    lines += table(head, rows) + [""]
    short = [a for a in arms if got[a] < seeds]
    if not short:
        lines.append(f"Every arm reached accuracy {num(goal, 2)} in every seed: the budget was long enough for the "
                     "models to read text, as an evidence run needs.")
    else:
        made = [a for a in arms if a not in short]
        lines.append(f"Accuracy {num(goal, 2)}, the level an evidence run needs every arm to reach, was "
                     f"not reached by {', '.join(f'{labels[a]} ({got[a]} / {seeds})' for a in short)}"
                     + (f"; {', '.join(labels[a] for a in made)} reached it first, by how much is only bounded "
                        "until the others get there (a longer budget)" if made else
                        ": the budget is too short to say which arm gets there first") + ".")
    return lines + [""]


def render_word_order(an: dict[str, Any], labels: dict[str, str]) -> list[str]:
    """The word-order probe: each arm's final accuracy in order and shuffled, and what the gap means."""
    wo = {a: w for a, w in (an.get("word_order") or {}).items() if w is not None}
    if not wo:
        return []
    parts = [f"{labels[a]} {num(w['accuracy'])} → {num(w['shuffled'])}" for a, w in wo.items()]
    gap = num(next(iter(wo.values()))["min_gap"], 2)
    lines = ["**Word order** (the final models on the same validation sequences and masks with each sequence's tokens "
             "shuffled; masked-token accuracy in order → shuffled): " + "; ".join(parts) + "."]
    bags = [labels[a] for a, w in wo.items() if not w["uses_order"]]
    if len(bags) == len(wo):
        lines.append(f"Shuffling costs no arm {gap} of accuracy: the models predict from which tokens a sequence holds, "
                     "not from their order -- a bag-of-words predictor, the plateau after the unigram one. Speed-ups "
                     "measured here are speed-ups to that plateau, not to a model that reads text.")
    elif bags:
        lines.append(f"Shuffling costs {', '.join(bags)} less than {gap} of accuracy (a bag-of-words predictor); "
                     "the other arms read word order.")
    else:
        lines.append(f"Every arm loses ≥ {gap} of accuracy on shuffled text: the models read word order.")
    return [" ".join(lines), ""]


def render_arms(an: dict[str, Any], labels: dict[str, str]) -> list[str]:
    """One row per arm (means over seeds), the unigram guesser beside the final losses."""
    L = an["num_layers"]
    rows = []
    for arm, a in an["arms"].items():
        s = a["summary"]
        rows.append([labels[arm], str(a["seeds"]), num(s["steps"], 0), num(s["samples"], 0), num(a.get("epochs"), 2),
                     num(s["train_time_s"], 1),
                     num(s["time_per_sample_s"], 2, 1e3), times(a["time_per_sample_ratio"]),
                     f"{num(s['mean_blocks_run'], 2)} / {L}", sci(s["flops"]), num(s["final_val_loss"], 4),
                     num(s["final_val_accuracy"], 3), num(s["best_val_loss"], 4)])
    p = an["plateau"]
    if p["unigram_loss"] is not None:
        rows.append(["unigram guesser", "–", "–", "–", "–", "–", "–", "–", "–", "–", num(p["unigram_loss"], 4),
                     num(p["unigram_accuracy"], 3), "–"])
    head = ["arm", "seeds", "steps", "samples", "epochs", "training time (s)", "time per sample (ms)",
            f"time per sample / {labels[an['baseline']]}", "blocks run per step", "FLOPs", "final val loss",
            f"final {accuracy_name(an)}", "best val loss"]
    note = " (means over seeds)" if an["seeds"] > 1 else ""
    return [f"**Arms**{note}:", ""] + table(head, rows) + ["", "Epochs: how many times an arm saw its training data "
                                                           "(samples seen / packed training sequences; – where the "
                                                           "run did not record its data's size).", ""]


def _gap_sentence(saving: float, bound: float, same_blocks: bool) -> str:
    """Why the realised saving per sample differs from the blocks-skipped bound, from the numbers
    (``same_blocks``: the saving is against the arm with the same blocks, not dropped)."""
    if saving > bound:
        if same_blocks:
            return ("The saving exceeds what the skipped blocks allow: per-step costs other than the blocks changed "
                    "(allocator, cache effects), or the load on the machine hit the arms unevenly -- compare "
                    "`step_time` in the arms' metrics.jsonl.")
        return ("The saving exceeds what the skipped blocks allow: the two arms differ in more than PLD (Post-LN "
                "BERT and Pre-LN blocks do not cost the same), so part of it is the architecture's own speed.")
    return ("The gap to the bound is the step's fixed cost (embeddings, MLM head, optimizer), per-block overheads"
            + ("." if same_blocks else ", and the architectures' own difference in speed."))


def render_time_per_sample(an: dict[str, Any], labels: dict[str, str]) -> list[str]:
    """Time saved per sample against the blocks-skipped bound, for every arm that drops blocks."""
    lines = []
    base = labels[an["baseline"]]
    for arm, a in an["arms"].items():
        if arm == an["baseline"] or a["blocks_bound"] <= 1e-9:
            continue
        text = (f"- **{labels[arm]}**: {less_or_more(a['saving_per_sample'])} time per sample than {base}; the blocks it "
                f"skipped bound the saving at {pct(a['blocks_bound'])} ({pct(a['steady_blocks_bound'])} in the second "
                f"half, θ near θ̄) if blocks were the whole step.")
        if a.get("saving_vs_same_blocks") is not None:
            text += (f" Against {labels[a['same_blocks_as']]} (the same blocks, not dropped): "
                     f"{less_or_more(a['saving_vs_same_blocks'])} time per sample. "
                     + _gap_sentence(a["saving_vs_same_blocks"], a["blocks_bound"], True))
        elif a["saving_per_sample"] is not None:
            text += " " + _gap_sentence(a["saving_per_sample"], a["blocks_bound"], False)
        lines.append(text)
    return (["**Time per sample**:", ""] + lines + [""]) if lines else []


def _thin(rows: list[dict[str, Any]], max_rows: int = MAX_ROWS) -> list[dict[str, Any]]:
    """At most ``max_rows`` rows, evenly spaced, always the first and the last."""
    if len(rows) <= max_rows:
        return rows
    idx = sorted({round(i * (len(rows) - 1) / (max_rows - 1)) for i in range(max_rows)})
    return [rows[i] for i in idx]


def render_curves(an: dict[str, Any], labels: dict[str, str], arms: list[str] | None = None) -> list[str]:
    """Per arm: time, FLOPs and samples to each target loss along the baseline's curve, and the speed-ups."""
    base = labels[an["baseline"]]
    if not an["targets"]:
        return [f"No speed-up curve: {base}'s validation loss never reached a multiple of {num(an['target_step'], 1)} "
                "clearly below its first value (or below the unigram loss).", ""]
    seeds = an["seeds"]
    ival = (f"; geometric mean over {seeds} seeds [95 % t-interval, taken on the logarithms]" if seeds > 1 else "")
    lines = [f"**Speed-up along {base}'s validation curve**: for target losses every {num(an['target_step'], 1)} "
             f"from just below where it "
             f"started{' (or the unigram loss)' if an['plateau']['unigram_loss'] is not None else ''} down to its best, "
             f"the training time, counted FLOPs and samples each arm needs to reach the target (linear between "
             f"evaluations), and {base}'s over the arm's{ival}. Lower targets come later in training."
             + (" A selection of the targets is shown; all are in the JSON." if len(an["targets"]) > MAX_ROWS
                else "")
             + (" ≥: the arm was already past the target at its first evaluation, so it got there sooner than "
                "that evaluation and the speed-up is at least the one shown; such points are left out of the trend."
                if any(r.get("lower_bound") for c in an["curves"].values() for r in c) else ""), ""]
    for arm in list(an["curves"]) if arms is None else [a for a in arms if a in an["curves"]]:
        curve = an["curves"][arm]
        rows = [[num(r["target"], 1), num(r["baseline"]["wall"]["mean"], 1), num(r["arm"]["wall"]["mean"], 1),
                 sp_cell(r, "wall"), sp_cell(r, "flops"), sp_cell(r, "samples"),
                 f"{r['reached']['wall']} / {r['seeds']}"] for r in _thin(curve)]
        lines += [f"{labels[arm]} against {base}:", ""]
        lines += table(["target loss", f"{base}: time (s)", f"{labels[arm]}: time (s)", "speed-up (time)",
                        "speed-up (FLOPs)", "speed-up (samples)", "seeds reaching it"], rows) + [""]
    return lines


def sp_cell(row: dict[str, Any], key: str) -> str:
    """A speed-up of a curve row with its interval; ``≥`` when it is only a lower bound (the arm was
    past the target at its first evaluation), ``≤`` when only an upper bound.

    >>> sp_cell({"speedup": {"wall": {"mean": 2.0, "lo": 2.0, "hi": 2.0, "n": 1}}, "lower_bound": True}, "wall")
    '≥ 2.00×'
    """
    s = ci(row["speedup"][key])
    if s == "–":
        return s
    return ("≥ " if row.get("lower_bound") else "≤ " if row.get("upper_bound") else "") + s


def render_headlines(an: dict[str, Any], labels: dict[str, str]) -> list[str]:
    """One row per arm: the speed-up at the lowest target every seed of it reached, and its trend."""
    from ..train.analysis import trend

    rows = []
    for arm, curve in an["curves"].items():
        h = an["headline"][arm]
        tr = trend(curve)
        rows.append([labels[arm], num(h["target"], 1) if h else "none", sp_cell(h, "wall") if h else "–",
                     sp_cell(h, "flops") if h else "–", sp_cell(h, "samples") if h else "–",
                     _trend_cell(tr)])
    head = ["arm", "lowest target reached (all seeds)", "speed-up (time)", "speed-up (FLOPs)", "speed-up (samples)",
            "as training goes on (time)"]
    return [f"**Speed-ups over {labels[an['baseline']]}** at the lowest target loss each arm reached:", ""] + \
        table(head, rows) + [""]


def _trend_cell(tr: dict[str, Any]) -> str:
    if tr["per_0.1"] is None:
        return tr["direction"]
    return f"{tr['direction']} ({tr['per_0.1']:+.2f}× per 0.1 lower loss, ± {num(tr['stderr_per_0.1'], 2)})"


def render_decomposition(an: dict[str, Any], labels: dict[str, str], d: dict[str, Any] | None = None,
                         arm: str | None = None) -> list[str]:
    """PLD's speed-up over the baseline = architecture and its learning rate × dropping; ``d`` and
    ``arm``: a variant's decomposition (default: the PLD arm's). The arms are named as the table of
    arms names them (:mod:`pldrop.arms`), whatever labels a report gives them."""
    if d is None and arm is None:
        d, arm = an.get("decomposition"), an["verdict"]["arm"]
    if not d:
        return []
    base = labels[an["baseline"]]
    drop, pre = arm_label(arm or "pld"), arm_label("preln")
    gm = " (geometric means over seeds, which keep the product)" if d["seeds"] > 1 else ""
    lines = [f"**Where the speed-up comes from**: {drop} over {base} = ({pre}, with its learning rate, over "
             f"{base}) × ({drop} over {pre}){gm}. The first factor is the architecture and its rate, the second "
             "is what dropping adds.", ""]
    full = [r for r in d["rows"] if r["seeds"]["wall"] == d["seeds"]]
    if not full:
        return lines + [f"{pre} and {drop} did not both reach any target in every seed: no decomposition.", ""]
    rows = [[num(r["target"], 1) + (" *" if r.get("bound") else "")]
            + [times(r[part][k]) for part in ("architecture", "dropping", "total") for k in ("wall", "flops")]
            for r in _thin(full)]
    lines += table(["target loss", "architecture (time)", "architecture (FLOPs)", "dropping (time)",
                    "dropping (FLOPs)", "total (time)", "total (FLOPs)"], rows) + [""]
    if any(r.get("bound") for r in full):
        lines += ["\\* a run was already past this target at its first evaluation, so its time there is an upper "
                  "bound and these factors are only approximate.", ""]
    h = d["headline"]
    if h is not None:
        a, dr, tot = h["architecture"]["wall"], h["dropping"]["wall"], h["total"]["wall"]
        lines.append(f"At loss {num(h['target'], 1)}: {times(a)} × {times(dr)} = {times(tot)} in training time.")
        if dr is not None and dr <= 1:
            lines.append(f"**Dropping does not help here**: {drop} is no faster than {pre} alone to this loss; "
                         f"the speed-up over {base} comes from the architecture and its learning rate.")
        elif a is not None and a <= 1:
            if tot is not None and tot > 1:
                lines.append(f"{pre} alone is no faster than {base} here; the speed-up is dropping's.")
            else:
                lines.append(f"Dropping makes {pre} {times(dr)} faster, but {pre} with its rate is {times(a)} of "
                             f"{base}'s speed here, so {drop} is no faster than {base} overall.")
        lines.append("")
    return lines


def verdict_lines(an: dict[str, Any], labels: dict[str, str]) -> list[str]:
    """The paper's 2.5x against the curve, in sentences (what holds and what does not)."""
    v = an["verdict"]
    base = labels[an["baseline"]]
    arm = labels.get(v["arm"], v["arm"])
    if v["claim"] == "no claim":
        return [f"**No claim on the paper's {times(v['paper'])}**: {v['why']}."]
    if v["claim"] == "not reached":
        return [f"**{arm} does not help here**: it reached none of {base}'s target losses in every seed within the "
                f"budget, so it is not faster to the same loss (the paper claims {times(v['paper'])})."]
    h, tr = v["at"], v["trend"]
    lines = [f"**The paper's {times(v['paper'])}**: at loss {num(h['target'], 1)}, the lowest target every seed "
             f"reached, {arm} is {sp_cell(h, 'wall')} faster than {base} in training time, {sp_cell(h, 'flops')} in "
             f"counted FLOPs, {sp_cell(h, 'samples')} in samples; this {CLAIM[v['claim']]} the paper's figure (agreement: within "
             f"±{pct(v['rel_tol'], 0)}, interval included)."]
    if tr["per_0.1"] is not None:
        moves = tr["direction"] if tr["direction"] != "no clear trend" else "shows no clear trend"
        lines.append(f"As training goes on the speed-up {moves}: "
                     f"{times(tr['first'])} at loss {num(tr['first_target'], 1)}, {times(tr['last'])} at "
                     f"{num(tr['last_target'], 1)} ({tr['per_0.1']:+.2f}× per 0.1 lower loss, standard error "
                     f"{num(tr['stderr_per_0.1'], 2)})."
                     + (" Not monotone in between: " + ", ".join(
                         f"{e['kind']} {times(e['speedup'])} at loss {num(e['target'], 1)}"
                         for e in tr.get("extremes") or []) + "." if tr.get("extremes") else ""))
    if v["lowest_target"] is not None and (v["lowest_reached"] is None or v["lowest_reached"] > v["lowest_target"]):
        lines.append(f"{arm} did not reach {base}'s best loss ({num(v['lowest_target'], 1)}) within the budget "
                     f"(lowest target reached: {num(v['lowest_reached'], 1)}).")
    if v["helps"] is False:
        lines.append(f"**{arm} does not help here**: it is not faster than {base} to the same loss.")
    elif v["helps"] is None:
        lines.append(f"{arm} is not clearly faster than {base}: the interval over seeds includes 1×.")
    return lines


def comparison_sections(an: dict[str, Any], labels: dict[str, str] | None = None, arms_table: bool = True,
                        curve_arms: list[str] | None = None, verdict: bool = True) -> list[str]:
    """Every section of a comparison: what `pldrop compare` prints, and what `pldrop report` and
    `pldrop bench converge` embed (without the arms table, which they have in their own form).

    Args:
        an: :func:`pldrop.train.analysis.compare_arms`' output.
        labels: display names of the arms.
        arms_table: include the table of arms.
        curve_arms: arms whose speed-up curve is tabulated (default: all).
        verdict: include the sentences on the paper's 2.5x.
    """
    labels = labels or labels_for(an["arms"])
    lines = render_plateau(an, labels) + (render_arms(an, labels) if arms_table else []) + render_word_order(an, labels)
    lines += render_time_per_sample(an, labels)
    lines += render_accuracy(an, labels)
    if an["targets"]:
        lines += render_headlines(an, labels)
    if curve_arms is None or curve_arms or not an["targets"]:
        lines += render_curves(an, labels, curve_arms)
    variants = an.get("variants") or {}
    if an["targets"]:
        lines += render_decomposition(an, labels)
        for arm, v in variants.items():
            lines += render_decomposition(an, labels, v["decomposition"], arm)
    if verdict:
        lines += [f"- {x}" for x in all_verdict_lines(an, labels)] + [""]
    return lines


def all_verdict_lines(an: dict[str, Any], labels: dict[str, str]) -> list[str]:
    """The verdict of the PLD arm, then of each variant that drops blocks (``an["variants"]``); with
    variants, each verdict's first sentence names its arm."""
    variants = an.get("variants") or {}
    if not variants:
        return verdict_lines(an, labels)
    lines = []
    for v in [an["verdict"]] + [x["verdict"] for x in variants.values()]:
        got = verdict_lines({**an, "verdict": v}, labels)
        lines += [f"{labels.get(v['arm'], v['arm'])} — {got[0]}"] + got[1:]
    return lines


# --- pldrop compare's report ----------------------------------------------------------------

def _load_line(m: dict[str, Any], ls, le) -> str:
    """Load averages at the start and end of a run, and whether other processes competed."""
    fmt = lambda x: " / ".join(num(v, 2) for v in x) if x else "–"  # noqa: E731
    cpus = m.get("cpus") or m.get("cores")
    # the run's own threads load the machine by about min(cpus, threads) at the end: count the rest
    own = min(cpus or 1, m.get("torch_threads") or cpus or 1)
    busy = cpus and ((ls or [0])[0] > 0.5 * cpus or (le or [0])[0] > own + 0.5)
    return (f"Load averages (1, 5, 15 min): {fmt(ls)} at the start, {fmt(le)} at the end."
            + (" Other processes competed for the CPU: the arms train in lockstep, so the load hits them "
               "alike, but absolute times are inflated; counted FLOPs are not affected." if busy else ""))


def _machine_line(m: dict[str, Any]) -> str:
    return "Machine: " + ", ".join(f"{k} {v}" for k, v in m.items() if v not in (None, "")) + "."


def render_machine(meta: dict[str, Any]) -> list[str]:
    """Command, machine, load averages and protocol of a comparison (of each group, for a merged one)."""
    m = meta.get("machine") or {}
    lines = []
    if meta.get("command"):
        lines += ["Command:", "", "```", meta["command"], "```", ""]
    if meta.get("groups"):
        lines += ["Groups of seeds joined here, each a lockstep comparison of every arm:", ""]
        for g in meta["groups"]:
            uni = g.get("unigram") or {}
            lines += [f"- seeds {', '.join(str(s) for s in g['seeds'])} (`{g['folder']}`): `{g.get('command') or '?'}`",
                      f"  {_machine_line(g.get('machine') or {})} {_load_line(g.get('machine') or {}, g.get('load_start'), g.get('load_end'))}"
                      + (f" Unigram loss {num(uni['loss'], 3)}." if uni.get("loss") is not None else "")]
        lines.append("")
    else:
        if m:
            lines.append(_machine_line(m))
        ls, le = meta.get("load_start"), meta.get("load_end")
        if ls or le:
            lines.append(_load_line(m, ls, le))
    if meta.get("protocol"):
        lines.append(f"Protocol: {meta['protocol']}.")
    return lines + [""]


def render_compare(results: dict[str, Any]) -> str:
    """The whole ``report.md`` of `pldrop compare` (a pure function of ``results.json``)."""
    an, meta = results["analysis"], results.get("meta", {})
    labels = labels_for(results["arms"])
    lines = [f"# pldrop compare: {' vs '.join(labels[a] for a in results['arms'])}", ""]
    lines += [f"- {labels[a]} (`{a}`): {results['settings'].get(a, '')}" for a in results["arms"]] + [""]
    lines += ["Learning rates: the paper trained Post-LN BERT at 1e-4 and Pre-LN + PLD at 1e-3; small models need a "
              "higher Post-LN rate, so each arm runs at its own rate (above; `--paper-lrs` for the paper's), and the "
              "decomposition below counts the rate as part of the architecture's share.", ""]
    lines += render_machine(meta)
    lines += ["All figures below are recomputed from the arms' `metrics.jsonl` by "
              "`pldrop.train.analysis.compare_arms`; `report.md` is "
              "`pldrop.reporting.compare_report.render_compare(results.json)`.", ""]
    lines += comparison_sections(an, labels)
    lines += [f"![{p}]({p})" for p in results.get("plots", [])] + [""]
    if results.get("depth"):  # reports written before depth curves have none, and render as they were
        from .depth_cmd import render_depth

        lines += render_depth(results["depth"], labels)
    if results.get("downstream"):  # `pldrop compare --downstream`
        from .compare_downstream import render_downstream

        lines += render_downstream(results["downstream"], results["arms"], labels, results.get("depth"))
    return "\n".join(lines)


def summary_lines(results: dict[str, Any]) -> list[str]:
    """What `pldrop compare` prints at the end."""
    an = results["analysis"]
    labels = labels_for(results["arms"])
    p = an["plateau"]
    out = []
    if p["unigram_loss"] is not None:
        out.append(f"unigram plateau: validation loss {p['unigram_loss']:.3f}, accuracy {num(p['unigram_accuracy'])}")
    for arm, a in an["arms"].items():
        s = a["summary"]
        wo = (an.get("word_order") or {}).get(arm)
        shuf = f" ({num(wo['shuffled'])} on shuffled text)" if wo else ""
        out.append(f"{labels[arm]:<14} final val loss {num(s['final_val_loss'], 4)}, accuracy "
                   f"{num(s['final_val_accuracy'])}{shuf}, time per sample {num(s['time_per_sample_s'], 2, 1e3)} ms, "
                   f"{num(s['mean_blocks_run'], 2)} / {an['num_layers']} blocks")
    if not p["left"]:
        from ..train.analysis import not_learned

        out.append(f"{not_learned(p)}: no speed-up claim")
    wos = [w for w in (an.get("word_order") or {}).values() if w is not None]
    if wos and not any(w["uses_order"] for w in wos):
        out.append("word order: shuffling the validation text costs no arm accuracy -- the models are bag-of-words "
                   "predictors (see report.md)")
    if not an["targets"]:
        out.append(f"no speed-up curve: {labels[an['baseline']]}'s validation loss never fell clearly below its start")
    for arm, h in (an["headline"].items() if an["targets"] else ()):
        out.append(f"{labels[arm]} vs {labels[an['baseline']]}: " + (
            f"{ci(h['speedup']['wall'])} faster in time, {ci(h['speedup']['flops'])} in FLOPs to loss "
            f"{num(h['target'], 1)}" if h else "reached no target of the baseline"))
    acc = an.get("accuracy")
    if acc:
        got = acc["evidence_reached"]
        out.append(f"accuracy {num(acc['evidence_target'], 2)} reached by: "
                   + ", ".join(f"{labels[a]} {got[a]} / {an['seeds']}" for a in got))
    out += [ln.replace("**", "") for ln in all_verdict_lines(an, labels)]
    return out


def _finite(o: Any) -> Any:
    """JSON-safe: NaN and infinities become None."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def write_compare_report(out: Path, records_by_arm: dict[str, Any], settings_by_arm: dict[str, str], num_layers: int,
                         unigram: dict[str, float] | None, meta: dict[str, Any],
                         train_seqs: dict[str, list[int | None]] | None = None,
                         depth: dict[str, Any] | None = None,
                         downstream: dict[str, Any] | None = None) -> dict[str, Any]:
    """`pldrop compare`'s output: ``results.json``, ``report.md`` and plots in ``out``.

    Args:
        out: the comparison folder.
        records_by_arm: ``{arm: records}`` (one seed) or ``{arm: [records per seed]}``; the first
            arm is the baseline unless ``meta["baseline"]`` names another.
        settings_by_arm: a one-line description of each arm's settings.
        num_layers: blocks per model.
        unigram: ``{"loss", "accuracy"}`` of the tokenizer's unigram guesser, or None.
        meta: ``command``, ``machine``, ``load_start``, ``load_end``, ``protocol`` (all shown), and
            anything else to keep in ``results.json``.
        train_seqs: ``{arm: [packed training sequences per seed]}`` for each arm's epochs.
        depth: the arms' depth curves (:func:`pldrop.train.compare.depth_curves`), kept under
            ``depth`` and drawn in ``depth.png``; None: no such section.
        downstream: the fine-tuning block (:mod:`pldrop.reporting.compare_downstream`), kept under
            ``downstream``; None: no such section.

    Returns:
        The results (as written to ``results.json``), with ``summary_lines`` to print.
    """
    from ..train.analysis import _per_seed, compare_arms
    from .plots import plot_speedup, plot_theta_blocks, plot_val_loss

    out = Path(out)
    arms = list(records_by_arm)
    baseline = meta.get("baseline") or ("baseline" if "baseline" in arms else arms[0])
    an = compare_arms(records_by_arm, num_layers, baseline=baseline, unigram=unigram, variants=True,
                      train_seqs=train_seqs or {})
    labels = labels_for(arms)
    runs = {labels[a]: _per_seed(r) for a, r in records_by_arm.items()}
    plots = [plot_val_loss(runs, out / "val_loss.png", hlines={"unigram loss": (unigram or {}).get("loss")},
                           title="Validation loss against training time, samples and counted FLOPs"),
             plot_val_loss(runs, out / "val_accuracy.png", metric="val_accuracy",
                           hlines={"unigram accuracy": (unigram or {}).get("accuracy"),
                                   f"evidence level ({an['accuracy']['evidence_target']})":
                                       an["accuracy"]["evidence_target"]},
                           title=f"Validation {accuracy_name(an)} against training time, samples and counted FLOPs")]
    if an["targets"] and an["curves"]:
        plots.append(plot_speedup({labels[a]: c for a, c in an["curves"].items()}, out / "speedup.png",
                                  title=f"Speed-up over {labels[baseline]} at each target loss"))
    pld = {labels[a]: _per_seed(records_by_arm[a])[0] for a, fig in an["arms"].items() if fig["blocks_bound"] > 1e-9}
    if pld:
        plots.append(plot_theta_blocks(pld, out / "theta_blocks.png", num_layers))
    results = _finite({"arms": arms, "baseline": baseline, "settings": settings_by_arm, "meta": meta,
                       "analysis": an, "plots": plots})
    if depth:
        from .plots import plot_depth

        named = {**depth, "models": {labels.get(a, a): c for a, c in depth["models"].items()}}
        depth = {**depth, "plot": plot_depth(named, out / "depth.png") if depth.get("models") else None}
        results["depth"] = _finite(depth)
    if downstream:
        results["downstream"] = _finite(downstream)
    results["summary_lines"] = summary_lines(results)
    if depth:
        from .depth_cmd import depth_sentence

        results["summary_lines"] += [f"depth: {depth_sentence(labels.get(a, a), c)}".replace("**", "")
                                     for a, c in results["depth"]["models"].items()]
    if downstream:
        from .compare_downstream import summary_line

        results["summary_lines"] += [summary_line(t, b, arms, labels) for t, b in results["downstream"].items()]
    from ..train.checkpoint import atomic_write_text

    atomic_write_text(out / "results.json", json.dumps(results, indent=1, ensure_ascii=False))
    atomic_write_text(out / "report.md", render_compare(results))
    return results

