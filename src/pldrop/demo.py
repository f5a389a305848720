"""`pldrop demo`: a small Pre-LN BERT trained a few dozen steps with and without PLD.

Synthetic token data, so it needs no corpus and no network: it shows θ(t), which blocks ran at
each step and the time per step of each arm, interleaved step by step.
"""

from __future__ import annotations

import statistics
import time

from .presets import PRESETS


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="train a small Pre-LN BERT a few dozen steps with and without PLD",
                       description=__doc__)
    p.add_argument("--steps", type=int, default=40, help="optimizer steps per arm (default: 40)")
    p.add_argument("--preset", default="narrow", choices=list(PRESETS), help="model size (default: narrow, L12 H128)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--theta-bar", type=float, default=0.5, help="θ̄, where θ(t) decays to (default: 0.5)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run)


def run(args) -> int:
    import torch

    from .errors import UserError
    from .models import build_model, masked_lm_loss
    from .reporting.timing import reexec_with_tcmalloc
    from .schedule import gamma_for_steps
    from .surgery import apply_pld

    if args.steps < 1 or args.batch_size < 1 or args.seq_len < 8:
        raise UserError("--steps and --batch-size must be >= 1 and --seq-len >= 8")
    if not 0 < args.theta_bar <= 1:  # also NaN
        raise UserError(f"--theta-bar {args.theta_bar}: θ̄ is a keep probability, give a value in (0, 1]")
    if not 0 <= args.seed < 2**63:
        raise UserError(f"--seed {args.seed}: give a seed in [0, 2**63)")
    if args.seq_len > 4096 or args.batch_size > 4096 or args.steps > 100_000:
        raise UserError("the demo is a short run on synthetic data: give --seq-len and --batch-size <= 4096 and "
                        "--steps <= 100000 (use pldrop pretrain for real runs)")
    reexec_with_tcmalloc("demo")  # stable CPU timings (glibc malloc makes them swing)
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
