"""PLD under FSDP2 (``shard_with_pld``), 2 CPU ranks (gloo): a dropped block costs no collective,
parameters equal one process on the global batch, skipped blocks untouched, a dead rank ends the run."""

import json
import time

import pytest

from _launch import ROOT, dist_env, run, torchrun_cmd

STEPS, LAYERS = 8, 4
TOL = 1e-5  # measured: 3e-7 max abs difference after 6 AdamW steps (float32, different sum order)
WORKER = str(ROOT / "tests/distributed/fsdp_worker.py")

pytestmark = pytest.mark.multiprocess


@pytest.fixture(scope="module")
def fsdp(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp")
    proc = run(torchrun_cmd(WORKER, str(out), "train", str(STEPS), str(LAYERS)), dist_env(out), timeout=240)
    assert proc.returncode == 0, proc.stdout[-4000:]
    return json.loads((out / "fsdp_result.json").read_text())


def test_collectives_equal_kept_blocks(fsdp):
    assert fsdp["world"] == 2 and len(fsdp["gates"]) == STEPS
    assert sum(LAYERS - sum(g) for g in fsdp["gates"]) >= 3  # blocks really are dropped (3 with these seeds)
    for gates, counts in zip(fsdp["gates"], fsdp["counts"]):
        kept = sum(gates)
        # the root (embeddings, head) gathers once and stays gathered; each kept block gathers in
        # forward and again in backward (reshard_after_forward=True); a dropped block never
        assert counts == {"forward/all_gather": kept + 1, "backward/all_gather": kept,
                          "backward/reduce_scatter": kept + 1}


def test_parameters_equal_one_process_and_skipped_blocks_untouched(fsdp):
    assert fsdp["gates"] == fsdp["ref_gates"]
    assert fsdp["param_names_equal"]
    assert fsdp["max_param_diff"] < TOL
    assert all(fsdp["skipped_grad_none"])  # sharded grads of dropped blocks stay None
    assert all(fsdp["skipped_unchanged"])  # AdamW left their parameters and state alone


def test_dead_rank_ends_the_run_without_hanging(tmp_path):
    t0 = time.monotonic()
    proc = run(torchrun_cmd(WORKER, str(tmp_path), "die", str(STEPS), str(LAYERS)), dist_env(tmp_path), timeout=180)
    assert proc.returncode != 0
    assert not (tmp_path / "fsdp_result.json").exists()
    assert time.monotonic() - t0 < 180
