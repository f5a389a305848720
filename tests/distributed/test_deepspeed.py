"""pldrop's PLD under deepspeed.initialize (CPU, gloo, 2 ranks): ZeRO 0, 1 and 2.

Measured: ZeRO 0 + release_skipped_grads equals one process with PLD (skipped blocks untouched);
ZeRO 1/2 equal one process in which skipped blocks get a zero gradient (so AdamW still applies
weight decay and momentum to them); ZeRO 2 aborts when ranks draw different gates.
"""

import json

import pytest
import torch

import pldrop
from _launch import ROOT, dist_env, run, torchrun_cmd
from pldrop.integrations import deepspeed as pld_ds

STEPS = 12
TOL = 1e-5  # measured: 3.8e-7 (ZeRO 0 vs one process), 4.8e-7 (ZeRO 1/2 vs zero-gradient reference)


# --- helpers that need no DeepSpeed ------------------------------------------------------------


class FakeEngine:
    def __init__(self, stage=0, boundary=True):
        self.global_steps, self.stage, self.boundary = 0, stage, boundary

    def zero_optimization_stage(self):
        return self.stage

    def is_gradient_accumulation_boundary(self):
        return self.boundary


def test_sync_step_keeps_micro_steps_of_one_optimizer_step():
    from _tiny import tiny_model

    model = tiny_model(layers=2)
    ctl = pldrop.apply_pld(model, gamma=0.5)
    eng = FakeEngine()
    eng.global_steps = 3
    assert pld_ds.sync_step(ctl, eng) == pldrop.theta(3, 0.5, 0.5) and ctl.global_step == 3
    ctl.draw()
    pld_ds.sync_step(ctl, eng)  # same optimizer step (gradient accumulation): no reset
    assert ctl.micro_step == 1
    eng.global_steps = 4
    pld_ds.sync_step(ctl, eng)
    assert (ctl.global_step, ctl.micro_step) == (4, 0)


def test_release_only_at_stage_0_on_the_boundary():
    from _tiny import tiny_model

    model = tiny_model(layers=2)
    ctl = pldrop.apply_pld(model, theta_bar=0.01, gamma=100.0, seed=0)
    ctl.step(5)
    model.train()
    while all(ctl.draw()):
        pass
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    assert pld_ds.release_skipped_grads(ctl, FakeEngine(stage=2)) == 0
    assert pld_ds.release_skipped_grads(ctl, FakeEngine(stage=0, boundary=False)) == 0
    assert pld_ds.release_skipped_grads(ctl, FakeEngine(stage=0)) > 0


def test_zero_stage():
    assert pld_ds.zero_stage({"zero_optimization": {"stage": 1}}) == 1 and pld_ds.zero_stage({}) == 0


# --- 2 ranks under torchrun ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    pytest.importorskip("deepspeed")
    out = tmp_path_factory.mktemp("ds")
    proc = run(torchrun_cmd(str(ROOT / "tests/distributed/ds_worker.py"), str(out), str(STEPS), "then-indep"),
               dist_env(out), timeout=240)
    assert (out / "ds_result.json").is_file(), proc.stdout[-4000:]  # stages 0, 1, 2 all finished
    res = {int(k): v for k, v in json.loads((out / "ds_result.json").read_text()).items()}
    res["indep"] = proc  # then ZeRO-2 with per-rank gates, expected to abort the job
    return res


@pytest.fixture(scope="module")
def references():
    from ddp_worker import train

    from _tiny import flat_params

    torch.set_num_threads(1)
    plain, zeros = train(STEPS), train(STEPS, set_to_none=False, release=False)
    return {"pld": (plain["gates"], flat_params(plain["model"])), "zero_grads": (zeros["gates"], flat_params(zeros["model"]))}


@pytest.mark.multiprocess
@pytest.mark.parametrize("stage", [0, 1, 2])
def test_zero_stage_runs_with_pldrop_gates(ds, stage):
    r = ds[stage]
    assert not r["ds_pld"]  # DeepSpeed's own PLD is off: without_pld(config) reached initialize
    assert (r["theta_bar"], r["gamma"]) == (0.5, 0.2)  # from the config's progressive_layer_drop block
    assert r["steps"] == STEPS and r["gates_equal"] and r["params_equal"]
    assert r["warned"] == (stage >= 1)


@pytest.mark.multiprocess
def test_zero_0_with_release_matches_one_process(ds, references):
    r = ds[0]
    gates, ref = references["pld"]
    assert r["gates"] == gates and r["released"] > 0
    assert [x for s in r["unchanged"] for x in s] and all(x for s in r["unchanged"] for x in s)
    assert (torch.tensor(r["params"]) - ref).abs().max().item() < TOL


@pytest.mark.multiprocess
@pytest.mark.parametrize("stage", [1, 2])
def test_zero_1_2_update_skipped_blocks_as_if_zero_gradient(ds, references, stage):
    r = ds[stage]
    gates, ref = references["zero_grads"]
    assert r["gates"] == gates and r["released"] == 0
    assert not any(x for s in r["unchanged"] for x in s)  # weight decay + momentum moved them
    assert (torch.tensor(r["params"]) - ref).abs().max().item() < TOL
    assert (torch.tensor(r["params"]) - references["pld"][1]).abs().max().item() > 1e-4


@pytest.mark.multiprocess
def test_zero_2_aborts_when_ranks_draw_different_gates(ds):
    proc = ds["indep"]
    assert "ZeRO-2 with independent gates" in proc.stdout and "did not fail" not in proc.stdout
    assert proc.returncode != 0
    assert "collective mismatch" in proc.stdout or "Connection reset by peer" in proc.stdout, proc.stdout[-3000:]
