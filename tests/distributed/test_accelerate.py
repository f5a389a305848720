"""`accelerate launch` and pldrop pretrain: accelerate only sets RANK / WORLD_SIZE / MASTER_* and
starts the ranks through torch.distributed.run; pldrop's loop does the rest (gloo, DDP, sharding).

On a CPU-only machine the 2-rank launch is ``--multi_gpu --num_processes 2`` (no GPU is needed);
``--cpu --num_processes 2`` starts ONE process (accelerate's simple launcher: multi-CPU needs
``--mpirun_hostfile``), which trains with world size 1 (measured: 4 samples per step, not 8).
"""

import json
import sys

import pytest

from _launch import ROOT, dist_env, free_port, run

pytestmark = pytest.mark.multiprocess


def test_accelerate_launch_two_ranks(tmp_path):
    pytest.importorskip("accelerate")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()),
           "-m", "pldrop", "pretrain", "--corpus", str(ROOT / "tests/fixtures/corpus/tiny.txt"), "--out", str(out),
           "--preset", "tiny", "--max-steps", "4", "--batch-size", "4", "--no-progress", "data.vocab_size=300"]
    proc = run(cmd, dist_env(tmp_path, HF_HOME=str(tmp_path / "hf")), timeout=150)  # no user accelerate config
    assert proc.returncode == 0, proc.stdout[-4000:]
    recs = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["samples"]) for r in recs] == [(s, 8 * s) for s in range(1, 5)]  # 2 ranks x 4
    assert (out / "model.safetensors").is_file() and len(list((out / "tb").iterdir())) == 1
