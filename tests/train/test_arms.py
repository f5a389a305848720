"""The arms table (issue 24 item 3) and the epochs each arm saw (item 5): one home, read by every command."""

import json
import os
from pathlib import Path

import pytest
import yaml

from pldrop.arms import BY_NAME, DEFAULT_COMPARE, TABLE, config_overrides
from pldrop.cli import main
from pldrop.train.analysis import compare_arms, read_metrics

CORPUS = str(Path(__file__).parents[1] / "fixtures" / "corpus" / "tiny.txt")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PLDROP_CACHE", str(tmp_path_factory.getbasetemp() / "pldrop-cache"))


def test_every_arm_is_buildable_and_named_once():
    from pldrop.models import build_model
    from pldrop.train.config import load_config

    assert len({a.label for a in TABLE}) == len(TABLE) and len(BY_NAME) == len(TABLE)
    assert set(DEFAULT_COMPARE) <= set(BY_NAME)
    for arm in TABLE:
        cfg = load_config(None, [], **config_overrides(arm.name))  # its pld.* settings are valid config keys
        assert cfg.model.arm == arm.model and cfg.model.uses_pld == arm.drops
        assert all(getattr(cfg.pld, k) == v for k, v in arm.pld.items())
        assert arm.lr > 0 and arm.pretrain_lr > 0 and arm.paper_lr > 0
    for model in {a.model for a in TABLE}:
        assert build_model(model, 99, "tiny", seq_len=16, seed=0) is not None


def _records(wall, losses, samples):
    return [{"step": i + 1, "wall": w, "step_time": 1.0, "samples": s, "flops": float(s), "blocks_run": 2.0,
             "val_loss": v, "val_accuracy": 0.1} for i, (w, v, s) in enumerate(zip(wall, losses, samples))]


def test_every_dropping_arm_gets_a_verdict_and_a_decomposition():
    base = _records([0, 10, 20], [8.0, 6.0, 5.0], [10, 20, 30])
    pre = _records([0, 5, 10], [8.0, 6.0, 5.0], [10, 20, 30])
    fast = _records([0, 2, 4], [8.0, 6.0, 5.0], [10, 20, 30])
    runs = {"baseline": base, "preln": pre, "pld": fast, "sd-constant": pre, "pld-cooldown": fast}
    an = compare_arms(runs, num_layers=2, variants=True)
    assert an["verdict"]["arm"] == "pld" and list(an["variants"]) == ["sd-constant", "pld-cooldown"]
    d = an["variants"]["pld-cooldown"]["decomposition"]["headline"]
    assert d["dropping"]["wall"] == pytest.approx(2.5) and d["architecture"]["wall"] == pytest.approx(2.0)
    assert an["variants"]["sd-constant"]["decomposition"]["headline"]["dropping"]["wall"] == pytest.approx(1.0)
    assert "variants" not in compare_arms(runs, num_layers=2)  # bench and report: as before
    # without the pld arm, the first variant takes its place
    an = compare_arms({k: v for k, v in runs.items() if k != "pld"}, num_layers=2, variants=True)
    assert an["verdict"]["arm"] == "sd-constant" and list(an["variants"]) == ["pld-cooldown"]


def test_variant_arms_train_with_their_schedule_rate_and_epochs(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--corpus", CORPUS, "--out", str(out), "--preset", "tiny", "--max-steps", "4",
                 "--eval-every", "2", "--no-progress", "data.vocab_size=400", "--arms", "preln", "pld-cooldown",
                 "sd-constant", "--lr", "pld-cooldown=3e-3"]) == 0
    recs = {a: read_metrics(out / a / "metrics.jsonl") for a in ("preln", "pld-cooldown", "sd-constant")}
    assert recs["pld-cooldown"][-1]["theta"] == 1.0  # the cooldown ends at full depth
    thetas = {r["theta"] for r in recs["sd-constant"] if "theta" in r}
    assert len(thetas) == 1 and thetas.pop() < 1  # stochastic depth: one θ from the first step
    cfg = yaml.safe_load((out / "pld-cooldown" / "config.yaml").read_text())
    assert cfg["optim"]["lr"] == 3e-3 and cfg["model"]["arm"] == "pld" and cfg["pld"]["schedule"] == "cooldown"
    assert yaml.safe_load((out / "sd-constant" / "config.yaml").read_text())["optim"]["lr"] == 2e-3  # its default
    res = json.loads((out / "results.json").read_text())
    assert list(res["analysis"]["variants"]) == ["sd-constant"] and res["analysis"]["verdict"]["arm"] == "pld-cooldown"
    meta = [json.loads(p.read_text()) for p in Path(os.environ["PLDROP_CACHE"]).glob("tokens/*/meta.json")]
    for arm, rs in recs.items():  # epochs recomputed: samples seen / packed training sequences of the data
        n = json.loads((out / arm / "pldrop.json").read_text())["train_seqs"]
        assert n in {m["splits"]["train"]["n_seqs"] for m in meta}
        assert res["analysis"]["arms"][arm]["epochs"] == pytest.approx(rs[-1]["samples"] / n)
    report = (out / "report.md").read_text()
    assert "| epochs |" in report and "Pre-LN + SD (constant θ) — " in report

