"""Measuring the paper's claims: the commands `pldrop bench` and `pldrop report`, and what they use.

    bench_cmd.py  `pldrop bench step | converge`: arguments, run folder, JSON/Markdown/PNG out
    report_cmd.py `pldrop report`: bench step + converge + ablations + downstream -> report.md
    timing.py     interleaved step timing of the untouched model and PLD (every θ, fp32/bf16/compiled)
    step.py       time per sample against θ, baseline and PLD steps interleaved
    runs.py       RunSpec -> a pretraining run folder on one shared corpus, reused when finished
    protocol.py   the convergence protocol (Post-LN sweep, four arms x seeds) and the ablations
    downstream.py equal-samples and equal-wall-clock checkpoints through `pldrop evaluate`
    stats.py      figures across seeds, from metrics.jsonl alone (pure functions)
    claims.py     the paper's claims against the measured figures: values and verdicts
    compare_report.py  the comparison of arms (speed-up curves, decomposition, unigram plateau,
                  verdict): `pldrop compare`'s whole report, and sections of the two below
    plots.py      PNG figures from the same inputs as the tables (the one plotting module)
    render.py     Markdown of `pldrop report` / `pldrop bench` as a pure function of the JSON
    fmt.py        number formats
"""
