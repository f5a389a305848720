import pytest

from pldrop.errors import UserError
from pldrop.train.config import TrainConfig, load_config


def test_later_budget_kind_replaces_earlier(tmp_path):
    saved = TrainConfig().to_dict()
    saved["budget"].update(max_steps=None, max_minutes=3.0)
    assert load_config(base=saved).budget.max_minutes == 3.0
    b = load_config(None, ["budget.max_steps=20"], base=saved).budget
    assert (b.max_steps, b.max_minutes) == (20, None)
    b = load_config(None, [], base=saved, **{"budget.max_samples": 64}).budget
    assert (b.max_samples, b.max_minutes) == (64, None)
    f = tmp_path / "c.yaml"
    f.write_text("budget:\n  max_steps: 7\n")
    b = load_config(f, [], defaults={"budget": {"max_minutes": 4.0}}).budget  # a file's budget beats a default
    assert (b.max_steps, b.max_minutes) == (7, None)
    assert load_config(None, [], defaults={"budget": {"max_minutes": 4.0}}).budget.max_minutes == 4.0
    with pytest.raises(UserError, match="give only one"):
        load_config(None, ["budget.max_steps=2", "budget.max_minutes=1"])


def test_types_and_unknown_keys():
    cfg = load_config(None, ["optim.lr=1e-3", "data.corpus=[a.txt, b.txt]", "optim.bf16=true", "seed=3"])
    assert cfg.optim.lr == 1e-3 and cfg.data.corpus == ["a.txt", "b.txt"] and cfg.optim.precision == "bf16" and cfg.seed == 3
    with pytest.raises(UserError, match="unknown config key 'pld.thetabar' \\(did you mean 'theta_bar'\\?\\)"):
        load_config(None, ["pld.thetabar=0.5"])
    with pytest.raises(UserError, match="must be true or false"):
        load_config(None, ["optim.bf16=maybe"])
    with pytest.raises(UserError, match="not of the form key=value"):
        load_config(None, ["optim.lr"])


def test_shipped_configs_load():
    from pathlib import Path

    for f in sorted((Path(__file__).parents[2] / "configs").glob("*.yaml")):
        cfg = load_config(f)
        assert cfg.model.arm in ("pld", "baseline", "preln", "postln-pld"), f
