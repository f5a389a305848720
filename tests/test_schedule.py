import math

import numpy as np
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
