"""`pldrop demo`: a small Pre-LN BERT trained a few dozen steps with and without PLD.

Synthetic token data, so it needs no corpus and no network: it shows θ(t), which blocks ran at
each step and the time per step of each arm, interleaved step by step.
"""

from __future__ import annotations

import statistics
import time

from .presets import PRESETS

# The defaults keep the demo short: 40 steps per arm of a 12-block H128 model on 8 x 64 tokens,
# one CPU thread -- about 0.1 s per step and arm on a free core (most of a step on 2 busy cores is
# spent with the second thread waiting), so ~15 s with start-up. tests/test_demo.py holds the help
# text to these numbers.
DEFAULTS = {"steps": 40, "preset": "narrow", "batch_size": 8, "seq_len": 64, "threads": 1}
EXPECTED = "about 15 s on one free CPU core"


def add_parser(sub) -> None:
    d = DEFAULTS
    layers, hidden, _ = PRESETS[d["preset"]]
    p = sub.add_parser("demo", help=f"train a small Pre-LN BERT {d['steps']} steps with and without PLD ({EXPECTED})",
                       description=__doc__ + f"\nWith the defaults: {d['steps']} optimizer steps per arm, a "
                       f"{layers}-block H{hidden} model ({d['preset']}), batch {d['batch_size']} x {d['seq_len']} "
                       f"tokens, {d['threads']} thread: {EXPECTED}. Larger settings scale the time with steps x "
                       "batch x sequence length.")
    p.add_argument("--steps", type=int, default=d["steps"], help=f"optimizer steps per arm (default: {d['steps']})")
    p.add_argument("--preset", default=d["preset"], choices=list(PRESETS),
                   help=f"model size (default: {d['preset']}, L{layers} H{hidden})")
    p.add_argument("--batch-size", type=int, default=d["batch_size"],
                   help=f"sequences per step (default: {d['batch_size']})")
    p.add_argument("--seq-len", type=int, default=d["seq_len"], help=f"tokens per sequence (default: {d['seq_len']})")
    p.add_argument("--theta-bar", type=float, default=0.5, help="θ̄, where θ(t) decays to (default: 0.5)")
    p.add_argument("--seed", type=int, default=0, help="seeds the data, the initialisation and the PLD gates (default: 0)")
    p.add_argument("--threads", type=int, default=d["threads"],
                   help=f"torch CPU threads (default: {d['threads']}: a model this small gains little from more, "
                        "and on a busy machine more threads are slower)")
    p.set_defaults(run=run)


def run(args) -> int:
    import torch

    from .errors import UserError
    from .reporting.timing import reexec_with_tcmalloc

    if args.steps < 1 or args.batch_size < 1 or args.seq_len < 8:
        raise UserError("--steps and --batch-size must be >= 1 and --seq-len >= 8")
    if not 1 <= args.threads <= 1024:
        raise UserError(f"--threads {args.threads}: give a number of CPU threads >= 1")
    if not 0 < args.theta_bar <= 1:  # also NaN
        raise UserError(f"--theta-bar {args.theta_bar}: θ̄ is a keep probability, give a value in (0, 1]")
    if not 0 <= args.seed < 2**63:
        raise UserError(f"--seed {args.seed}: give a seed in [0, 2**63)")
    if args.seq_len > 4096 or args.batch_size > 4096 or args.steps > 100_000:
        raise UserError("the demo is a short run on synthetic data: give --seq-len and --batch-size <= 4096 and "
                        "--steps <= 100000 (use pldrop pretrain for real runs)")
    reexec_with_tcmalloc("demo")  # stable CPU timings (glibc malloc makes them swing)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _train(args)
    finally:
        torch.set_num_threads(threads)  # a library caller keeps its own setting


def _train(args) -> int:
    import torch

    from .models import build_model, masked_lm_loss
    from .schedule import gamma_for_steps
    from .surgery import apply_pld

    vocab = 1000
    g = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(5, vocab, (args.batch_size, args.seq_len), generator=g)
    labels = torch.where(torch.rand(ids.shape, generator=g) < 0.15, ids, torch.full_like(ids, -100))
    masked = torch.where(labels != -100, torch.full_like(ids, 4), ids)

    models = {
        "Pre-LN": build_model("preln", vocab, args.preset, seq_len=args.seq_len, seed=args.seed),
        "Pre-LN + PLD": build_model("pld", vocab, args.preset, seq_len=args.seq_len, seed=args.seed),
    }
    gamma = gamma_for_steps(args.steps, k=10)  # a short demo: reach θ̄ within the run
    ctl = apply_pld(models["Pre-LN + PLD"], theta_bar=args.theta_bar, gamma=gamma, seed=args.seed)
    opts = {k: torch.optim.AdamW(m.parameters(), lr=5e-4) for k, m in models.items()}
    times = {k: [] for k in models}
    L = ctl.num_layers
    print(f"preset {args.preset} (L={L}), batch {args.batch_size}x{args.seq_len}, θ̄={args.theta_bar}, "
          f"γ={gamma:.3g}; steps interleaved")
    print(f"{'step':>4}  {'θ':>6}  {'blocks run (low → high)':<{L + 2}}  {'kept':>5}  "
          f"{'Pre-LN s':>8}  {'PLD s':>7}  {'loss':>6}  {'loss PLD':>8}")
    for step in range(args.steps):
        ctl.step(step)
        losses = {}
        for name, model in models.items():
            model.train()
            t0 = time.perf_counter()
            loss = masked_lm_loss(model, masked, None, labels)[0]
            loss.backward()
            opts[name].step()
            opts[name].zero_grad(set_to_none=True)
            times[name].append(time.perf_counter() - t0)
            losses[name] = loss.item()
        gates = "".join("█" if k else "·" for k in ctl.last_kept)
        print(f"{step:>4}  {ctl.theta:6.3f}  {gates:<{L + 2}}  {sum(ctl.last_kept):>2}/{L:<2}  "
              f"{times['Pre-LN'][-1]:8.3f}  {times['Pre-LN + PLD'][-1]:7.3f}  "
              f"{losses['Pre-LN']:6.3f}  {losses['Pre-LN + PLD']:8.3f}")
    half = args.steps // 2  # second half: θ near θ̄
    a, b = (statistics.median(times[k][half:]) for k in models)
    print(f"median step time over the last {args.steps - half} steps: Pre-LN {a:.3f} s, "
          f"Pre-LN + PLD {b:.3f} s ({100 * (1 - b / a):.1f} % less)")
    return 0
