"""Step-time benchmark of PLD at the BERT-base shape: realised vs predicted saving.

    python benchmarks/bench_step.py                      # base, batch 8, seq 128, fp32
    python benchmarks/bench_step.py --preset small --batch 32 --repeats 20 --out small.json
    python benchmarks/bench_step.py --preset base --columns fp32 bf16 compiled   # precisions side by side

Times full training steps (forward, backward, AdamW) of the untouched Pre-LN model and of the
same model under PLD at θ in {1.0, 0.75, 0.5}, interleaved in one run, plus the fixed cost (no
blocks) and the MLM head on all vs masked positions. With ``--columns``, instead: the untouched
model and PLD at the smallest θ in fp32, bf16 autocast and compiled (``compile_blocks``),
interleaved. Writes JSON; see benchmarks/README.md.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

from pldrop.reporting.timing import (COLUMNS, format_columns, format_table, reexec_with_tcmalloc, schedule_saving, time_columns,
                          time_steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="base", help="model size preset (default: base = L12 H768 A12)")
    ap.add_argument("--batch", type=int, default=8, help="sequences per step (default: 8)")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--thetas", type=float, nargs="+", default=[1.0, 0.75, 0.5])
    ap.add_argument("--repeats", type=int, default=10, help="timed steps per arm (after --warmup)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--schedule-steps", type=int, default=10_000, help="T for the whole-schedule average")
    ap.add_argument("--columns", nargs="+", choices=COLUMNS, help="precisions side by side (see above)")
    ap.add_argument("--compile-backend", default="inductor")
    ap.add_argument("--out", type=Path, default=Path("bench_step.json"))
    args = ap.parse_args()
    reexec_with_tcmalloc()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.columns:
        res = time_columns(args.preset, args.batch, args.seq_len, min(args.thetas), tuple(args.columns), args.repeats,
                           max(args.warmup, 2), device=args.device, backend=args.compile_backend,
                           progress=sys.stderr.isatty())
        print(format_columns(res))
        args.out.write_text(json.dumps(res, indent=1))
        print(f"wrote {args.out}")
        return
    res = time_steps(args.preset, args.batch, args.seq_len, tuple(args.thetas), args.repeats, args.warmup,
                     "both", args.bf16, device=args.device, progress=sys.stderr.isatty())
    res["schedule"] = schedule_saving(res, args.schedule_steps)
    print(format_table(res))
    s = res["schedule"]
    print(f"\nwhole schedule (T={s['total_steps']}, θ̄={s['theta_bar']}, γ=100/T): predicted saving "
          f"{100 * s['saving']:.1f} % per sample")
    args.out.write_text(json.dumps(res, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
