"""PLD under DistributedDataParallel, 2 CPU ranks (gloo): identical gates, identical parameters,
equal to one process on the global batch, and skipped blocks left alone by AdamW."""

import json

import pytest
import torch

from _launch import ROOT, dist_env, run, torchrun_cmd
from _tiny import flat_params

STEPS = 50
TOL = 1e-5  # measured: 1.2e-6 max abs difference after 50 AdamW steps (float32, different sum order)

pytestmark = pytest.mark.multiprocess


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    proc = run(torchrun_cmd(str(ROOT / "tests/distributed/ddp_worker.py"), str(out), str(STEPS)),
               dist_env(out), timeout=150)
    assert proc.returncode == 0, proc.stdout[-4000:]
    return json.loads((out / "ddp_result.json").read_text()), torch.load(out / "ddp_params.pt")


def test_gates_identical_on_every_rank_every_step(ddp):
    res, _ = ddp
    assert res["world"] == 2 and len(res["gates_equal_every_step"]) == STEPS
    assert all(res["gates_equal_every_step"])
    assert sum(not all(g) for g in res["gates"]) >= 10  # gamma is large: blocks really are dropped


def test_parameters_identical_across_ranks_and_equal_to_one_process(ddp):
    from ddp_worker import train

    res, ddp_params = ddp
    assert res["params_equal"] and res["params_max_diff"] == 0.0  # bitwise, on both ranks
    torch.set_num_threads(1)
    ref = train(STEPS)  # one process, whole global batch, the same gates
    assert ref["gates"] == res["gates"]
    # the mean of the per-rank mean losses is the full-batch mean: equal token counts per rank
    assert res["mean_losses"] == pytest.approx(ref["losses"], abs=TOL)
    diff = (flat_params(ref["model"]) - ddp_params).abs().max().item()
    assert diff < TOL, f"DDP and single-process parameters differ by {diff}"


def test_skipped_blocks_untouched(ddp):
    """Blocks skipped on every rank are globally unused: DDP leaves their grad None, AdamW skips them."""
    res, _ = ddp
    flags = [x for step in res["grad_none"] for x in step]
    assert flags and all(flags)
    assert all(x for step in res["unchanged"] for x in step)


def test_zero_grads_change_skipped_blocks_unless_released(ddp):
    """With zero_grad(set_to_none=False) a skipped block keeps a zero gradient tensor, and AdamW
    still moves it (weight decay, and momentum from earlier steps); release_skipped_grads stops that."""
    res, _ = ddp
    zeros, released = res["zeros"], res["zeros_released"]
    assert not any(x for step in zeros["grad_none"] for x in step)
    assert not any(x for step in zeros["unchanged"] for x in step)
    assert [x for s in released["unchanged"] for x in s] and all(x for s in released["unchanged"] for x in s)
    assert zeros["params_equal"] and released["params_equal"]


def test_independent_gates_make_release_unsafe(ddp):
    """Ranks with different gate seeds: a block one rank skipped gets the other's gradient through
    DDP (so it moves); releasing it on one rank only makes the replicas drift apart."""
    res, _ = ddp
    indep, released = res["indep"], res["indep_released"]
    assert not indep["gates_equal"]
    assert indep["params_equal"] and not any(x for s in indep["unchanged"] for x in s)
    assert not released["params_equal"] and released["params_max_diff"] > 1e-4
