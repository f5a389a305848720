"""A forgotten ``ctl.step()`` is said once (PLDNotSteppedWarning), never in a correct loop."""

import sys
import warnings
from pathlib import Path

import pytest
import torch

import pldrop
from pldrop import PLDNotSteppedWarning

sys.path.insert(0, str(Path(__file__).parent / "distributed"))
from _tiny import global_batch, tiny_model  # noqa: E402


def _forwards(model, n: int, ctl=None, per_step: int = 1, train: bool = True) -> list[warnings.WarningMessage]:
    """``n`` forwards (no backward: the gates are drawn all the same); ``ctl.step`` every ``per_step``
    forwards when ``ctl`` is given. Returns the PLDNotSteppedWarnings raised."""
    model.train(train)
    batch = global_batch(0, size=2, seq=8)
    with warnings.catch_warnings(record=True) as got, torch.no_grad():
        warnings.simplefilter("always")
        for i in range(n):
            if ctl is not None and i % per_step == 0:
                ctl.step(i // per_step)
            model(**batch)
    return [w for w in got if issubclass(w.category, PLDNotSteppedWarning)]


def test_never_stepped_warns_once_naming_both_fixes():
    model = tiny_model(layers=2)
    ctl = pldrop.apply_pld(model, theta_bar=0.5, gamma=0.1)
    assert ctl.warn_after_forwards == 128  # the documented default
    got = _forwards(model, 2 * ctl.warn_after_forwards + 5)
    assert len(got) == 1
    msg = str(got[0].message)
    assert "ctl.step(" in msg and "pldrop.integrations.add_pld_callback(trainer)" in msg and "θ stays at 1" in msg
    assert issubclass(PLDNotSteppedWarning, UserWarning)


def test_warns_only_past_the_threshold():
    model = tiny_model(layers=2)
    ctl = pldrop.apply_pld(model, theta_bar=0.5, gamma=0.1)
    ctl.warn_after_forwards = 6
    assert _forwards(model, 6) == []  # 6 forwards at one step: gradient accumulation of 6 is fine
    assert len(_forwards(model, 1)) == 1  # the 7th


@pytest.mark.parametrize("accum", [1, 4, 16])
def test_correct_loop_with_accumulation_up_to_the_threshold_is_quiet(accum):
    model = tiny_model(layers=2)
    ctl = pldrop.apply_pld(model, theta_bar=0.5, gamma=0.1)
    ctl.warn_after_forwards = 16
    assert _forwards(model, 4 * accum, ctl, per_step=accum) == []
    assert ctl.theta < 1


def test_quiet_in_eval_at_gamma_zero_and_when_theta_is_held():
    model = tiny_model(layers=2)
    ctl = pldrop.apply_pld(model, theta_bar=0.5, gamma=0.1)
    ctl.warn_after_forwards = 4
    assert _forwards(model, 12, train=False) == []  # eval forwards draw no gates
    model2 = tiny_model(layers=2)
    ctl2 = pldrop.apply_pld(model2, theta_bar=0.5, gamma=0.0)  # θ never moves: stepping changes nothing
    ctl2.warn_after_forwards = 4
    assert _forwards(model2, 12) == []
    ctl.hold(0.7)  # θ fixed on purpose (ablations, benchmarks)
    assert _forwards(model, 12) == []
    ctl.warn_after_forwards = None
    ctl.step(0)
    assert _forwards(model, 12) == []


def test_compiled_blocks_count_each_forward_once():
    """The check lives in the eager gate hook: compiled blocks neither hide nor repeat it."""
    pytest.importorskip("torch._dynamo")
    from pldrop.compile import compile_blocks

    torch._dynamo.reset()
    model = tiny_model(layers=2)
    ctl = pldrop.apply_pld(model, theta_bar=0.5, gamma=0.3, seed=1)
    compile_blocks(model, backend="eager")
    ctl.warn_after_forwards = 3
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        for step in range(4):  # a correct loop, 3 micro-batches per step, with backward
            ctl.step(step)
            for micro in range(3):
                model(**global_batch(3 * step + micro, size=2, seq=8)).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    assert not [w for w in got if issubclass(w.category, PLDNotSteppedWarning)]
    assert ctl.micro_step == 3
    assert len(_forwards(model, 4)) == 1  # then never stepped: said once
