import math

import numpy as np
import torch
import pytest

import pldrop
from pldrop.schedule import check_num_layers


def _deepspeed_theta(theta_bar, gamma, step):
    try:  # the oracle: DeepSpeed 0.19's own class (deepspeed==0.19.7 is a dev dependency)
        from deepspeed.runtime.progressive_layer_drop import ProgressiveLayerDrop
    except Exception:  # pragma: no cover - only where deepspeed cannot be installed
        return float((1.0 - theta_bar) * np.exp(-gamma * step) + theta_bar)
    pld = ProgressiveLayerDrop(theta=theta_bar, gamma=gamma)
    pld.update_state(step)
    return float(pld.get_theta())


@pytest.mark.parametrize("theta_bar", [0.5, 0.1, 0.7, 0.9, 1.0, 0.123456789])
@pytest.mark.parametrize("gamma", [0.0, 0.001, 1e-5, 0.37, 100 / 7])
def test_theta_equals_deepspeed_exactly(theta_bar, gamma):
    for step in [0, 1, 2, 17, 999, 1000, 12345, 10**6]:
        assert pldrop.theta(step, theta_bar, gamma) == _deepspeed_theta(theta_bar, gamma, step)


def test_deepspeed_oracle_is_really_deepspeed():
    deepspeed = pytest.importorskip("deepspeed")
    assert deepspeed.__version__.startswith("0.19")


def test_theta_shape():
    assert pldrop.theta(0) == 1.0
    values = [pldrop.theta(t, 0.5, 0.01) for t in range(0, 2000, 50)]
    assert all(a > b for a, b in zip(values, values[1:]))  # strictly decreasing towards θ̄
    assert values[-1] == pytest.approx(0.5, abs=1e-8)
    assert pldrop.theta(1000, 0.5, 0.001) == pytest.approx(0.5 * math.exp(-1) + 0.5, rel=1e-15)


def test_keep_probs_linear_is_the_papers_rule():
    L, th = 12, 0.5
    probs = pldrop.keep_probs(th, L)
    assert probs == [1 - (l / L) * (1 - th) for l in range(1, L + 1)]
    assert probs[-1] == th and probs[0] == pytest.approx(1 - 0.5 / 12)
    assert pldrop.expected_kept(0.5, 12) == pytest.approx(8.75)  # the brief's figure for BERT-base
    assert pldrop.keep_probs(0.3, 5, rule="uniform") == [0.3] * 5
    assert pldrop.keep_probs(1.0, 7) == [1.0] * 7


def test_gamma_for_steps_and_mean_theta():
    assert pldrop.gamma_for_steps(1000) == 0.1
    assert pldrop.gamma_for_steps(500, k=50) == 0.1
    m = pldrop.mean_theta(200, 0.5)
    assert 0.5 < m < 0.6
    assert m == pytest.approx(np.mean([pldrop.theta(t, 0.5, 0.5) for t in range(200)]))


@pytest.mark.parametrize(
    "call, needle",
    [
        (lambda: pldrop.theta(1, theta_bar=0.0), "theta_bar=0.0 is out of range: it must be in (0, 1]"),
        (lambda: pldrop.theta(1, theta_bar=1.5), "theta_bar=1.5"),
        (lambda: pldrop.theta(1, theta_bar=float("nan")), "theta_bar=nan"),
        (lambda: pldrop.theta(1, gamma=-0.1), "gamma=-0.1 is out of range"),
        (lambda: pldrop.theta(-1), "step=-1"),
        (lambda: pldrop.keep_probs(0.5, 0), "num_layers=0 is out of range"),
        (lambda: pldrop.keep_probs(0.5, 3, rule="cosine"), "rule='cosine' is not known"),
        (lambda: pldrop.keep_probs(0.0, 3), "theta_bar=0.0"),
        (lambda: pldrop.expected_kept(0.5, -2), "num_layers=-2"),
        (lambda: pldrop.gamma_for_steps(0), "total_steps=0"),
        (lambda: check_num_layers(2.5), "num_layers=2.5"),
    ],
)
def test_value_errors_name_value_and_range(call, needle):
    with pytest.raises(ValueError) as e:
        call()
    assert needle in str(e.value)


# --- depth schedules (issue 24) --------------------------------------------------------------------


@pytest.mark.parametrize("T", [1, 2, 5, 37, 1000])
def test_cooldown_and_anneal_end_at_full_depth(T):
    for schedule in ("cooldown", "anneal"):
        assert pldrop.theta_at_step(schedule, T - 1, T) == 1.0
    assert pldrop.theta_at_fraction("cooldown", 1.0) == 1.0 and pldrop.theta_at_fraction("anneal", 1.0) == 1.0


def test_pld_schedule_is_the_papers_theta_unchanged():
    for T in (10, 1000):
        g = pldrop.gamma_for_steps(T)
        for t in range(0, T, 7):
            assert pldrop.theta_at_step("pld", t, T) == pldrop.theta(t, 0.5, g)  # bit-identical
            assert pldrop.theta_at_step("pld", t, T, 0.7, 0.001) == _deepspeed_theta(0.7, 0.001, t)
    assert pldrop.mean_theta(200, 0.5) == pldrop.mean_theta(200, 0.5, schedule="pld")
    values = [pldrop.theta_at_step("pld", t, 500) for t in range(500)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # never rising


@pytest.mark.parametrize("rule", ["linear", "uniform"])
@pytest.mark.parametrize("T,theta_bar,gamma", [(4, 0.5, None), (100, 0.5, None), (1000, 0.7, None),
                                                (1000, 0.5, 0.001), (3000, 0.3, 0.01), (50, 0.5, 0.0)])
def test_constant_matches_pld_mean_kept_blocks(rule, T, theta_bar, gamma):
    L = 12
    g = pldrop.gamma_for_steps(T) if gamma is None else gamma
    pld_mean = np.mean([pldrop.expected_kept(pldrop.theta(t, theta_bar, g), L, rule) for t in range(T)])
    th = pldrop.constant_theta(T, theta_bar, gamma)
    assert pldrop.expected_kept(th, L, rule) == pytest.approx(pld_mean, rel=1e-12)
    assert {pldrop.theta_at_step("constant", t, T, theta_bar, gamma) for t in range(T)} == {th}  # one θ
    assert pldrop.mean_expected_kept("constant", T, L, theta_bar, gamma, rule=rule) == pytest.approx(
        pldrop.mean_expected_kept("pld", T, L, theta_bar, gamma, rule=rule), rel=1e-12)


def test_constant_on_the_budget_clock_matches_the_time_average():
    f = np.linspace(0, 1, 200_001)
    mean = np.trapezoid([pldrop.theta_at_fraction("pld", x) for x in f[::100]], f[::100])
    assert pldrop.theta_at_fraction("constant", 0.3) == pytest.approx(mean, abs=1e-4)


def test_cooldown_is_pld_then_a_straight_line_to_one():
    T, c = 1001, 0.2
    g = pldrop.gamma_for_steps(T, k=5)  # a slow γ: θ has not reached θ̄ when the cooldown starts
    thetas = [pldrop.theta_at_step("cooldown", t, T, 0.5, g, c) for t in range(T)]
    start = 800  # progress 0.8 = 1 - cooldown
    assert thetas[:start] == [pldrop.theta(t, 0.5, g) for t in range(start)]
    th0 = pldrop.theta(start, 0.5, g)
    ramp = [th0 + (1 - th0) * (t - start) / (T - 1 - start) for t in range(start, T)]
    assert thetas[start:] == pytest.approx(ramp, abs=1e-12)
    assert all(a <= b for a, b in zip(thetas[start:], thetas[start + 1:]))
    # the fraction of the run is the option
    assert pldrop.theta_at_step("cooldown", 500, T, cooldown=0.5) == pytest.approx(0.5, abs=1e-12)
    assert pldrop.theta_at_step("cooldown", 750, T, cooldown=0.5) == pytest.approx(0.75)


def test_anneal_drop_rate_falls_linearly_to_zero():
    T = 101
    drops = [1 - pldrop.theta_at_step("anneal", t, T, 0.4) for t in range(T)]
    assert drops[0] == pytest.approx(0.6) and drops[-1] == 0.0
    assert drops == pytest.approx([0.6 * (1 - t / 100) for t in range(T)], abs=1e-12)
    assert pldrop.mean_expected_kept("anneal", T, 12, 0.4) > pldrop.mean_expected_kept("pld", T, 12, 0.4)


@pytest.mark.parametrize(
    "call, needle",
    [
        (lambda: pldrop.theta_at_step("cosine", 1, 10), "schedule='cosine' is not known"),
        (lambda: pldrop.theta_at_step("anneal", 1), "schedule='anneal' needs the run's length"),
        (lambda: pldrop.theta_at_step("constant", 1, 0), "total_steps=0 is out of range"),
        (lambda: pldrop.theta_at_step("cooldown", 1, 10, cooldown=1.0), "cooldown=1.0 is out of range"),
        (lambda: pldrop.theta_at_step("cooldown", 1, 10, cooldown=0), "cooldown=0.0 is out of range"),
        (lambda: pldrop.theta_at_fraction("cooldown", 0.5, cooldown=float("nan")), "cooldown=nan"),
        (lambda: pldrop.ProgressiveLayerDrop([2], schedule="step"), "schedule='step' is not known"),
        (lambda: pldrop.ProgressiveLayerDrop([2], schedule="cooldown", total_steps=2.5), "total_steps=2.5"),
        (lambda: pldrop.ProgressiveLayerDrop([2], schedule="anneal").step(0), "pass total_steps= to apply_pld"),
    ],
)
def test_schedule_errors_name_value_and_range(call, needle):
    with pytest.raises(ValueError) as e:
        call()
    assert needle in str(e.value)


# --- the controller follows the schedule -------------------------------------------------------------


class _Blocks(torch.nn.Module):
    def __init__(self, n=4):
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(3, 3) for _ in range(n))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


@pytest.mark.parametrize("schedule", pldrop.SCHEDULES)
def test_controller_follows_the_schedule(schedule):
    T = 40
    ctl = pldrop.apply_pld(_Blocks(), gamma=pldrop.gamma_for_steps(T), schedule=schedule, total_steps=T, seed=3)
    seen = [ctl.step(t) for t in range(T)]
    assert seen == [pldrop.theta_at_step(schedule, t, T, 0.5, pldrop.gamma_for_steps(T)) for t in range(T)]
    assert ctl.expected_kept == pldrop.expected_kept(seen[-1], 4)
    # under a time budget the caller gives the fraction of the budget used
    assert ctl.step(7, progress=0.85) == pldrop.theta_at_fraction(schedule, 0.85)


def test_default_controller_is_unchanged():
    a = pldrop.ProgressiveLayerDrop([6], gamma=0.01, seed=7)
    assert a.schedule == "pld" and a.total_steps is None
    for t in (0, 3, 150, 10_000):
        assert a.step(t) == pldrop.theta(t, 0.5, 0.01)
    ds = pldrop.from_deepspeed_config({"progressive_layer_drop": {"enabled": True, "theta": 0.6, "gamma": 0.002}},
                                      engine_uses_config=False)
    ctl = pldrop.apply_pld(_Blocks(), **ds)  # the DeepSpeed import keeps mapping to pld
    assert ctl.schedule == "pld" and ctl.step(100) == _deepspeed_theta(0.6, 0.002, 100)


@pytest.mark.parametrize("schedule", ["cooldown", "anneal", "constant"])
@pytest.mark.parametrize("progress", [None, 0.93])
def test_controller_resumes_exactly_with_every_schedule(schedule, progress):
    import json

    T = 60
    ref = pldrop.ProgressiveLayerDrop([5], gamma=0.2, seed=11, schedule=schedule, total_steps=T, cooldown=0.3)
    ref.step(55, progress)
    ref.draw()
    state = json.loads(json.dumps(ref.state_dict()))  # plain JSON survives
    resumed = pldrop.ProgressiveLayerDrop([5], seed=0)  # a default controller takes every setting from the state
    resumed.load_state_dict(state)
    assert (resumed.schedule, resumed.total_steps, resumed.cooldown) == (schedule, T, 0.3)
    assert resumed.theta == ref.theta and resumed.keep_probs == ref.keep_probs
    assert resumed.draw() == ref.draw()
    assert resumed.step(56) == ref.step(56)
    # states written before schedules existed are pld
    old = {k: v for k, v in state.items() if k not in ("schedule", "total_steps", "cooldown", "progress")}
    resumed.load_state_dict(old)
    assert resumed.schedule == "pld" and resumed.theta == pldrop.theta(55, 0.5, 0.2)


def test_controller_without_the_length_starts_and_says_what_it_needs():
    ctl = pldrop.ProgressiveLayerDrop([4], schedule="cooldown")
    assert ctl.theta == 1.0  # progress 0 until told more
    with pytest.raises(ValueError, match="schedule='cooldown' needs the run's length"):
        ctl.step(1)
    assert ctl.step(1, progress=0.5) == pytest.approx(0.5)
    ctl.total_steps = 10
    assert ctl.step(9) == 1.0
