"""Does a CPU-burning job during part of a lockstep comparison move its time-per-sample ratio?

Runs the same short two-arm comparison (Pre-LN vs Pre-LN + PLD with θ held at θ̄) twice, quiet and with
a burner process during about half of the run, and writes both ratios to JSON. This was a timed test
until issue 23 (item 10): the mechanism is tested in tests/train/test_lockstep.py, the machine here.

    python benchmarks/lockstep_load.py --out benchmarks/results/lockstep_load.json
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pldrop.train.analysis import read_metrics

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "corpus" / "tiny.txt"


def ratio(out: Path, burn: bool, minutes: float) -> float:
    p = subprocess.Popen([sys.executable, "-m", "pldrop", "compare", "--corpus", str(CORPUS), "--out", str(out),
                          "--preset", "narrow", "--batch-size", "8", "--no-progress", "data.vocab_size=400",
                          "data.val_max_seqs=8", "data.seq_len=64", "--arms", "preln", "pld", "--max-minutes",
                          str(minutes), "--eval-every", "1000", "--threads", "1", "pld.fixed=true"])
    burner = None
    if burn:
        time.sleep(4.0 + minutes * 60)  # data preparation and the first half of the run (two arms: 2 x minutes)
        burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        if p.wait() != 0:
            raise SystemExit(f"compare failed ({p.returncode})")
    finally:
        if burner is not None:
            burner.kill()
            burner.wait()
    per_sample = {}
    for arm in ("preln", "pld"):
        recs = read_metrics(out / arm / "metrics.jsonl")[1:]  # the first step warms up
        per_sample[arm] = sum(r["step_time"] for r in recs) / (recs[-1]["samples"] - recs[0]["samples"] + 8)
    return per_sample["pld"] / per_sample["preln"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="JSON file to write")
    ap.add_argument("--minutes", type=float, default=0.5, help="training minutes per arm (default 0.5)")
    ap.add_argument("--repeats", type=int, default=3, help="quiet/loaded pairs, interleaved (default 3)")
    args = ap.parse_args()
    pairs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            quiet = ratio(Path(tmp) / f"q{i}", False, args.minutes)
            loaded = ratio(Path(tmp) / f"l{i}", True, args.minutes)
            pairs.append({"quiet": quiet, "loaded": loaded, "loaded_over_quiet": loaded / quiet})
            print(pairs[-1], flush=True)
    res = {"command": " ".join(sys.argv), "machine": platform.processor() or platform.machine(),
           "python": platform.python_version(), "pairs": pairs}
    args.out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
