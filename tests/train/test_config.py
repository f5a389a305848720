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


BAD_OVERRIDES = [
    ("optim.beta1=1.5", "optim.beta1=1.5 is out of range"),
    ("optim.beta1=-0.1", "optim.beta1"),
    ("optim.beta2=nan", "optim.beta2=nan"),
    ("optim.beta2=1", "optim.beta2"),
    ("optim.eps=-1", "optim.eps=-1.0"),
    ("optim.eps=0", "optim.eps"),
    ("optim.eps=.inf", "optim.eps=inf"),
    ("optim.lr=nan", "optim.lr=nan"),
    ("optim.lr=.inf", "optim.lr=inf"),
    ("optim.weight_decay=.inf", "optim.weight_decay"),
    ("optim.clip_grad=nan", "optim.clip_grad"),
    ("optim.warmup_ratio=nan", "optim.warmup_ratio"),
    ("pld.theta_bar=nan", "pld.theta_bar=nan"),
    ("pld.theta_bar=0", "pld.theta_bar=0.0"),
    ("pld.gamma=.inf", "pld.gamma"),
    ("pld.schedule=cosine", "pld.schedule='cosine' is not a depth schedule: use one of pld, cooldown, constant, anneal"),
    ("pld.schedule=", "pld.schedule=None is not allowed"),
    ("pld.cooldown=0", "pld.cooldown=0.0 is out of range: must be a fraction of the run in (0, 1)"),
    ("pld.cooldown=1", "pld.cooldown=1.0 is out of range"),
    ("pld.cooldown=1.5", "pld.cooldown=1.5 is out of range"),
    ("pld.cooldown=-0.2", "pld.cooldown=-0.2 is out of range"),
    ("pld.cooldown=nan", "pld.cooldown=nan is out of range"),
    ("pld.cooldown=soon", "pld.cooldown='soon' must be a number"),
    ("budget.max_minutes=.inf", "budget.max_minutes=inf"),
    ("budget.max_minutes=nan", "budget.max_minutes=nan"),
    ("budget.max_steps=.inf", "must be an integer"),
    ("data.mlm_prob=nan", "data.mlm_prob"),
    ("model.dropout=nan", "model.dropout"),
    ("threads=-1", "threads=-1"),
    ("threads=0", "threads=0"),
    ("seed=-1", "seed=-1"),
    ("seed=99999999999999999999999", "must be in [0, 2**63)"),
    ("seed=9223372036854775808", "must be in [0, 2**63)"),
]


@pytest.mark.parametrize("item,expected", BAD_OVERRIDES)
def test_bad_values_are_one_line_errors(item, expected):
    with pytest.raises(UserError) as e:
        load_config(None, [item])
    assert expected in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("items,expected", [
    (["pld.schedule=constant", "pld.fixed=true"], "pld.fixed holds θ at θ̄ and cannot follow pld.schedule=constant"),
    (["pld.schedule=anneal", "pld.gamma=0.01", "budget.max_minutes=5"], "pld.gamma=0.01 is out of range: γ is per step"),
])
def test_schedule_combinations_that_contradict_each_other(items, expected):
    with pytest.raises(UserError) as e:
        load_config(None, items)
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_schedule_keys_accepted():
    assert (load_config(None).pld.schedule, load_config(None).pld.cooldown) == ("pld", 0.2)
    cfg = load_config(None, ["pld.schedule=cooldown", "pld.cooldown=0.35"])
    assert (cfg.pld.schedule, cfg.pld.cooldown) == ("cooldown", 0.35)
    # γ per step is fine where the schedule's clock is the step
    assert load_config(None, ["pld.schedule=anneal", "pld.gamma=0.01", "budget.max_steps=5"]).pld.gamma == 0.01
    assert load_config(None, ["pld.gamma=0.01", "budget.max_minutes=5"]).pld.schedule == "pld"


def test_edge_values_accepted():
    cfg = load_config(None, ["optim.beta1=0", "optim.beta2=0.98", "optim.eps=1e-12", "seed=9223372036854775807",
                             "threads=1", "budget.max_minutes=0.5"])
    assert cfg.seed == 2**63 - 1 and cfg.optim.eps == 1e-12 and cfg.threads == 1


def test_yaml_file_numbers_without_dot_and_scalar_sections(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("optim:\n  lr: 1e-3\n  eps: 1E-8\npld:\n  theta_bar: 5e-1\n")  # YAML 1.1 reads these as strings
    cfg = load_config(f)
    assert (cfg.optim.lr, cfg.optim.eps, cfg.pld.theta_bar) == (1e-3, 1e-8, 0.5)
    f.write_text("optim:\n  lr: fast\n")
    with pytest.raises(UserError, match="optim.lr='fast' must be a number"):
        load_config(f)
    for scalar in ("0", "1", "fast", "[1, 2]"):
        f.write_text(f"optim: {scalar}\n")
        with pytest.raises(UserError, match="config section optim must be a mapping"):
            load_config(f)
    f.write_text("optim:\n")  # an empty section is the defaults
    assert load_config(f).optim.lr is None


def test_cache_dir_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="--cache-dir.*is a file"):
        load_config(None, **{"data.cache_dir": str(tmp_path / "f")})
    assert load_config(None, **{"data.cache_dir": str(tmp_path / "new")}).data.cache_dir == str(tmp_path / "new")


def _model_json(tmp_path, **kw):
    import json

    base = dict(model_type="roberta-prelayernorm", hidden_size=32, num_attention_heads=2, num_hidden_layers=2,
                intermediate_size=64, max_position_embeddings=130, hidden_act="gelu", pad_token_id=1)
    base.update(kw)
    path = tmp_path / "model.json"
    path.write_text(kw.pop("_raw", None) or json.dumps({k: v for k, v in base.items() if v is not None}))
    return path


BAD_MODEL_FILES = [
    (dict(_raw="[1, 2]"), "holds a JSON list"),
    (dict(_raw="{not json"), "is not valid JSON"),
    (dict(_raw='"bert"'), "holds a JSON str"),
    (dict(model_type="gpt2"), "model_type='gpt2'"),
    (dict(num_attention_heads=3), "num_attention_heads=3 does not divide hidden_size=32"),
    (dict(hidden_act="swishy"), "hidden_act='swishy' is not known"),
    (dict(max_position_embeddings=129), "needs at least 130"),  # RoBERTa: seq_len + pad_token_id + 1
    (dict(model_type="bert", max_position_embeddings=100), "needs at least 128"),
    (dict(hidden_size=0), "hidden_size=0 must be an integer >= 1"),
    (dict(num_hidden_layers=1.5), "num_hidden_layers"),
]


@pytest.mark.parametrize("kw,expected", BAD_MODEL_FILES)
def test_bad_model_config_files(tmp_path, kw, expected):
    path = _model_json(tmp_path, **kw)
    with pytest.raises(UserError) as e:
        load_config(None, [f"model.config_file={path}"])
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_good_model_config_file_builds_at_the_limit(tmp_path):
    from pldrop.models import build_model

    path = _model_json(tmp_path, max_position_embeddings=130)
    cfg = load_config(None, [f"model.config_file={path}"])
    model = build_model("pld", 99, config_file=cfg.model.config_file, seq_len=cfg.data.seq_len)
    import torch

    ids = torch.randint(5, 99, (1, 128))
    assert model(input_ids=ids).logits.shape == (1, 128, 99)  # the longest sequence fits the positions
    bert = _model_json(tmp_path, model_type="bert", max_position_embeddings=128, pad_token_id=0)
    assert load_config(None, [f"model.config_file={bert}"]).model.config_file == str(bert)
